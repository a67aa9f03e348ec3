"""Run this first on a new GPU: five checks of the CUDA path, one line each, in a few minutes.

(a) every model at the given widths (default: the paper's defaults) trains one epoch of synthetic data
    in fp32 and in bf16 with finite losses;
(b) along a bf16 training run, each minibatch's loss in fp32 and in bf16 at the same weights agree;
(c) one Taylor-FO prune step from identical weights and minibatches chooses, in bf16, a set of units
    that overlaps the fp32 one far more than chance allows (the overlap and the bar are printed);
(d) bench/train_throughput.py's speedup over the authors' pipeline per model, short windows;
(e) one architecture-descent iteration of VGG11, extrapolated from timed minibatches as
    bench/train_throughput.py does.
(a)-(c) are pass/fail and the exit status is 1 when any fails; (d) and (e) report figures. "fp32" is
strict fp32 (accel.set_precision turns TF32 off on CUDA). Without a GPU, `--device cpu` with small
settings exercises the same code (see --help).
"""
import argparse
import math
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/gpu_check.py`
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput  # noqa: E402
from model import MODELS, build_model, gates_of, get_spec  # noqa: E402
from utils import accel, train  # noqa: E402
from utils.base import (UserError, check_at_least_one, check_positive, check_widths, default_device, log,  # noqa: E402
                        resolve_device, run_main, seed_value)
from utils.cli import make_parser  # noqa: E402
from utils.data import NUM_CLASSES, SYNTHETIC_SIZES, get_loaders  # noqa: E402
from utils.prune import TaylorFOPruner  # noqa: E402

DATASET = "synthetic"
PRECISIONS = ("fp32", "bf16")
# (b) compares the two precisions at the same weights on the same minibatch, at each of the minibatches
# of a bf16 training run (two separate runs drift apart chaotically within a few SGD steps at these
# learning rates, whatever the precision). A bf16 value carries 8 significant bits (relative rounding
# up to 2^-9 = 0.2 %); independent rounding errors grow like the square root of their number, so the
# logits of a 10-50 layer network move by about a percent of their size, and the loss by that times
# (1 - p), p the probability of the true class: about a hundredth of a nat where the loss starts (ln 10
# = 2.30, small logits), less once p nears 1. A limit of 0.05 nats (2 % of ln 10) on every minibatch
# leaves that margin; a broken path (overflow, a wrong cast, a faulty kernel) gives a non-finite loss or
# a gap of tenths of a nat or more.
LOSS_TOLERANCE = 0.05  # nats; a gap of exactly 0 fails too: autocast did nothing
# (c) The prune step zeroes the prune_per_step units with the smallest mean criterion out of hundreds
# or thousands; bf16 perturbs each criterion by about a percent, which can only swap units whose
# criteria are that close to the threshold. A fixed bar ("more than half") fails healthy hardware by
# chance when the window is short (units near the threshold swap freely). The bar is statistical: the
# noise baseline is a bf16 path that has lost all information, whose set is a random one, and the two
# sets must share more units than two random sets of that size do with probability SIGNIFICANCE
# (hypergeometric tail; 4 of 10 among 344 units, 3 of 10 among 2,752). A set of another size (a zero
# criterion prunes a whole layer) fails too. bench/overlap_sweep.py counts how often healthy runs fail.
SIGNIFICANCE = 1e-4
PRUNE_PER_STEP = 10  # the authors' search setting
# The bar separates a working bf16 path from a broken one; how often a working one misses it depends on
# the window. Over 200 seeds of VGG11 x 0.125 on the CPU (bench/overlap_sweep.py): 2 minibatches of 8
# images failed 12, 3 or 4 of 16 none (lowest overlap 4/10), 6 of 16 none (lowest 5/10). Fewer images
# than this in the window are refused for (c); the default is 20 x 128.
MIN_WINDOW_IMAGES = 64
SPEEDUP_TARGETS = {"vgg": 20, "mobilenetv2": 10, "resnet18": 10}
DESCENT_TARGET_S = 60


def widths_of(model_name, ratio):
    return [int(w) for w in get_spec(model_name).prepare_filters(ratio, num_classes=NUM_CLASSES[DATASET])]


def fresh_model(args, model_name, device, gates=False):
    """The same initial weights on every call (seeded)."""
    train.set_seed(args.seed)
    return train.prepare_model(build_model(model_name, widths_of(model_name, args.ratio),
                                           NUM_CLASSES[DATASET], gates=gates), device)


def synthetic_loader(args, device, images, recipe="train"):
    return get_loaders(DATASET, "unused", recipe=recipe, batch_size=args.batch_size, device=device,
                       subset=images, seed=args.seed, need_test=False)[0]


def train_one_epoch(model, loader, device, precision, lr):
    accel.set_precision(device, precision)
    return train.train_epoch(model, loader, 0, train.make_optimizer(model, lr), device, precision=precision)


class Fp32Shadow:
    """Hands on a loader's batches unchanged, computing first each batch's fp32 training-mode loss at
    the model's current weights: train_epoch asks for a batch only after its previous step, so these
    are the weights its own (bf16) loss on that batch sees. The losses stay on the device."""

    def __init__(self, loader, model):
        self.loader, self.model, self.losses = loader, model, []

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        layout = train.input_format(self.model)
        for x, y in self.loader.epoch(epoch):
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                logits = self.model(x.contiguous(memory_format=layout))
            self.losses.append(F.cross_entropy(logits.float(), y))
            yield x, y


# ---------------------------------------------------------------------------------------------------
# The checks. Each returns (passed or None for a report, the line's text).

def check_a(args, device):
    loader = synthetic_loader(args, device, args.images)
    parts, ok = [], True
    for name in args.models:
        cells = []
        for precision in PRECISIONS:
            model = fresh_model(args, name, device)
            accel.synchronize(device)
            t0 = time.perf_counter()
            stats = train_one_epoch(model, loader, device, precision, args.lr)
            seconds = time.perf_counter() - t0
            ok &= math.isfinite(stats["loss"])
            cells.append(f"{precision} loss {stats['loss']:.3f} ({loader.num_samples / seconds:.0f} img/s)")
            del model
            accel.empty_cache(device)
        parts.append(f"{name} " + ", ".join(cells))
    return ok, (f"one epoch of {loader.num_samples} synthetic images, batch {args.batch_size}, width ratio "
                f"{args.ratio:g}: " + "; ".join(parts))


def check_b(args, device):
    loader = synthetic_loader(args, device, args.minibatches * args.batch_size)
    parts, ok = [], True
    for name in args.models:
        model, bf16_losses = fresh_model(args, name, device), []
        shadow = Fp32Shadow(loader, model)
        accel.set_precision(device, "fp32")  # the shadow's fp32 is strict fp32; bf16 does not read it
        train.train_epoch(model, shadow, 0, train.make_optimizer(model, args.lr), device, precision="bf16",
                          after_step=lambda loss: bf16_losses.append(loss.detach()))
        fp32, bf16 = torch.stack(shadow.losses).cpu().double(), torch.stack(bf16_losses).cpu().double()
        gap = (bf16 - fp32).abs().max().item()
        ok &= bool(torch.isfinite(fp32).all() and torch.isfinite(bf16).all()) and 0 < gap <= LOSS_TOLERANCE
        same = " (identical: bf16 did not run)" if gap == 0 else ""
        parts.append(f"{name} loss {fp32[0]:.3f} -> {fp32[-1]:.3f}, largest gap {gap:.4f}{same}")
    return ok, (f"bf16 training over {len(loader)} minibatches, each minibatch's loss in fp32 and bf16 at "
                f"the same weights (limit {LOSS_TOLERANCE:g} nats): " + "; ".join(parts))


def chosen_units(args, device, name, precision, loader, corrupt=None):
    """Indices of the units one prune step zeroes, after accumulating the criterion over every
    minibatch of `loader` at fixed weights (learning rate 0), from the seeded initial weights.
    corrupt(gate_params), when given, runs before each criterion is read (bench/overlap_sweep.py
    breaks the bf16 path with it)."""
    model = fresh_model(args, name, device, gates=True)
    pruner = TaylorFOPruner(gates_of(model), prune_every=len(loader) - 1, prune_per_step=PRUNE_PER_STEP)
    accel.set_precision(device, precision)

    def after_step(_loss):
        if corrupt is not None:
            corrupt(pruner.params)
        return pruner.step()

    train.train_epoch(model, loader, 0, train.make_optimizer(model, 0.0), device, after_step=after_step,
                      precision=precision)
    if pruner.steps_done != 1:
        raise RuntimeError(f"expected one prune step, got {pruner.steps_done}")
    return set(torch.nonzero(pruner.mask == 0).flatten().tolist()), pruner.total


def chance_tail(total, size, common):
    """P(two sets of `size` units drawn at random from `total` share at least `common`): hypergeometric."""
    return sum(math.comb(size, i) * math.comb(total - size, size - i)
               for i in range(common, size + 1)) / math.comb(total, size)


def needed_overlap(total, size, significance=SIGNIFICANCE):
    """The fewest shared units that random sets of `size` of `total` reach with probability at most
    `significance` (size + 1 when no count is that unlikely: too few units to tell)."""
    return next((k for k in range(size + 1) if chance_tail(total, size, k) <= significance), size + 1)


def overlap_verdict(fp32, bf16, total):
    """(passed, text) of one model in (c): the sets are of one size and share at least needed_overlap."""
    need = needed_overlap(total, len(fp32)) if fp32 else 1
    common = len(fp32 & bf16)
    passed = bool(fp32) and len(bf16) == len(fp32) and common >= need
    sizes = "" if len(bf16) == len(fp32) else f", but bf16 chose {len(bf16)} units"
    return passed, f"{common}/{len(fp32)} of {total} units (need {need}{sizes})"


def check_c(args, device):
    loader = synthetic_loader(args, device, args.minibatches * args.batch_size, recipe="search")
    parts, ok = [], True
    for name in args.models:
        fp32, total = chosen_units(args, device, name, "fp32", loader)
        bf16, _ = chosen_units(args, device, name, "bf16", loader)
        passed, text = overlap_verdict(fp32, bf16, total)
        ok &= passed
        parts.append(f"{name} {text}")
    return ok, (f"Taylor-FO prune step after {len(loader)} minibatches at the same weights, units chosen by "
                f"both fp32 and bf16 (need more than random sets share with probability {SIGNIFICANCE:g}): "
                + "; ".join(parts))


def bench_args(args, model_name):
    """What bench/train_throughput.py's parser would give; quick: extrapolate the descent, never run it."""
    return argparse.Namespace(model=model_name, ratio=args.ratio, batch_size=args.batch_size, seed=args.seed,
                              descent_ratio=args.ratio, descent_batch_size=args.descent_batch_size, quick=True)


def check_d(args, device):
    settings = {"steps": args.steps, "reps": args.reps, "warmup_steps": 2, "load_steps": 0}
    parts = []
    for name in args.models:
        medians = train_throughput.throughput(bench_args(args, name), device, settings)
        ours, authors = medians["ours"], medians["authors'"]
        parts.append(f"{name} {ours / authors:.2f}x (ours {ours:.0f} vs {authors:.0f} img/s; target "
                     f"{SPEEDUP_TARGETS[name]}x on an H100/H200)")
    return None, (f"train_throughput speedup, {args.reps} windows of {args.steps} steps: " + "; ".join(parts))


def check_e(args, device):
    settings = {"descent_steps": args.descent_steps, "descent_reps": 3}
    result = train_throughput.descent(bench_args(args, "vgg"), device, settings)
    ours, authors = result["ours"], result["authors'"]
    return None, (f"VGG11 descent iteration at width ratio {args.ratio:g}, batch {args.descent_batch_size}, "
                  f"EXTRAPOLATED from {args.descent_steps}-minibatch windows: ours {ours:.0f} s, authors' "
                  f"pipeline {authors:.0f} s (target under {DESCENT_TARGET_S} s)")


CHECKS = {"a": check_a, "b": check_b, "c": check_c, "d": check_d, "e": check_e}


def run_check(letter, args, device):
    """Prints one line, `(x) PASS|FAIL|INFO ... [seconds]`; an exception is a FAIL showing its first
    line. Returns False when the check failed."""
    t0 = time.perf_counter()
    try:
        passed, text = CHECKS[letter](args, device)
    except Exception as err:  # a broken CUDA path must not hide the other checks
        if args.verbose:
            traceback.print_exc()
        passed, text = False, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    verdict = "INFO" if passed is None else "PASS" if passed else "FAIL"
    log(f"({letter}) {verdict} {text} [{time.perf_counter() - t0:.0f} s]")
    return passed is not False


def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--checks", default="abcde", help="which checks to run, e.g. abc")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=tuple(MODELS),
                        help="networks for (a)-(d)")
    parser.add_argument("--ratio", type=float, default=1.0, help="uniform width ratio (1 = default widths)")
    parser.add_argument("--images", type=int, default=SYNTHETIC_SIZES["train"],
                        help="synthetic images in (a)'s epoch (50000: the whole CIFAR-sized set)")
    parser.add_argument("--batch-size", type=int, default=train.RECIPES["scratch_cifar"]["batch_size"],
                        help="minibatch of (a)-(d)")
    parser.add_argument("--minibatches", type=int, default=20, help="minibatches compared in (b) and (c)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of (a) and (b)")
    parser.add_argument("--steps", type=int, default=10, help="(d): timed steps per window")
    parser.add_argument("--reps", type=int, default=3, help="(d): timed windows per pipeline")
    parser.add_argument("--descent-steps", type=int, default=5, help="(e): timed minibatches per window")
    parser.add_argument("--descent-batch-size", type=int, default=train.RECIPES["search_cifar"]["batch_size"],
                        help="(e): the authors' search minibatch")
    parser.add_argument("--seed", type=seed_value, default=0, help="initial weights and data order")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    parser.add_argument("--verbose", action="store_true", help="the benchmark's own lines and tracebacks")
    args = parser.parse_args(argv)
    device = check_args(args)
    if not args.verbose:
        train_throughput.log = lambda line: None
    args.device = device
    log(f"gpu_check on {device} ({accel.device_name(device) or 'no GPU'}), torch {torch.__version__}")
    t0 = time.perf_counter()
    failed = [letter for letter in sorted(set(args.checks)) if not run_check(letter, args, device)]
    log(f"gpu_check: {'FAILED ' + ', '.join(failed) if failed else 'all passed'} "
        f"({time.perf_counter() - t0:.0f} s)")
    if set(failed) & set("abc"):  # (d) and (e) report speed; a crash there is shown, not fatal
        sys.exit(1)


def check_args(args):
    """Bad input is one line and exit 2 before any check runs (never a FAIL of a check); the device."""
    device = resolve_device(args.device)
    if not args.checks or set(args.checks) - set(CHECKS):
        raise UserError(f"--checks takes letters from abcde, got {args.checks!r}")
    check_at_least_one((("--images", args.images), ("--batch-size", args.batch_size), ("--steps", args.steps),
                        ("--reps", args.reps), ("--descent-steps", args.descent_steps),
                        ("--descent-batch-size", args.descent_batch_size)))
    if args.minibatches < 2:
        raise UserError(f"--minibatches must be at least 2 (one prune needs a window), got {args.minibatches}")
    if "c" in args.checks and args.minibatches * args.batch_size < MIN_WINDOW_IMAGES:
        raise UserError(f"check (c) needs a window of at least {MIN_WINDOW_IMAGES} images (--minibatches x "
                        f"--batch-size), got {args.minibatches * args.batch_size}: in a shorter one a working "
                        f"bf16 path misses the bar by chance")
    check_positive("--ratio", args.ratio)
    if not (math.isfinite(args.lr) and args.lr >= 0):
        raise UserError(f"--lr must be a finite number of at least 0, got {args.lr:g}")
    for name in args.models:  # a network no GPU holds, or none at all, is bad input, not a failed check
        widths = check_widths(widths_of(name, args.ratio), f"{name} at --ratio {args.ratio:g}")
        if min(widths) < 1:
            raise UserError(f"--ratio {args.ratio:g} leaves {name} a layer of {min(widths)} units; use a larger one")
        if "c" in args.checks and needed_overlap(sum(widths), PRUNE_PER_STEP) > PRUNE_PER_STEP:
            raise UserError(f"--ratio {args.ratio:g} leaves {name} {sum(widths)} units, too few for check (c) to "
                            f"tell a prune set of {PRUNE_PER_STEP} from chance; use a larger one")
    if args.images > SYNTHETIC_SIZES["train"] or args.minibatches * args.batch_size > SYNTHETIC_SIZES["train"]:
        raise UserError(f"the synthetic set has {SYNTHETIC_SIZES['train']} images; ask for fewer")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return device


if __name__ == "__main__":
    run_main(main)
