"""The ground every module stands on: the one-line user error, the log line, and checks of values.
It imports nothing of this project (utils/cli.py, the flags, sits on top of it)."""
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
# The output folders (flag: default name), under --out_dir when it is given (utils/cli.py).
OUTPUT_DIRS = {"record_dir": "prune_record", "plots_dir": "saved_plots", "models_dir": "saved_models",
               "figs_dir": "savefigs"}


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


def positive_int(text):
    """argparse type: a whole number of at least 1 (counts of epochs, images, minibatches)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def default_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


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


def resolve_device(name):
    import torch
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch sees no CUDA device")
    return device


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
