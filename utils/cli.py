"""What every script shares: one-line errors, the common flags, the device, output folders."""
import argparse
import math
import os
import sys
import tempfile

MODEL_NAMES = ("vgg", "resnet18", "mobilenetv2")
# The widest layer any script builds. A 3x3 convolution between two layers of 2**16 units holds
# 3.9e10 weights, 155 GB in fp32: more than one H200 (141 GB) holds before gradients and momentum.
# The paper's widest layer is 2560 (MobileNetV2's 1280 at ratio 2).
MAX_WIDTH = 2 ** 16
CIFAR_LIKE = ("CIFAR10", "CIFAR100", "FashionMNIST", "synthetic")


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults; leaves out "(default: None)" where the help says what None means."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def make_parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)


def default_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_args(parser):
    """The flags every script takes, whether or not it needs each one: data, device, seed, output folders."""
    parser.add_argument("--data_dir", default="./data", help="where the data sets live")
    parser.add_argument("--download", choices=("auto", "never"), default="auto",
                        help="fetch a missing CIFAR/FashionMNIST when the network allows")
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--seed", type=int, default=None,
                        help="seeds python, numpy and torch (default: a fresh seed, printed and stored "
                             "with the results; a resumed run keeps its stored seed)")
    parser.add_argument("--record_dir", default="prune_record", help="prune records (CSV, .pk)")
    parser.add_argument("--plots_dir", default="saved_plots", help="training curves (.pk)")
    parser.add_argument("--models_dir", default="saved_models", help="checkpoints")
    parser.add_argument("--figs_dir", default="savefigs", help="figures")
    return parser


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
    if model not in MODEL_NAMES:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
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
