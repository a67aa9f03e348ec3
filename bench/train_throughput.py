"""Training throughput: the authors' data pipeline against this project's, on one device, in one run.

Two pipelines train the same network (same widths, same initial weights, gates off, synthetic
CIFAR-shaped data from utils.data) through the one engine, utils.train.train_epoch:
* authors': the torchvision loader (PIL transforms, 1 worker, pin_memory on CUDA), fp32, contiguous
  layout, cudnn.benchmark on (their scripts set it);
* ours: the device-resident fast loader; on CUDA also prepare_model (channels_last) and bf16 autocast
  (both run on the CPU too, but are not what a CPU user would choose, so the CPU keeps fp32 NCHW).
Timed windows alternate between the two (A B, B A, ...) so machine noise hits both; the table shows
medians over the windows. A second part times the architecture-descent loop (gated VGG11, batch 256,
train step + Taylor-FO pruner step per minibatch) both ways and extrapolates to one full iteration;
on CUDA without --quick it also runs a real full iteration where the extrapolation says it fits.

The last line is always `speedup: X.XX (ours N img/s vs authors' pipeline M img/s, device D)`.
See bench/README.md for how to read the output. Measured figures live in the README, not here.
"""
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/train_throughput.py`

from model import MODELS, build_model, gates_of, get_spec  # noqa: E402
from utils import accel, train  # noqa: E402
from utils.base import UserError, default_device, log, positive_int, resolve_device, run_main, seed_value  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.data import IMAGE_SIZE, NUM_CLASSES, SYNTHETIC_SIZES, TorchvisionLoader, get_loaders  # noqa: E402
from utils.descent import DEFAULT_FRACTION  # noqa: E402
from utils.prune import TaylorFOPruner  # noqa: E402

DATASET = "synthetic"
# bf16 dense tensor-core peaks from NVIDIA's data sheets (TFLOP/s, without sparsity).
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", None), ("H100", 989.4))
# One architecture-descent iteration as the authors run it on CIFAR.
SEARCH = {**train.RECIPES["search_cifar"], "prune_fraction": DEFAULT_FRACTION}
QUICK = {"steps": 2, "reps": 3, "warmup_steps": 1, "descent_steps": 1, "descent_reps": 3}
FULL = {"steps": 50, "reps": 5, "warmup_steps": 10, "descent_steps": 30, "descent_reps": 3}


# ---------------------------------------------------------------------------------------------------
# Counting and timing.

def forward_macs(model, image_size):
    """Multiply-accumulates of one image's forward pass through every Conv2d and Linear (hooks)."""
    total = 0

    def conv(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inputs, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


def bf16_peak_tflops(device):
    name = accel.device_name(device)
    return None if name is None else next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)




class Stream:
    """A loader's batches, epoch after epoch, handed to train_epoch `steps` at a time (as an 'epoch')."""

    def __init__(self, loader):
        self.loader, self.epochs = loader, itertools.count()
        self.batches = itertools.chain.from_iterable(loader.epoch(e) for e in self.epochs)
        # The authors' DataLoader keeps working while the other pipeline is timed; drop what it prefetched
        # (prefetch_factor 2 per worker, plus the pin-memory thread's batch) so windows start in steady state.
        self.prefetched = 2 * loader.workers + 1 if isinstance(loader, TorchvisionLoader) else 0
        self.steps = 0

    def take(self, steps):
        self.steps = steps
        return self

    def drain(self):
        for _ in range(self.prefetched):
            next(self.batches)

    def __len__(self):
        return self.steps

    def epoch(self, _epoch):
        return itertools.islice(self.batches, self.steps)


class Pipeline:
    def __init__(self, name, loader, model, precision, device, lr=0.1):
        self.name, self.loader, self.model, self.precision, self.device = name, loader, model, precision, device
        self.optimizer = train.make_optimizer(model, lr)
        self.stream = Stream(loader)

    def window(self, steps, after_step=None):
        """Seconds for `steps` training steps; train_epoch reads its statistics at the end (one .item()),
        which waits for the device, so the clock stops after the work is done."""
        self.stream.drain()
        accel.synchronize(self.device)
        t0 = time.perf_counter()
        train.train_epoch(self.model, self.stream.take(steps), 0, self.optimizer, self.device,
                          after_step=after_step, precision=self.precision)
        return time.perf_counter() - t0

    def load_only(self, steps):
        """Seconds to produce `steps` batches without training: the loader's own ceiling."""
        self.stream.drain()
        accel.synchronize(self.device)
        t0 = time.perf_counter()
        for x, y in self.stream.take(steps).epoch(0):
            pass
        accel.synchronize(self.device)
        return time.perf_counter() - t0

    def epoch_start(self, epoch):
        """Seconds from asking for a fresh epoch to holding its first batch (worker start, permutation)."""
        accel.synchronize(self.device)
        t0 = time.perf_counter()
        x, _ = next(iter(self.loader.epoch(epoch)))
        accel.synchronize(self.device)
        return time.perf_counter() - t0


def host_syncs(pipe, steps):
    """CUDA host synchronisations (torch's sync debug mode) in a window of `steps` steps."""
    return accel.count_host_syncs(pipe.device, lambda: pipe.window(steps))[1]


def interleaved(pipelines, reps, run):
    """{name: [run(p) per rep]}, alternating the order every repetition."""
    times = {p.name: [] for p in pipelines}
    for r in range(reps):
        for p in (pipelines if r % 2 == 0 else pipelines[::-1]):
            times[p.name].append(run(p))
    return times


# ---------------------------------------------------------------------------------------------------
# The two pipelines.

def make_pipelines(model_name, widths, *, batch_size, recipe, gates, device, num_images, seed):
    """(authors', ours) with identical initial weights."""
    num_classes = NUM_CLASSES[DATASET]
    train.set_seed(seed)
    base = build_model(model_name, widths, num_classes, gates=gates)
    pipes = []
    for name, loader_kind in (("authors'", "torchvision"), ("ours", "fast")):
        loader, _ = get_loaders(DATASET, "unused", recipe=recipe, batch_size=batch_size, device=device,
                                loader=loader_kind, subset=num_images, seed=seed, need_test=False)
        model = build_model(model_name, widths, num_classes, gates=gates)
        model.load_state_dict(base.state_dict())
        if loader_kind == "fast":
            precision = "bf16" if accel.is_cuda(device) else "fp32"
            pipes.append(Pipeline(name, loader, train.prepare_model(model, device), precision, device))
        else:
            pipes.append(Pipeline(name, loader, model.to(device), "fp32", device))
    accel.cudnn_autotune(device)  # the authors' scripts set cudnn.benchmark too
    return pipes


def whole_batches(batch_size):
    """The synthetic training set cut to whole batches: no odd last batch, whose new shape would make
    cuDNN autotune inside a timed window."""
    return SYNTHETIC_SIZES["train"] // batch_size * batch_size


def describe(pipe):
    loader = f"torchvision loader ({pipe.loader.workers} worker)" if isinstance(pipe.loader, TorchvisionLoader) \
        else "fast loader (uint8 on device)"
    layout = "channels_last" if train.input_format(pipe.model) == torch.channels_last else "NCHW"
    return f"{loader}, {'bf16 autocast' if pipe.precision == 'bf16' else pipe.precision}, {layout}"


def throughput(args, device, settings):
    spec = get_spec(args.model)
    widths = [int(w) for w in spec.prepare_filters(args.ratio, num_classes=NUM_CLASSES[DATASET])]
    pipes = make_pipelines(args.model, widths, batch_size=args.batch_size, recipe="train", gates=False,
                           device=device, num_images=whole_batches(args.batch_size), seed=args.seed)
    flops_per_image = 3 * 2 * forward_macs(build_model(args.model, widths, 10), IMAGE_SIZE[DATASET])
    log(f"model {args.model} ratio {args.ratio:g} widths {widths}, gates off, batch {args.batch_size}; "
        f"{flops_per_image * args.batch_size / 1e9:.1f} GFLOP per training step (3 x forward, 2 FLOP per MAC)")
    for p in pipes:
        log(f"  {p.name:9s} {describe(p)}")
    for p in pipes:
        p.window(settings["warmup_steps"])
    if accel.is_cuda(device) and settings["steps"] > 1:
        n = settings["steps"]
        log("CUDA host synchronisations per window of 1 / {} steps (per-step syncs make the second larger): "
            .format(n) + ", ".join(f"{p.name} {host_syncs(p, 1)} / {host_syncs(p, n)}" for p in pipes))
    seconds = interleaved(pipes, settings["reps"], lambda p: p.window(settings["steps"]))
    rates = {name: [settings["steps"] * args.batch_size / s for s in times] for name, times in seconds.items()}
    peak = bf16_peak_tflops(device)
    log(f"{settings['reps']} interleaved windows of {settings['steps']} steps each (after "
        f"{settings['warmup_steps']} warm-up steps per pipeline)")
    log(f"{'pipeline':10s} {'img/s median':>12s} {'min..max':>17s} {'TFLOP/s':>9s} {'of bf16 peak':>12s}")
    medians = {}
    for name, values in rates.items():
        medians[name] = statistics.median(values)
        tflops = medians[name] * flops_per_image / 1e12
        share = "n/a" if peak is None else f"{100 * tflops / peak:.2f} %"
        log(f"{name:10s} {medians[name]:12.1f} {min(values):8.1f}..{max(values):<8.1f} {tflops:9.4f} {share:>12s}")
    ratios = [o / a for o, a in zip(rates["ours"], rates["authors'"])]
    log(f"per-window ratio ours/authors': median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}..{max(ratios):.2f}")
    load_steps = settings.get("load_steps", 10 * settings["steps"])  # 0: skip (bench/gpu_check.py)
    if load_steps:
        loading = interleaved(pipes, settings["reps"], lambda p: p.load_only(load_steps))
        log("data loading alone (no training), img/s median: " + ", ".join(
            f"{name} {statistics.median(load_steps * args.batch_size / s for s in times):.0f}"
            for name, times in loading.items()))
    return medians


# ---------------------------------------------------------------------------------------------------
# One architecture-descent iteration.

def full_iteration_batches(prune_steps, batch_size):
    """(warm-up minibatches, pruning minibatches, epochs) of a full search iteration on 50,000 images:
    the pruner is called after every step from epoch warmup+1; the k-th prune happens at call
    k * prune_every + 1 and the call after the last prune reports done (the last-unit rule can end a
    real search earlier: this is the longest iteration)."""
    per_epoch = math.ceil(SYNTHETIC_SIZES["train"] / batch_size)  # 196 at batch 256, as on CIFAR
    warm = SEARCH["warmup"] * per_epoch
    prune = prune_steps * SEARCH["prune_every"] + 2
    return warm, prune, SEARCH["warmup"] + math.ceil(prune / per_epoch)


def real_iteration(pipe, log_line):
    """A whole search iteration, as utils/descent._run_iteration runs it: search LR rule, pruning from
    the end of the warm-up until the pruner is done. Seconds."""
    model, device = pipe.model, pipe.device
    pruner = TaylorFOPruner(gates_of(model), prune_fraction=SEARCH["prune_fraction"],
                            prune_every=SEARCH["prune_every"], prune_per_step=SEARCH["prune_per_step"])
    accel.synchronize(device)
    t0 = time.perf_counter()
    for epoch in range(1, SEARCH["epochs"] + 1):
        train.set_lr(pipe.optimizer, train.lr_for_epoch("search", epoch, SEARCH["lr"], SEARCH["warmup"]))
        after = (lambda _loss: "stop" if pruner.step() == "done" else None) if epoch > SEARCH["warmup"] else None
        train.train_epoch(model, pipe.loader, epoch, pipe.optimizer, device, after_step=after,
                          precision=pipe.precision)
        if pruner.finished:
            break
    accel.synchronize(device)
    seconds = time.perf_counter() - t0
    log_line(f"  {pipe.name:9s} real full iteration: {seconds:.1f} s ({epoch} epochs, {pruner.steps_done} "
             f"prune steps, final widths {pruner.widths()})")
    return seconds


def prune_step_seconds(pipe, repeats=3):
    """Median seconds of a pruner step() that prunes (after a real backward pass, so gates have .grad)."""
    pruner = TaylorFOPruner(gates_of(pipe.model), prune_fraction=SEARCH["prune_fraction"], prune_every=1,
                            prune_per_step=SEARCH["prune_per_step"])
    pipe.window(1, after_step=lambda _loss: pruner.step())  # iter_step 0: accumulates, never prunes
    times = []
    for _ in range(repeats):
        accel.synchronize(pipe.device)
        t0 = time.perf_counter()
        pruner.step()
        accel.synchronize(pipe.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def descent(args, device, settings):
    """Seconds of one full iteration per pipeline: extrapolated from timed minibatches, and measured
    for real on CUDA (not --quick) where the extrapolation is under --descent-limit."""
    widths = [int(w) for w in get_spec("vgg").prepare_filters(args.descent_ratio, num_classes=10)]
    bs = args.descent_batch_size

    def pipelines(num_images):
        return make_pipelines("vgg", widths, batch_size=bs, recipe="search", gates=True, device=device,
                              num_images=num_images, seed=args.seed)

    pipes = pipelines(whole_batches(bs))
    # Sampled minibatches run the pruner's per-minibatch work (criterion accumulation) but never prune:
    # prunes are timed on their own below and added once per prune step.
    pruners = {p.name: TaylorFOPruner(gates_of(p.model), prune_fraction=SEARCH["prune_fraction"],
                                      prune_every=10**9, prune_per_step=SEARCH["prune_per_step"])
               for p in pipes}
    steps = pruners["ours"].max_steps
    warm, prune, epochs = full_iteration_batches(steps, bs)
    log(f"descent iteration: gated vgg widths {widths}, batch {bs}; a full iteration = {warm} warm-up + "
        f"{prune} pruning minibatches ({steps} prune steps x {SEARCH['prune_every']} + 2), {epochs} epochs")

    def step_window(p):
        return p.window(settings["descent_steps"], after_step=lambda _loss: pruners[p.name].step())

    for p in pipes:
        step_window(p)  # warm-up
    seconds = interleaved(pipes, settings["descent_reps"], step_window)
    result = {}
    for p in pipes:
        per_batch = statistics.median(seconds[p.name]) / settings["descent_steps"]
        start = statistics.median(p.epoch_start(e) for e in (101, 102, 103))
        prune_s = prune_step_seconds(p)
        total = (warm + prune) * per_batch + steps * prune_s + epochs * start
        log(f"  {p.name:9s} {per_batch * 1000:9.1f} ms per minibatch (train + pruner step), "
            f"{prune_s * 1000:.1f} ms per prune, {start * 1000:.1f} ms per epoch start "
            f"-> EXTRAPOLATED full iteration {total:.0f} s ({total / 60:.1f} min)")
        result[p.name] = total
    if accel.is_cuda(device) and not args.quick:
        del pipes, pruners
        for p in pipelines(None):  # fresh networks on the whole set, odd last batch included
            if result[p.name] <= args.descent_limit:
                result[p.name] = real_iteration(p, log)
            else:
                log(f"  {p.name:9s} real full iteration skipped: extrapolated {result[p.name]:.0f} s > "
                    f"--descent-limit {args.descent_limit:g} s")
    ours, authors = result["ours"], result["authors'"]
    log(f"descent iteration speedup: {authors / ours:.2f} (ours {ours:.0f} s vs authors' pipeline "
        f"{authors:.0f} s per iteration)")
    return result


# ---------------------------------------------------------------------------------------------------

def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--model", default="vgg", choices=tuple(MODELS), help="network to train")
    parser.add_argument("--ratio", type=float, default=1.0, help="uniform width ratio of the network")
    parser.add_argument("--batch-size", type=positive_int, default=train.RECIPES["scratch_cifar"]["batch_size"],
                        help="training minibatch (the authors')")
    parser.add_argument("--quick", action="store_true", help="a few steps per window (about 2 minutes on a CPU)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"timed steps per window (default {FULL['steps']}, --quick {QUICK['steps']})")
    parser.add_argument("--reps", type=positive_int, default=None,
                        help=f"timed windows per pipeline (default {FULL['reps']}, --quick {QUICK['reps']})")
    parser.add_argument("--descent-steps", type=int, default=None,
                        help=f"timed search minibatches per window, 0 skips the descent part (default "
                             f"{FULL['descent_steps']}, --quick {QUICK['descent_steps']})")
    parser.add_argument("--descent-ratio", type=float, default=1.0,
                        help="width ratio of the searched VGG11 (1.0 = the authors' search)")
    parser.add_argument("--descent-batch-size", type=positive_int, default=SEARCH["batch_size"],
                        help="search minibatch")
    parser.add_argument("--descent-limit", type=float, default=600.0,
                        help="on CUDA without --quick, run a real full iteration when the extrapolation "
                             "predicts at most this many seconds")
    parser.add_argument("--seed", type=seed_value, default=0, help="initial weights and data order")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads on the CPU (default: torch's choice, one per core)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("steps", "reps", "descent_steps"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["descent_steps"] < 0 or not args.ratio > 0 or not args.descent_ratio > 0:
        raise UserError("--descent-steps must be >= 0 and the ratios positive")
    name = accel.device_name(device)
    if name is None:
        name = f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    log(f"device {device} ({name}), torch {torch.__version__}, {'--quick' if args.quick else 'full'} settings")
    medians = throughput(args, device, settings)
    if settings["descent_steps"]:
        descent(args, device, settings)
    if device.type == "cpu":
        log(f"load average at the end {os.getloadavg()[0]:.1f}")
    ours, authors = medians["ours"], medians["authors'"]
    log(f"speedup: {ours / authors:.2f} (ours {ours:.0f} img/s vs authors' pipeline {authors:.0f} img/s, "
        f"device {device})")


if __name__ == "__main__":
    run_main(main)
