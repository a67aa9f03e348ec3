"""The flags every script shares: parser, common and training flags, output folders, budgets.
Values are checked by utils/base.py, the ground layer, which everything else imports."""
import argparse
import os
import sys

from utils.base import OUTPUT_DIRS, UserError, check_run_name, default_device, positive_int, resolve_device, seed_value

OUTPUT_HELP = {"record_dir": "prune records (CSV, .pk)", "plots_dir": "result pickles and training curves",
               "models_dir": "checkpoints", "figs_dir": "figures"}

# --help shows the flags in these groups, in this order. A flag sits in the same group in every script,
# found by its destination; a flag of no group (the benchmarks' own) stays under "options".
GROUPS = {
    "data": ("dataset", "data_dir", "download", "subset", "test_subset", "loader", "test_order", "same_norm",
             "val_per_class"),
    "model and method": ("model", "grouping", "uniform", "morph", "convcut", "method", "prune_fname", "descent_idx", "resume",
                         "bn_init", "morph_record", "macs_record", "early_idx", "late_idx", "methods", "pretrain",
                         "late_pretrain", "series_format", "seeds", "uniform_name", "morph_name", "early_name",
                         "late_name", "li_name", "convcut_name", "macs_name"),
    "training recipe": ("epochs", "batch_size", "test_batch_size", "lr", "momentum", "weight_decay", "warmup",
                        "iterations", "prune_every", "prune_per_step", "prune_fraction", "precision",
                        "scale_schedule", "plateau", "plateau_max"),
    "budget": ("budget", "ratios", "target_params", "target_macs", "target_latency", "latency_batch",
               "latency_clock", "round_to", "search_ratio", "ratio", "exact"),
    "outputs": ("save", "out_dir", "record_dir", "plots_dir", "models_dir", "figs_dir", "keep_checkpoints", "json",
                "no_figs", "plot", "x"),
    "run control": ("device", "seed", "overwrite", "deterministic", "latency", "no_latency", "fast_latency"),
}
GROUP_OF = {dest: title for title, dests in GROUPS.items() for dest in dests}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option says its default: the value, or in words where the help does not already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "(required" in text or action.default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        if action.required:
            return f"{text} (required)".strip()
        if action.default is False:
            return f"{text} (default: off)".strip()
        if action.default is None:
            return f"{text} (default: not set)".strip()
        if isinstance(action.default, (list, tuple)):  # as it would be typed: 0 1 2, not [0, 1, 2]
            return f"{text} (default: {' '.join(map(str, action.default)) or 'none'})".strip()
        return super()._get_help_string(action)


def spellings(names):
    """Each --long_flag also answers to --long-flag and the other way round (the authors mixed both)."""
    out = []
    for name in names:
        out.append(name)
        if name.startswith("--"):
            out += ["--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")]
    return list(dict.fromkeys(out))


def destination(names, kwargs):
    """The attribute argparse stores a flag under: dest=, or the first long name with - as _."""
    long = [n for n in names if n.startswith("--")] or list(names)
    return kwargs.get("dest") or long[0].lstrip("-").replace("-", "_")


class Parser(argparse.ArgumentParser):
    """The scripts' parser: both flag spellings, one-line errors, --out_dir under the output folders, the
    flags in GROUPS, and flags a script accepts but ignores: add_argument(..., ignored=True) hides them
    from --help and drops them from the parsed namespace, so no code can read them."""

    def add_argument(self, *names, ignored=False, **kwargs):
        if not names[0].startswith("-"):
            return super().add_argument(*names, **kwargs)
        if ignored:
            kwargs["help"] = argparse.SUPPRESS
        elif kwargs.get("help") is None:  # argparse prints no default without a help
            kwargs["help"] = names[0].lstrip("-").replace("_", " ").replace("-", " ")
        groups = getattr(self, "groups", None)  # None while ArgumentParser.__init__ adds --help
        if groups is None:
            groups = self.groups = {title: self.add_argument_group(title) for title in GROUPS}
            self.ignored = set()
        dest = destination(names, kwargs)
        container = groups[GROUP_OF[dest]] if dest in GROUP_OF else super()
        action = container.add_argument(*spellings(names), **kwargs)
        if ignored:
            self.ignored.add(action.dest)
        return action

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        out_dir = getattr(namespace, "out_dir", None)
        for key, name in OUTPUT_DIRS.items():
            if getattr(namespace, key, "") is None:  # not given: under --out_dir, or the authors' folder
                setattr(namespace, key, os.path.join(out_dir, name) if out_dir else name)
        for dest in getattr(self, "ignored", ()):
            if hasattr(namespace, dest):
                delattr(namespace, dest)
        return namespace, extra


