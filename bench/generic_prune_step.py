"""One prune step of the generic path (model/generic.py) against the hand-written one, on ResNet18.

Both time the same network with the same initial weights (the hand-written pre-activation ResNet18):
* hand-written: its own Gate modules, built with gates=True;
* generic: built without gates, then gated by the traced analysis (one shared gate per channel group,
  applied after each of the group's BatchNorms through GatedBatchNorm).
A prune step is what the search does per minibatch at prune_every 1: zero_grad, forward, backward,
SGD step and TaylorFOPruner.step(), which prunes every time. Windows alternate (A B, B A, ...) so machine
noise hits both; each window starts from fresh copies (not timed). The ratio compares each path's best
window (timeit's rule: other jobs on the machine only ever add time), the medians are shown beside
it. The last line is always
`ratio: X.XX (generic N ms vs hand-written M ms per prune step, ...)`; the goal is under 1.5x, and the
exit status is 1 when it is not met.
"""
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/generic_prune_step.py`

from model import build_model, gates_of, get_spec  # noqa: E402
from model.generic import ChannelGraph  # noqa: E402
from utils.base import default_device, log, positive_int, resolve_device, run_main  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.prune import TaylorFOPruner  # noqa: E402
from utils.train import make_optimizer  # noqa: E402

GOAL = 1.5  # the generic path may cost at most this much more per prune step


def networks(ratio, seed):
    """(hand-written gated ResNet18, the same weights gated by the generic analysis)."""
    widths = [max(1, int(w * ratio)) for w in get_spec("resnet18").DEFAULT_WIDTHS]
    torch.manual_seed(seed)
    theirs = build_model("resnet18", widths, 10, gates=True)
    ours = build_model("resnet18", widths, 10)
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if ".gate" not in k and "gate_out" not in k})
    ChannelGraph(copy.deepcopy(ours), 32).add_gates(ours)
    return widths, theirs, ours


def window(net, batches, device):
    """Seconds per prune step over `batches`, on a fresh copy of `net`."""
    net = copy.deepcopy(net).to(device).train()
    optimizer = make_optimizer(net, 0.01)
    pruner = TaylorFOPruner(gates_of(net), prune_every=1, prune_per_step=1)
    x0, y0 = batches[0]
    for x, y in ((x0, y0),):  # one warm-up step (allocations), then the first window of the pruner
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        pruner.step()
    sync(device)
    start = time.perf_counter()
    for x, y in batches:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        if pruner.step() != "pruned":
            raise RuntimeError("the pruner stopped pruning inside a timed window; lower --steps")
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--device", default=default_device(), help="torch device")
    p.add_argument("--ratio", type=float, default=0.5, help="ResNet18 width ratio (uniform)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per minibatch (32x32)")
    p.add_argument("--steps", type=positive_int, default=3, help="timed prune steps per window")
    p.add_argument("--reps", type=positive_int, default=5, help="windows per path")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    widths, theirs, ours = networks(args.ratio, 0)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device),
                torch.randint(0, 10, (args.batch_size,), generator=g).to(device)) for _ in range(args.steps)]
    log(f"ResNet18 widths {widths}, batch {args.batch_size}, device {device}: hand-written "
        f"{len(gates_of(theirs))} gates, generic {len(gates_of(ours))} groups")
    times = {"hand-written": [], "generic": []}
    for rep in range(args.reps):
        order = ("hand-written", "generic") if rep % 2 == 0 else ("generic", "hand-written")
        for name in order:
            times[name].append(window(theirs if name == "hand-written" else ours, batches, device))
    best = {name: min(t) for name, t in times.items()}
    for name, t in times.items():
        log(f"{name:12s} ms per prune step: best {best[name] * 1e3:.1f}, median {statistics.median(t) * 1e3:.1f}, "
            f"worst {max(t) * 1e3:.1f}")
    log(f"ratio of the medians: {statistics.median(times['generic']) / statistics.median(times['hand-written']):.2f}")
    ratio = best["generic"] / best["hand-written"]
    log(f"ratio: {ratio:.2f} (generic {best['generic'] * 1e3:.1f} ms vs hand-written "
        f"{best['hand-written'] * 1e3:.1f} ms per prune step, best windows, ResNet18 ratio {args.ratio:g} batch "
        f"{args.batch_size}, device {device}); goal under {GOAL}x: {'met' if ratio < GOAL else 'NOT met'}")
    if ratio >= GOAL:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
