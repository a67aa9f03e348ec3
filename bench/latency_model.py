"""The latency model (utils/latency_model.py) against the paper's latency protocol (utils/latency.py), in
one run, on one device.

Per model: load (or measure once, then cache) the lookup table, draw --configs random width
configurations (a ratio drawn log-uniformly from --ratio_range, each layer's width the default times the
ratio times a factor drawn log-uniformly from 0.6..1.6, so shapes differ as well as sizes), time each whole
network with the paper's protocol (batch --latency_batch, 20 warm-up and 80 timed passes, synchronised)
and predict it with the table. Printed last: the Spearman rank correlation between predicted and
measured latency and the median relative error |predicted - measured| / measured, per model.

    OMP_NUM_THREADS=1 python bench/latency_model.py --device cpu --latency_clock cpu

Measured figures live in the README, not here.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/latency_model.py`

from model import MODELS  # noqa: E402
from utils import latency_model  # noqa: E402
from utils.base import default_device, log, positive_int, resolve_device, run_main  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.latency import CLOCKS, TIMED, WARMUP, measure_latency  # noqa: E402

CLASSES = {"vgg": 10, "resnet18": 100, "mobilenetv2": 100}  # CIFAR10 for VGG11, CIFAR100 for the others
INPUT_SIZE = 32
SHAPE_SPREAD = (0.6, 1.6)  # each layer's factor around the drawn ratio


def ranks(values):
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a, b):
    """Spearman's rank correlation: the Pearson correlation of the ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def configurations(model, count, ratio_range, rng):
    """`count` width lists: default widths x a log-uniform ratio x a per-layer log-uniform factor."""
    default = np.asarray(MODELS[model].DEFAULT_WIDTHS, dtype=np.float64)
    low, high = np.log(ratio_range)
    out = []
    for _ in range(count):
        ratio = np.exp(rng.uniform(low, high))
        factors = np.exp(rng.uniform(*np.log(SHAPE_SPREAD), default.size))
        out.append([max(1, int(w)) for w in default * ratio * factors])
    return out


def compare(model, args, device, rng):
    """(predicted, measured) ms of args.configs random configurations of `model`."""
    classes = CLASSES[model]
    target = latency_model.Target(model, classes, INPUT_SIZE, str(device), args.precision, args.latency_batch,
                                  latency_model.timed_gates(model), args.latency_clock)
    table = latency_model.load_table(args.cache_dir, target)
    predicted, measured = [], []
    for n, widths in enumerate(configurations(model, args.configs, args.ratio_range, rng), 1):
        probe = latency_model.Probe(("network", model), tuple(widths), classes, INPUT_SIZE, target.gates)
        network, _ = probe.build()
        ms = measure_latency(network.to(device), device, INPUT_SIZE, batch=args.latency_batch, warmup=args.warmup,
                             timed=args.timed, precision=args.precision, clock=CLOCKS[args.latency_clock])
        predicted.append(table.predict(widths))
        measured.append(ms)
        log(f"{model} {n:2d}/{args.configs}: predicted {predicted[-1]:8.2f} ms, measured {ms:8.2f} ms  {widths}")
    return np.array(predicted), np.array(measured)


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--models", nargs="+", choices=tuple(CLASSES), default=list(CLASSES), help="networks")
    parser.add_argument("--configs", type=positive_int, default=20, help="random configurations per model")
    parser.add_argument("--ratio_range", type=float, nargs=2, default=(1 / 16, 0.5), metavar=("LOW", "HIGH"),
                        help="the configurations' ratios, drawn log-uniformly")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configurations")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32", help="arithmetic")
    parser.add_argument("--latency_batch", type=positive_int, default=100, help="images per batch")
    parser.add_argument("--latency_clock", choices=tuple(CLOCKS), default="wall",
                        help="wall, or cpu: this process's CPU time (the CPU at one thread; robust to other jobs)")
    parser.add_argument("--warmup", type=positive_int, default=WARMUP, help="warm-up passes of the ground truth")
    parser.add_argument("--timed", type=positive_int, default=TIMED, help="timed passes of the ground truth")
    parser.add_argument("--cache_dir", default=os.path.join("prune_record", "latency_tables"),
                        help="where the tables are kept (the scripts' default place)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    latency_model.check_clock(args.latency_clock, device)
    if not 0 < args.ratio_range[0] <= args.ratio_range[1]:
        from utils.base import UserError
        raise UserError(f"--ratio_range needs 0 < LOW <= HIGH, got {args.ratio_range}")
    start, rng = time.perf_counter(), np.random.default_rng(args.seed)
    log(f"device {device} ({latency_model.Target('vgg', 10, 32, str(device)).key()['device_name']}), "
        f"{torch.get_num_threads()} threads, {args.precision}, batch {args.latency_batch}, {args.latency_clock} "
        f"clock, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    results = {model: compare(model, args, device, rng) for model in args.models}
    log(f"done in {time.perf_counter() - start:.0f} s, load average at the end {os.getloadavg()[0]:.1f}")
    for model, (predicted, measured) in results.items():
        error = np.median(np.abs(predicted - measured) / measured)
        print(f"{model}: Spearman {spearman(predicted, measured):.3f}, median relative error {100 * error:.1f} % "
              f"over {len(measured)} configurations (measured {measured.min():.1f}..{measured.max():.1f} ms)")


if __name__ == "__main__":
    run_main(main)
