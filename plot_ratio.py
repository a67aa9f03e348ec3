"""The paper's comparison tables and accuracy figures from result pickles (Table 1, Supp. Tables 2, 5, 6).

    python plot_ratio.py --model vgg --dataset CIFAR10 --ratios 0.25 0.75 2
    python plot_ratio.py --model mobilenetv2 --dataset tinyimagenet --json --no_latency

Per method and ratio: the mean ± population std over seeds of the best test accuracy over epochs (the
paper's statistic), the final-epoch mean, the number of seeds found, the trainable parameters of the
built network, its multiply-accumulates per image (MACs, conv and linear layers) and its latency
(batch 100, 20 warm-up + 80 timed passes on --device, as the authors measured it here: the network
rebuilt from its widths, contiguous NCHW, no cuDNN autotuning, VGG11 with its gates; kept under
<plots_dir>/latency_cache/ and reused on the same machine and settings; --fast_latency: the layout
training uses, labelled so; --no_latency: none measured, a `latency_ms` stored in the pickles is shown).
Result files: <plots_dir>/<model>/<name>_<seed>_<int(ratio*100)>.pk with the authors' names by default.
A method with no file at all is left out with a note on stderr; a ratio or seed with no file is
reported as missing, never filled in. ConvCut (resnet18, mobilenetv2) and
Li et al. (ratio 0.75) appear whenever their files exist.
Figures: <figs_dir>/param_acc_<model>_<dataset>.{png,pdf}, macs_acc_... beside it, and latency_acc_...
when latency is known; --x draws just one of them (--x macs: accuracy against MACs).

Beyond the paper: --macs_record NAME adds "NeuralScale, MACs budget", the widths of a search run with
--budget macs (results --macs_name, iteration --late_idx). Each method's rows are sorted by the resource
it was searched for: MACs for that one, parameters for the others. --budget macs or latency: every
method at equal MACs or equal predicted latency (the swipes' widths with the same --budget, the
NeuralScale record fitted on it), the latency model's prediction beside the measured latency;
--round_to N as the swipes had it. --latency_batch, --precision and --latency_clock set how latency is
measured (and predicted); the defaults are the paper's batch 100 in fp32 on the wall clock.
"""
import functools

from model import ModelChoices, get_spec
from utils import base, io, report, scaling
from utils.base import UserError, run_main
from utils.cli import (add_budget_arg, add_grouping_arg, add_round_to_arg, check_pair, latency_cost, latency_flags,
                       make_parser)
from utils.data import IMAGE_SIZE, NUM_CLASSES

NAME_FLAGS = {"uniform": "uniform_name", "morphnet": "morph_name", "neuralscale_it1": "early_name",
              "neuralscale_it15": "late_name", "li_magnitude": "li_name", "convcut": "convcut_name",
              "neuralscale_macs": "macs_name"}


def parse_args(argv=None):
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg", choices=ModelChoices(), help="network (torchvision:NAME: any torchvision CNN, docs/generic.md)")
    p.add_argument("--dataset", default="CIFAR100", choices=sorted(NUM_CLASSES),
                   help="data set (default: CIFAR100, as the authors' plot script; the other scripts take "
                        "CIFAR10)")
    p.add_argument("--methods", nargs="+", choices=report.METHODS, default=list(report.METHODS),
                   help="methods to gather (each is left out anyway when it has no result file)")
    p.add_argument("--prune_fname", help="the NeuralScale search record, a name under --record_dir or a "
                                         ".pk path (default: the record behind the authors' plot)")
    p.add_argument("--morph_record", help="take the MorphNet widths from the last row of this --morph "
                                          "search (<record_dir>/NAME_0.csv or a .csv path) instead of "
                                          "ratio_swipe.PRUNED_FILTERS")
    p.add_argument("--early_idx", type=int, default=report.IT1_IDX,
                   help="descent_idx of the 'NeuralScale (Iteration = 1)' rows")
    p.add_argument("--late_idx", type=int, default=report.IT15_IDX,
                   help="descent_idx of the 'NeuralScale (Iteration = 15)' rows (a shorter search: its "
                        "last iteration; the label then says which); the --json key stays neuralscale_it15")
    p.add_argument("--macs_record", help="a search record fitted with --budget macs (name under --record_dir "
                                         "or .pk path): adds the 'NeuralScale, MACs budget' rows")
    p.add_argument("--x", choices=("params", "macs", "latency_ms"), default=None,
                   help="draw only the accuracy figure against this (default: every one available)")
    for method, flag in NAME_FLAGS.items():
        p.add_argument(f"--{flag}", help=f"result-file prefix of {report.METHOD_LABELS[method]} "
                                         "(default: the authors' name)")
    add_budget_arg(p, precision=True)
    add_round_to_arg(p)
    add_grouping_arg(p)
    report.add_output_args(p)
    return p.parse_args(argv)


log = functools.partial(base.log, to="stderr")  # notes go to stderr: stdout holds the table


