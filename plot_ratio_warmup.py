"""The pre-training-epochs study (Supplementary 6.3, Tables 3-4): uniform scaling against NeuralScale
searched after P epochs of pre-training, P in {0, 2, 5, 10, 30, 60}.

    python plot_ratio_warmup.py --model vgg --dataset CIFAR10 --ratios 0.25 0.75 2
    python plot_ratio_warmup.py --model mobilenetv2 --dataset CIFAR100 --json --no_latency

For each P the configurations come from the search record <model>_<P>_eff_<tag> at --descent_idx
(default 14, "Iteration = 15") and the accuracies from <model>_<P>_eff_<tag>_<seed>_<ratio>.pk, except
P = 10, which is the main study's run <model>_10_eff_<tag>_late (--late_pretrain). Statistics, params,
latency and missing-file handling are plot_ratio.py's.

Faithfulness note: the authors' plot_ratio_finetune.py used descent_idx 13 for MobileNetV2 at P = 0 (and
printed 13 but built 14 at P = 60). Index 14 for every P is what reproduces the paper's Table 4
parameter counts (index 13 gives 1.41M instead of 1.40M at P = 0, ratio 0.75, and 9.26M instead of
9.27M at P = 60, ratio 2), so 14 is the default for every P; --descent_idx changes it for all.
Figures: <figs_dir>/param_pretrain_<model>_<dataset>.{png,pdf} and latency_pretrain_... .
"""
import functools

from model import MODELS
from utils import base, io, report
from utils.base import UserError, run_main
from utils.cli import check_pair, make_parser
from utils.data import NUM_CLASSES

PRETRAIN_EPOCHS = (0, 2, 5, 10, 30, 60)
DEFAULT_DATASET = {"vgg": "CIFAR10", "mobilenetv2": "CIFAR100", "resnet18": "CIFAR100"}  # the authors'


def parse_args(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg", choices=tuple(MODELS), help="network")
    p.add_argument("--dataset", choices=sorted(NUM_CLASSES),
                   help="data set (default: CIFAR10 for vgg, CIFAR100 otherwise, as the authors' study)")
    p.add_argument("--pretrain", type=int, nargs="+", default=list(PRETRAIN_EPOCHS),
                   help="pre-training epochs P to compare")
    p.add_argument("--descent_idx", type=int, default=report.IT15_IDX,
                   help="search iteration whose fit gives the configurations (14 = Iteration 15)")
    p.add_argument("--series_format", default="{model}_{P}_eff_{tag}",
                   help="record and result-file name of each P ({model}, {P}, {tag} = c10/c100/...)")
    p.add_argument("--late_pretrain", type=int, nargs="*", default=[10],
                   help="P values whose results are the main study's <series>_late files")
    p.add_argument("--uniform_name", help="result-file prefix of the uniform baseline "
                                          "(default: <model>_uni_<tag>)")
    report.add_output_args(p)
    return p.parse_args(argv)


log = functools.partial(base.log, to="stderr")  # notes go to stderr: stdout holds the table


def build_methods(args, dataset):
    tag = report.DATASET_TAGS[dataset]
    names = report.default_names(args.model, dataset)
    methods = [report.Method("uniform", report.METHOD_LABELS["uniform"],
                             args.uniform_name or names["uniform"],
                             report.uniform_widths(args.model, dataset))]
    for P in args.pretrain:
        try:
            series = args.series_format.format(model=args.model, P=P, tag=tag)
        except (KeyError, IndexError, ValueError) as err:
            raise UserError(f"--series_format {args.series_format!r}: {err}") from None
        label = f"NeuralScale (P = {P})"
        record = io.resolve_record(args.record_dir, series)
        if not report.try_record(record, label, log):
            continue
        fits = io.load_fits(record, len(MODELS[args.model].DEFAULT_WIDTHS))
        io.select_fit(fits, args.descent_idx, record)  # --descent_idx past the record: one-line error
        name = f"{series}_late" if P in args.late_pretrain else series
        methods.append(report.Method(f"neuralscale_p{P}", label, name,
                                     report.neuralscale_widths(args.model, dataset, record,
                                                               args.descent_idx)))
    return methods


def main(argv=None):
    args = parse_args(argv)
    dataset = args.dataset or DEFAULT_DATASET[args.model]
    check_pair(args.model, dataset, tuple(NUM_CLASSES))
    ratios = report.checked_ratios(args, dataset)
    if any(p < 0 for p in args.pretrain):
        raise UserError("--pretrain must be non-negative")
    note = (f"NeuralScale configurations: descent_idx {args.descent_idx} of each P's search record "
            f"(Iteration = {args.descent_idx + 1}).")
    report.emit(args, build_methods(args, dataset), model=args.model, dataset=dataset, ratios=ratios,
                heading=f"{report.title(args.model, dataset)}: pre-training epochs P", log=log,
                extra_notes=[note], kind="pretrain")


if __name__ == "__main__":
    run_main(main)