def make_parser(description):
    return Parser(description=description, formatter_class=_HelpFormatter)


def add_output_dirs(parser, used=tuple(OUTPUT_DIRS)):
    """--out_dir and the four output folders; those the script never touches are accepted but ignored."""
    parser.add_argument("--out_dir", default=None,
                        help="one folder for every output: the folders below go under it (default: the "
                             "current folder); a folder flag given separately still wins")
    for key, name in OUTPUT_DIRS.items():
        parser.add_argument("--" + key, default=None, help=f"{OUTPUT_HELP[key]} (default: {name}, or OUT_DIR/{name})",
                            ignored=key not in used)
    return parser


COMMON = ("data_dir", "download", "device", "seed")


def add_common_args(parser, outputs=tuple(OUTPUT_DIRS), inputs=COMMON):
    """The flags every script takes: data, device, seed and the output folders. `inputs` and `outputs`
    name those the script uses; it accepts the others (a shell loop may pass them to every script) and
    ignores them."""
    parser.add_argument("--data_dir", default="./data", help="where the data sets live",
                        ignored="data_dir" not in inputs)
    parser.add_argument("--download", choices=("auto", "never"), default="auto",
                        help="fetch a missing CIFAR/FashionMNIST when the network allows",
                        ignored="download" not in inputs)
    parser.add_argument("--device", default=default_device(), help="torch device", ignored="device" not in inputs)
    parser.add_argument("--seed", type=seed_value, default=None, ignored="seed" not in inputs,
                        help="seeds python, numpy and torch (default: a fresh seed, printed and stored "
                             "with the results; a resumed run keeps its stored seed)")
    return add_output_dirs(parser, outputs)


def add_training_args(parser, recipe, *, datasets, dataset, model, models=None, by_dataset=False,
                      hidden=(), outputs=tuple(OUTPUT_DIRS), help=None, generic=False):
    """The flags of every training script (searches, swipes, train_norm, fine_tune), defaults from
    utils.train.RECIPES[recipe]. by_dataset: --epochs defaults to None, the script picks the recipe's
    epochs by data set (its help says so). `hidden`: flags accepted for the authors' command lines but
    ignored here (Parser's ignored); `help`: {flag: text} for what differs per script; generic: --model
    also takes torchvision:NAME (the searches and swipes, model/generic.py)."""
    from model import MODELS, ModelChoices
    from utils.data import LOADERS
    from utils.train import RECIPES
    values, texts = RECIPES[recipe], {**TRAINING_HELP, **(help or {})}

    def add(flag, **kwargs):
        parser.add_argument(flag, help=texts[flag], ignored=flag in hidden, **kwargs)

    # VGG is the authors' CIFAR-only network: a script for TinyImageNet alone does not offer it.
    tiny_only = set(datasets) == {"tinyimagenet"}
    exclude = ("vgg",) if tiny_only else ()
    choices = ModelChoices(exclude) if generic else tuple(m for m in MODELS if m not in exclude)
    add("--model", default=model, choices=tuple(models) if models else choices)
    add("--dataset", default=dataset, choices=tuple(datasets))
    add("--save", default=None)
    add("--epochs", type=positive_int, default=None if by_dataset else values["epochs"])
    add("--batch-size", type=positive_int, default=values["batch_size"])
    add("--lr", type=float, default=values["lr"])
    add("--momentum", type=float, default=values["momentum"])
    add("--weight_decay", type=float, default=values["weight_decay"])
    add("--subset", type=positive_int, default=None)
    add("--loader", choices=LOADERS, default="fast")
    add_precision_args(parser)
    add("--same_norm", action="store_true")
    add("--overwrite", action="store_true")
    return add_common_args(parser, outputs)


