"""How often check (c) of bench/gpu_check.py fails over seeds: healthy, and with the bf16 path broken.

    python bench/overlap_sweep.py --seeds 200                  # healthy: how often (c) fails by chance
    python bench/overlap_sweep.py --seeds 200 --broken zero    # bf16 gate gradients zeroed: must fail
    python bench/overlap_sweep.py --seeds 200 --broken random  # bf16 criterion replaced by noise: must fail

Seed s sets the initial weights and the minibatches; each seed runs check (c) exactly as gpu_check.py
does (the same functions and verdict), per model, by default at the settings its CPU test uses (width
ratio 0.125, batch 16, 6 minibatches). --broken corrupts only the bf16 run's gate gradients before each
criterion is read. Prints one line per model, `fails F/N seeds`, the overlap counts seen, and a total.
"""
import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_check  # noqa: E402
from model import MODELS  # noqa: E402
from utils.base import UserError, check_positive, log, positive_int, resolve_device, run_main  # noqa: E402
from utils.cli import make_parser  # noqa: E402


def zero_gradients(params):
    for p in params:
        if p.grad is not None:
            p.grad.zero_()


def noise_gradients(params):
    for p in params:
        if p.grad is not None:
            p.grad.copy_(torch.randn_like(p.grad))


BROKEN = {"none": None, "zero": zero_gradients, "random": noise_gradients}


def sweep(args, device):
    """{model: {"failed": count, "shared": Counter of shared-unit counts ("size": a set of another
    size), "units": gate units}} over seeds 0..args.seeds-1."""
    stats = {name: {"failed": 0, "shared": collections.Counter(), "units": 0} for name in args.models}
    for seed in range(args.seeds):
        run = argparse.Namespace(seed=seed, ratio=args.ratio, batch_size=args.batch_size)
        loader = gpu_check.synthetic_loader(run, device, args.minibatches * args.batch_size, recipe="search")
        for name in args.models:
            fp32, total = gpu_check.chosen_units(run, device, name, "fp32", loader)
            bf16, _ = gpu_check.chosen_units(run, device, name, "bf16", loader, corrupt=BROKEN[args.broken])
            passed, _ = gpu_check.overlap_verdict(fp32, bf16, total)
            stats[name]["failed"] += not passed
            stats[name]["shared"][len(fp32 & bf16) if len(bf16) == len(fp32) else "size"] += 1
            stats[name]["units"] = total
    return stats


def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--seeds", type=positive_int, default=100, help="seeds 0..N-1")
    parser.add_argument("--broken", choices=tuple(BROKEN), default="none",
                        help="corrupt the bf16 run: zero its gate gradients, or replace them by noise")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=tuple(MODELS), help="networks")
    parser.add_argument("--ratio", type=float, default=0.125, help="uniform width ratio")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="minibatch")
    parser.add_argument("--minibatches", type=positive_int, default=6, help="minibatches in the prune window")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads on the CPU")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    check_positive("--ratio", args.ratio)
    torch.set_num_threads(args.threads)
    if args.minibatches < 2:
        raise UserError(f"--minibatches must be at least 2 (one prune needs a window), got {args.minibatches}")
    stats = sweep(args, device)
    for name, st in stats.items():
        seen = ", ".join(f"{k}: {n}" for k, n in sorted(st["shared"].items(), key=lambda kv: (kv[0] == "size", str(kv[0]).zfill(4))))
        log(f"{name} ({st['units']} units, need {gpu_check.needed_overlap(st['units'], gpu_check.PRUNE_PER_STEP)}"
            f" of {gpu_check.PRUNE_PER_STEP} shared): fails {st['failed']}/{args.seeds} seeds; shared units "
            f"seen (count: seeds): {seen}")
    failures, runs = sum(st["failed"] for st in stats.values()), args.seeds * len(args.models)
    log(f"check (c), bf16 {args.broken if args.broken != 'none' else 'healthy'}: fails {failures} of {runs} "
        f"model runs ({100 * failures / runs:.1f} %)")

if __name__ == "__main__":
    run_main(main)