def morph_pruned(args):
    """The 50 %-pruned widths MorphNet rescales, or None (with a note) when there are none."""
    from ratio_swipe import PRUNED_FILTERS
    if not args.morph_record and (args.model, args.dataset) not in PRUNED_FILTERS:
        log(f"note: {report.METHOD_LABELS['morphnet']} left out: no pruned widths for {args.model} on "
            f"{args.dataset} in ratio_swipe.PRUNED_FILTERS (give --morph_record)")
        return None
    return io.morph_widths(args.morph_record, args.record_dir, args.model, args.dataset, PRUNED_FILTERS,
                           len(get_spec(args.model, args.grouping).DEFAULT_WIDTHS))[0]


def build_methods(args, cost=None):
    """The Method list in table order, each with its result-file name and width rule (under --budget,
    `cost` the latency model of a latency budget)."""
    names = report.default_names(args.model, args.dataset)
    names.update({m: getattr(args, flag) for m, flag in NAME_FLAGS.items() if getattr(args, flag)})
    label = report.METHOD_LABELS
    rule = {"budget": args.budget, "cost": cost, "round_to": args.round_to}
    uniform = report.uniform_widths(args.model, args.dataset, args.grouping, **rule)
    wanted = set(args.methods)
    if args.model == "vgg":
        wanted.discard("convcut")  # VGG has no shortcuts
    methods = []
    for key in report.METHODS:
        if key not in wanted:
            continue
        if key == "uniform":
            methods.append(report.Method(key, label[key], names[key], uniform))
        elif key == "li_magnitude":
            methods.append(report.Method(
                key, label[key], names[key], lambda r: uniform(report.LI_RATIO),
                ratios=(report.LI_RATIO,), trained_widths=False,
                note="* Li et al.: magnitude pruning of a pre-trained network, then fine-tuning (not "
                     "trained from scratch). Its params, MACs and latency are the uniform 0.75 network's, as "
                     "the authors reported them (the pruned network itself is a ratio-1 network whose "
                     "pruned gates are zero)."))
        elif key == "morphnet":
            pruned = morph_pruned(args)
            if pruned is not None:
                methods.append(report.Method(key, label[key], names[key],
                                             report.morph_widths(args.model, args.dataset, pruned, args.grouping,
                                                                 **rule),
                                             budget=args.budget))
        elif key == "convcut":
            methods.append(report.Method(key, label[key], names[key], uniform, convcut=True))
        elif key == "neuralscale_macs":
            if args.macs_record:  # only on request: no search of the paper's was run for MACs
                methods += neuralscale_method(args, key, names[key], args.macs_record, args.late_idx,
                                              f"{label[key]} (Iteration = {args.late_idx + 1})",
                                              {**rule, "budget": "macs", "cost": None})
        else:
            idx = args.early_idx if key == "neuralscale_it1" else args.late_idx
            methods += neuralscale_method(args, key, names[key], args.prune_fname or
                                          report.default_record(args.model, args.dataset), idx,
                                          f"NeuralScale (Iteration = {idx + 1})", rule)
    return methods


def neuralscale_method(args, key, name, record_name, idx, title, rule):
    """[the NeuralScale Method of iteration `idx` of a search record], or [] (with a note) without one."""
    label, budget = report.METHOD_LABELS[key], rule["budget"]
    record = io.resolve_record(args.record_dir, record_name)
    if not report.try_record(record, label, log):
        return []
    # A parameter run reads any record, as the authors' do; a MACs or latency run only one fitted on it.
    fits = io.load_fits(record, len(get_spec(args.model, args.grouping).DEFAULT_WIDTHS),
                        budget=None if budget == "params" else budget, grouping=args.grouping)
    if idx >= len(fits):
        log(f"note: {label} left out: {record} holds iterations 0..{len(fits) - 1}, not descent_idx {idx}")
        return []
    widths = report.neuralscale_widths(args.model, args.dataset, record, idx, grouping=args.grouping, **rule)
    return [report.Method(key, title, name, widths, budget=budget)]


def main(argv=None):
    args = parse_args(argv)
    check_pair(args.model, args.dataset, tuple(NUM_CLASSES), grouping=args.grouping)
    ratios = report.checked_ratios(args, args.dataset)
    if min(args.early_idx, args.late_idx) < 0:
        raise UserError("--early_idx and --late_idx count iterations from 0")
    cost = latency_cost(args.budget, args.model, NUM_CLASSES[args.dataset], IMAGE_SIZE[args.dataset], log=log,
                        **latency_flags(args))
    protocol = {"batch": args.latency_batch, "precision": args.precision, "clock": args.latency_clock}
    if not args.no_latency:
        from utils.latency_model import check_clock
        check_clock(args.latency_clock, args.device)
    equal = "" if args.budget == "params" else f", equal {scaling.RESOURCE_WORDS[args.budget]}"
    report.emit(args, build_methods(args, cost), model=args.model, dataset=args.dataset, ratios=ratios,
                heading=report.title(args.model, args.dataset) + equal, log=log, only=args.x,
                kind="acc" if args.budget == "params" else f"acc_equal_{args.budget}", protocol=protocol, cost=cost,
                grouping=args.grouping)


if __name__ == "__main__":
    run_main(main)