TRAINING_HELP = {
    "--model": "network (default: %(default)s, the authors' for this script)",
    "--dataset": "data set (default: %(default)s, the authors' for this script)",
    "--save": "run name, the stem of every output file (required; the authors' names, which plot_ratio.py "
              "looks for, are in docs/scripts.md)",
    "--epochs": "training epochs",
    "--batch-size": "training minibatch (images)",
    "--lr": "base learning rate",
    "--momentum": "SGD momentum",
    "--weight_decay": "SGD weight decay",
    "--subset": "train on the first N images only (default: all)",
    "--loader": "fast: data on the device, batch augmentation; torchvision: the authors' PIL pipeline",
    "--same_norm": "normalise the search's data with the training scripts' constants (opt-in correction)",
    "--overwrite": "replace outputs of this --save written under other settings (default: refuse them; "
                   "the same settings are skipped or resumed either way)",
}


def add_budget_arg(parser, default="params", precision=False,
                   default_text="params, or what --target_params/--target_macs/--target_latency names"):
    """--budget and the latency model's settings; precision=True also adds --precision, for a script
    that does not train (the latency table's precision). default None: the script decides, as
    `default_text` says."""
    parser.add_argument("--budget", choices=("params", "macs", "latency"), default=default,
                        help="the resource the search and fit scale to: parameters (the paper), MACs per "
                             "image, or latency predicted on --device (utils/latency_model.py; measured once, "
                             "then cached under RECORD_DIR/latency_tables/); beyond the paper, met by "
                             "bisection within 0.5 %% (2 %% for latency)"
                             + (f" (default: {default_text})" if default is None else ""))
    parser.add_argument("--latency_batch", type=positive_int, default=100,
                        help="images per timed batch of the latency budget and measurement (the paper's 100)")
    parser.add_argument("--latency_clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which other jobs on a shared "
                             "machine do not inflate (the CPU at one thread only, OMP_NUM_THREADS=1)")
    if precision:
        from utils.accel import PRECISIONS
        parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                            help="arithmetic of the timed forward passes (bf16: bfloat16 autocast)")


def add_grouping_arg(parser):
    """--grouping: the channel groups of a torchvision:NAME model (model/generic.py)."""
    from model.generic import GROUPING_HELP, GROUPINGS
    parser.add_argument("--grouping", choices=GROUPINGS, default="traced", help=GROUPING_HELP)


def add_round_to_arg(parser):
    parser.add_argument("--round_to", type=positive_int, default=1,
                        help="every width a multiple of N (8 and 16 suit most hardware), the budget still met "
                             "by a search over rounded configurations; 1 keeps the authors' widths")


def budget_flags(args, default_ratios):
    """utils.scaling.budget_points of the flags: (resource, ratios, targets). args.budget becomes the
    resource (what latency_cost, the results and utils.run.RunSettings.from_args read)."""
    from utils.scaling import budget_points
    args.budget, ratios, targets = budget_points(args.budget, args.ratios, default_ratios,
                                                 target_params=args.target_params, target_macs=args.target_macs,
                                                 target_latency=args.target_latency)
    return args.budget, ratios, targets


