"""The ground every module stands on: the one-line user error, the log line, and checks of values.
It imports nothing of this project (utils/cli.py, the flags, sits on top of it)."""
import argparse
import math
import numbers
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
# Every seed, given or stored: what torch.manual_seed, numpy's SeedSequence and a signed 64-bit integer
# all hold exactly, so no seed is silently folded onto another (2**70 % 2**64 is seed 0).
MAX_SEED = 2 ** 63 - 1


def log(line, to="stdout"):
    """The one progress printer: a line on stdout (to="stderr": stderr), above any live tqdm bar,
    flushed at once so that a piped or logged run shows it."""
    from tqdm import tqdm
    stream = getattr(sys, to)
    tqdm.write(str(line), file=stream)
    stream.flush()


class UserError(Exception):
    """A mistake the user can fix; reported as one line, exit 2."""


# What Ctrl-C prints in a script that resumes (run_main's `interrupted`).
RESUMES_EPOCH = ("interrupted: run the same command again to resume from the last finished epoch "
                 "(finished results are kept)")
RESUMES_ITERATION = ("interrupted: run the same command again to resume at the first unfinished search "
                     "iteration, which starts over (finished iterations are kept)")


def run_main(main, interrupted="interrupted"):
    """Run a script's main(); a UserError becomes `error: ...` on stderr and exit status 2, Ctrl-C the line
    `interrupted` (what the same command does next, in scripts that resume) and exit status 130."""
    try:
        main()
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
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


def seed_value(text):
    """argparse type of every --seed: a whole number in 0..MAX_SEED."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is a whole number from 0 to 2**63-1, got {value}")
    return value


def check_seed(value, where):
    """A seed read back from a file: an integer in 0..MAX_SEED, else a UserError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{where}: the stored seed {value!r} is not a whole number from 0 to 2**63-1")
    return int(value)


def check_sgd(lr, momentum, weight_decay):
    """SGD numbers every training script and search shares: a positive learning rate, momentum in
    [0, 1) (at 1 and above the velocity never decays and the descent diverges), weight decay >= 0."""
    check_positive("--lr", lr)
    if not (math.isfinite(momentum) and 0 <= momentum < 1):
        raise UserError(f"--momentum must be at least 0 and below 1, got {momentum:g}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise UserError(f"--weight_decay must be a finite number of at least 0, got {weight_decay:g}")


def default_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_positive(flag, value):
    """A finite number above 0 (NaN and inf pass a plain `value <= 0` test)."""
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} must be positive and finite, got {value:g}")
    return value


def check_at_least_one(pairs):
    """Each (flag, count) of `pairs` at least 1, or the UserError that names the first that is not."""
    for flag, value in pairs:
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")


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


def is_plain_name(name):
    """A file name without a folder: not empty, not . or .., no separator, no NUL."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name and "\0" not in name


def check_run_name(name, flag="--save"):
    """A run name is the stem of output files inside the output folders: a plain file name, so no
    output can land outside them."""
    if not is_plain_name(name):
        raise UserError(f"{flag} is a run name, a plain file name, not a path: {name!r} (the folders "
                        "are --plots_dir, --models_dir, --record_dir)")
    return name


def resolve_device(name):
    """--device: cpu, or cuda / cuda:i with i below the number of CUDA devices torch sees. Other torch
    device types (mps, meta, xla, ...) are refused: this project's CUDA paths and its CPU fallback are
    the two it runs and tests."""
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as err:
        raise UserError(f"--device {name!r} is not a torch device ({str(err).splitlines()[0]}); use cpu or "
                        f"cuda[:i]") from None
    if device.type == "cpu" and device.index in (None, 0):
        return torch.device("cpu")
    if device.type != "cuda":
        raise UserError(f"--device {name!r}: this project runs on cpu or cuda[:i] only")
    if not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch sees no CUDA device")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"--device {name}: torch sees {count} CUDA device{'s' if count != 1 else ''} "
                        f"(cuda:0..cuda:{count - 1})")
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
