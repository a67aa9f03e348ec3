"""What every script shares: one-line errors, the common flags, the device, output folders."""
import argparse
import math
import os
import sys
import tempfile

# The widest layer any script builds. A 3x3 convolution between two layers of 2**16 units holds
# 3.9e10 weights, 155 GB in fp32: more than one H200 (141 GB) holds before gradients and momentum.
# The paper's widest layer is 2560 (MobileNetV2's 1280 at ratio 2).
MAX_WIDTH = 2 ** 16
CIFAR_LIKE = ("CIFAR10", "CIFAR100", "FashionMNIST", "synthetic")


def log(line, to="stdout"):
    """The one progress printer: a line on stdout (to="stderr": stderr), above any live tqdm bar,
    flushed at once so that a piped or logged run shows it."""
    from tqdm import tqdm
    stream = getattr(sys, to)
    tqdm.write(str(line), file=stream)
    stream.flush()


class UserError(Exception):
    """A mistake the user can fix; reported as one line, exit 2."""


def run_main(main):
    """Run a script's main(); a UserError becomes `error: ...` on stderr and exit status 2."""
    try:
        main()
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `script | head` closed the pipe: stop quietly, as other shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


OUTPUT_DIRS = {"record_dir": "prune_record", "plots_dir": "saved_plots", "models_dir": "saved_models",
               "figs_dir": "savefigs"}
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


def positive_int(text):
    """argparse type: a whole number of at least 1 (counts of epochs, images, minibatches)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_output_dirs(parser, used=tuple(OUTPUT_DIRS)):
    """--out_dir and the four output folders; those the script never touches are accepted but hidden."""
    parser.add_argument("--out_dir", default=None,
                        help="one folder for every output: the folders below go under it (default: the "
                             "current folder); a folder flag given separately still wins")
    for key, name in OUTPUT_DIRS.items():
        help_text = f"{OUTPUT_HELP[key]} (default: {name}, or OUT_DIR/{name})" if key in used else argparse.SUPPRESS
        parser.add_argument("--" + key, default=None, help=help_text)
    return parser


def default_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_args(parser, outputs=tuple(OUTPUT_DIRS)):
    """The flags every script takes: data, device, seed and the output folders (`outputs`: those it uses)."""
    parser.add_argument("--data_dir", default="./data", help="where the data sets live")
    parser.add_argument("--download", choices=("auto", "never"), default="auto",
                        help="fetch a missing CIFAR/FashionMNIST when the network allows")
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--seed", type=int, default=None,
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


def check_positive(flag, value):
    """A finite number above 0 (NaN and inf pass a plain `value <= 0` test)."""
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} must be positive and finite, got {value:g}")
    return value


def check_ratios(ratios, flag="--ratios"):
    """Width ratios: finite and positive. Every script that takes --ratios calls this once."""
    for ratio in ratios:
        check_positive(flag, ratio)
    return ratios


def check_widths(widths, what):
    """Refuse a configuration wider than MAX_WIDTH before anything is allocated or created."""
    widest = max(widths)
    if widest > MAX_WIDTH:
        raise UserError(f"{what}: a layer of {widest:,} units, more than the {MAX_WIDTH:,} this project "
                        f"builds (its weights would not fit in memory); use a smaller ratio")
    return widths


def check_run_name(name, flag="--save"):
    """A run name is the stem of output files inside the output folders: a plain file name, so no
    output can land outside them."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise UserError(f"{flag} is a run name, a plain file name, not a path: {name!r} (the folders "
                        "are --plots_dir, --models_dir, --record_dir)")
    return name


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


def resolve_device(name):
    import torch
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch sees no CUDA device")
    return device


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


def writable_dir(path, create=True):
    """Create `path` if needed and prove we can write there, before any work starts. With create=False
    nothing is created: the folder, or its nearest existing parent, must be a writable folder."""
    if not create:
        parent = os.path.abspath(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to {path}: {parent} is not a writable folder")
        return path
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {path}: {err.strerror or err}") from None
    return path