def latency_cost(budget, model, num_classes, input_size, *, record_dir, device, precision, batch, clock,
                 convcut=False, log=None):
    """budget "latency": widths -> the latency predicted on `device` (utils.latency_model.predictor: images
    per timed `batch`, `precision`, `clock`; the table loaded, or measured once and cached under
    <record_dir>/latency_tables/, beside the search records); None for the other budgets."""
    if budget != "latency":
        return None
    from model import is_generic
    if is_generic(model):
        from model.generic import LATENCY_REFUSAL
        raise UserError(LATENCY_REFUSAL)
    from utils.latency_model import predictor, table_dir
    return predictor(cache_dir=table_dir(record_dir), model=model, num_classes=num_classes,
                     input_size=input_size, device=str(resolve_device(device)), precision=precision,
                     batch=batch, clock=clock, convcut=convcut, **({} if log is None else {"log": log}))


def latency_flags(args):
    """latency_cost's keywords from a script's parsed flags: --record_dir, --device, --precision,
    --latency_batch and --latency_clock."""
    return {"record_dir": args.record_dir, "device": args.device, "precision": args.precision,
            "batch": args.latency_batch, "clock": args.latency_clock}


def add_precision_args(parser):
    """--precision, --bn_init and --deterministic: shared by every training script (swipes, train_norm,
    fine_tune, searches)."""
    from model.bn_init import BN_INITS
    from utils.accel import PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32: the authors' arithmetic (TF32 off on CUDA); tf32: TF32 matmul and cuDNN "
                             "on CUDA; bf16: bfloat16 autocast, on the CPU too (BatchNorm and the loss stay "
                             "fp32)")
    parser.add_argument("--bn_init", choices=BN_INITS, default="uniform",
                        help="BatchNorm weight init of resnet18 and mobilenetv2: uniform U(0, 1), what the "
                             "authors' PyTorch 1.0.1 did; ones: PyTorch's since 1.2. VGG always 0.5 (authors')")
    parser.add_argument("--deterministic", action="store_true",
                        help="repeat bit for bit on CUDA: deterministic cuDNN and torch algorithms, no cuDNN "
                             "autotuning (slower; stored in the run's settings). The CPU repeats without it")
    return parser


def require_save(save, example):
    """--save is required. A default name would be one no table looks for: the authors' names carry
    what no flag holds (which of five repetitions a run is: _0 .. _4), so the user gives the name, and
    the error shows the authors' for this run (`example`)."""
    if save is None:
        raise UserError(f"--save NAME is required: the run's name, the stem of its files (e.g. --save {example})")
    return check_run_name(save)


def authors_name(stem, model, dataset, repetition=True):
    """An example run name for require_save: `stem` formatted with {model} and the data set's {tag}, as
    the authors named their runs; `repetition`: one of five repetitions, suffixed _0 .. _4."""
    from utils.report import DATASET_TAGS
    name = stem.format(model=model, tag=DATASET_TAGS[dataset])
    return f"{name}_0, the authors' name for repetition 0 of 0..4" if repetition else name


def check_pair(model, dataset, datasets, budget=None, grouping="traced"):
    """Refuse model/dataset pairs the scripts cannot run (a torchvision model is traced here, and refused
    when its analysis fails), a latency budget on a torchvision model and a --grouping other than the
    default on a hand-written one."""
    from model import MODELS, check_grouping, get_spec, is_generic
    if model not in MODELS:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODELS)} or torchvision:NAME")
    check_grouping(model, grouping)
    if is_generic(model):
        from model.generic import LATENCY_REFUSAL
        if budget == "latency":
            raise UserError(LATENCY_REFUSAL)
        get_spec(model, grouping)
    if dataset not in datasets:
        raise UserError(f"this script does not take dataset {dataset!r}; choose one of {', '.join(datasets)}")
    if model == "vgg" and dataset == "tinyimagenet":
        raise UserError("vgg is the authors' CIFAR-only VGG11 (one Linear head on a 1x1 map); "
                        "use resnet18 or mobilenetv2 for tinyimagenet")
