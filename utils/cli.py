"""The flags every script shares: parser, common and training flags, output folders, budgets.
Values are checked by utils/base.py, the ground layer, which everything else imports."""
import argparse
import os
import sys

from utils.base import OUTPUT_DIRS, UserError, default_device, positive_int, seed_value

OUTPUT_HELP = {"record_dir": "prune records (CSV, .pk)", "plots_dir": "result pickles and training curves",
               "models_dir": "checkpoints", "figs_dir": "figures"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option says its default: the value, or in words where the help does not already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is False:
            return f"{text} (default: off)".strip()
        if action.default is None:
            return f"{text} (default: not set)".strip()
        return super()._get_help_string(action)


def spellings(names):
    """Each --long_flag also answers to --long-flag and the other way round (the authors mixed both)."""
    out = []
    for name in names:
        out.append(name)
        if name.startswith("--"):
            out += ["--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")]
    return list(dict.fromkeys(out))


class Parser(argparse.ArgumentParser):
    """The scripts' parser: both flag spellings, one-line errors, and --out_dir under the output folders."""

    def add_argument(self, *names, **kwargs):
        if kwargs.get("help") is None and names[0].startswith("-"):  # argparse prints no default without a help
            kwargs["help"] = names[0].lstrip("-").replace("_", " ").replace("-", " ")
        return super().add_argument(*spellings(names), **kwargs)

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        out_dir = getattr(namespace, "out_dir", None)
        for key, name in OUTPUT_DIRS.items():
            if getattr(namespace, key, "") is None:  # not given: under --out_dir, or the authors' folder
                setattr(namespace, key, os.path.join(out_dir, name) if out_dir else name)
        return namespace, extra


def make_parser(description):
    return Parser(description=description, formatter_class=_HelpFormatter)


def add_output_dirs(parser, used=tuple(OUTPUT_DIRS)):
    """--out_dir and the four output folders; those the script never touches are accepted but hidden."""
    parser.add_argument("--out_dir", default=None,
                        help="one folder for every output: the folders below go under it (default: the "
                             "current folder); a folder flag given separately still wins")
    for key, name in OUTPUT_DIRS.items():
        help_text = f"{OUTPUT_HELP[key]} (default: {name}, or OUT_DIR/{name})" if key in used else argparse.SUPPRESS
        parser.add_argument("--" + key, default=None, help=help_text)
    return parser


def add_common_args(parser, outputs=tuple(OUTPUT_DIRS)):
    """The flags every script takes: data, device, seed and the output folders (`outputs`: those it uses)."""
    parser.add_argument("--data_dir", default="./data", help="where the data sets live")
    parser.add_argument("--download", choices=("auto", "never"), default="auto",
                        help="fetch a missing CIFAR/FashionMNIST when the network allows")
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--seed", type=seed_value, default=None,
                        help="seeds python, numpy and torch (default: a fresh seed, printed and stored "
                             "with the results; a resumed run keeps its stored seed)")
    return add_output_dirs(parser, outputs)


def add_training_args(parser, recipe, *, datasets, dataset, model, models=None, by_dataset=False,
                      hidden=(), outputs=tuple(OUTPUT_DIRS), help=None):
    """The flags of every training script (searches, swipes, train_norm, fine_tune), defaults from
    utils.train.RECIPES[recipe]. by_dataset: --epochs defaults to None, the script picks the recipe's
    epochs by data set (its help says so). `hidden`: flags accepted for the authors' command lines but
    ignored here; `help`: {flag: text} for what differs per script."""
    from model import MODELS
    from utils.data import LOADERS
    from utils.train import RECIPES
    values, texts = RECIPES[recipe], {**TRAINING_HELP, **(help or {})}

    def add(flag, **kwargs):
        text = argparse.SUPPRESS if flag in hidden else texts[flag]
        parser.add_argument(flag, help=text, **kwargs)

    # VGG is the authors' CIFAR-only network: a script for TinyImageNet alone does not offer it.
    tiny_only = set(datasets) == {"tinyimagenet"}
    add("--model", default=model, choices=tuple(models or (m for m in MODELS if not (tiny_only and m == "vgg"))))
    add("--dataset", default=dataset, choices=tuple(datasets))
    add("--save", default="model")
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
    "--model": "network; the default is the authors' for this script",
    "--dataset": "data set; the default is the authors' for this script",
    "--save": "run name: the stem of every output file",
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


def add_budget_arg(parser, default="params"):
    parser.add_argument("--budget", choices=("params", "macs"), default=default,
                        help="the resource the search and fit scale to: parameters (the paper) or MACs per "
                             "image (tau search by bisection, within 0.5 %%)")


def add_precision_args(parser):
    """--precision and --bn_init: shared by every training script (swipes, train_norm, fine_tune, searches)."""
    from model.bn_init import BN_INITS
    from utils.accel import PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32: the authors' arithmetic (TF32 off on CUDA); tf32: TF32 matmul and cuDNN "
                             "on CUDA; bf16: bfloat16 autocast, on the CPU too (BatchNorm and the loss stay "
                             "fp32)")
    parser.add_argument("--bn_init", choices=BN_INITS, default="uniform",
                        help="BatchNorm weight init of resnet18 and mobilenetv2: uniform U(0, 1), what the "
                             "authors' PyTorch 1.0.1 did; ones: today's default. VGG always 0.5 (authors')")
    return parser


def check_pair(model, dataset, datasets):
    """Refuse model/dataset pairs the scripts cannot run."""
    from model import MODELS
    if model not in MODELS:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if dataset not in datasets:
        raise UserError(f"this script does not take dataset {dataset!r}; choose one of {', '.join(datasets)}")
    if model == "vgg" and dataset == "tinyimagenet":
        raise UserError("vgg is the authors' CIFAR-only VGG11 (one Linear head on a 1x1 map); "
                        "use resnet18 or mobilenetv2 for tinyimagenet")
