"""The one training engine: seeding, the optimizer, the authors' LR schedules, an epoch of training or
evaluation, checkpoints.

Accuracy is reported two ways: `acc`, the authors' mean over minibatches of the per-batch top-1 %
(the last, smaller batch weighs as much as a full one; this is what the paper's tables hold), and
`acc_dataset`, correct / total. Statistics stay on the device and are read once per epoch: nothing in
the loop waits for the GPU.

Speed on CUDA (bench/train_throughput.py measures it): `prepare_model` puts the weights in channels_last
and turns on cuDNN autotuning; the loops then feed inputs in the model's layout. `precision` (utils.accel)
is "fp32" by default, the authors' arithmetic; "bf16" runs the forward pass under bfloat16 autocast, on
the CPU too: convolutions and linear layers in bf16; BatchNorm takes the bf16 activations but keeps its
affine parameters, running statistics and their accumulation in fp32 (autocast lists no rule for
batch_norm, and its mixed-dtype kernels accumulate in fp32); the loss is computed on fp32 logits.

The test set is evaluated in the order the test loader gives for the epoch (utils.data: a fresh random
order per epoch on CIFAR-like data, as the authors' shuffled test loaders), which moves the per-batch
mean accuracy but never the dataset-level one. The CUDA-only parts (cuDNN, synchronisation, pinned
memory) live in utils/accel.py.
"""
import pickle
import random
import secrets
import sys
import warnings

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from model.gate import Gate
from utils import accel
from utils.base import UserError

_SGD = {
    "lr": 0.1,               # initial learning rate (paper Sec. 4)
    "momentum": 0.5,         # SGD momentum (paper Sec. 4)
    "weight_decay": 5e-4,    # SGD weight decay, on every parameter but the gates (paper Sec. 4)
}
_SEARCH = {
    **_SGD,
    "epochs": 300,           # epochs, at most, per descent iteration; pruning ends it sooner (authors' code)
    "warmup": 10,            # epochs of training before pruning starts (paper Sec. 3.1, "pre-training epochs")
    "prune_per_step": 10,    # units removed per pruning step, globally (authors' code)
}
# The training recipes, one per script family; every flag default and schedule reads them from here.
RECIPES = {
    "search_cifar": {        # architecture_descent.py (paper Sec. 3.1, 3.3, 4)
        **_SEARCH,
        "batch_size": 256,   # images per minibatch (authors' code)
        "prune_every": 50,   # minibatches per pruning window (authors' code)
        "schedule": "search",  # x0.1 after the warm-up, then /1.5 every 10 epochs (authors' code)
    },
    "search_tiny": {         # imagenet_architecture_descent.py (authors' code)
        **_SEARCH,
        "batch_size": 100,   # images per minibatch
        "prune_every": 100,  # minibatches per pruning window
        "schedule": "tiny_search",
    },
    "scratch_cifar": {       # ratio_swipe.py, train_norm.py on CIFAR-like data (paper Sec. 4)
        **_SGD,
        "epochs": 300,       # epochs
        "batch_size": 128,   # images per minibatch (authors' code)
        "milestones": (100, 200, 250),  # epochs at which the LR is multiplied by 0.1 (paper Sec. 4)
        "schedule": "cifar",
    },
    "scratch_tiny": {        # imagenet_ratio_swipe.py, train_norm.py on TinyImageNet (paper Sec. 4)
        **_SGD,
        "epochs": 150,       # epochs
        "batch_size": 128,   # images per minibatch (authors' code)
        "step": 50,          # the LR is multiplied by 0.1 every this many epochs (paper Sec. 4)
        "schedule": "tiny",
    },
    "fine_tune": {           # fine_tune.py, the Li et al. baseline (paper Sec. 4.2)
        **_SGD,
        "lr": 0.001,         # constant learning rate (paper Sec. 4.2)
        "epochs": 40,        # epochs on CIFAR-like data (paper Sec. 4.2)
        "tiny_epochs": 20,   # epochs on TinyImageNet (paper Sec. 4.2)
        "batch_size": 128,   # images per minibatch (authors' code)
        "schedule": "constant",
    },
}
CIFAR_EPOCHS, CIFAR_MILESTONES = RECIPES["scratch_cifar"]["epochs"], RECIPES["scratch_cifar"]["milestones"]
TINY_EPOCHS, TINY_STEP = RECIPES["scratch_tiny"]["epochs"], RECIPES["scratch_tiny"]["step"]
SEARCH_DECAY, SEARCH_EVERY = 1.5, 10  # the search divides the LR by 1.5 every 10 epochs


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fresh_seed():
    """A seed for a run without --seed, drawn from the OS: the authors' runs were unseeded, so their
    recipe (five runs, no seed) gives five different runs. Scripts print and store it."""
    return secrets.randbelow(2**31)


def choose_seed(given, stored, log):
    """The run's seed: `given` (--seed) when set; else the one seed stored in the run's existing files
    (`stored`: {path: seed}), so a resumed run keeps its seed; else a fresh one. Logs where it came from."""
    if given is not None:
        return int(given)
    seeds = sorted(set(stored.values()))
    if len(seeds) > 1:
        raise UserError(f"this run's files hold different seeds ({', '.join(map(str, seeds))}: "
                        f"{', '.join(sorted(stored))}); pass --seed")
    if seeds:
        path = min(p for p, s in stored.items() if s == seeds[0])
        log(f"seed {seeds[0]} (stored in {path}: this run continues it)")
        return seeds[0]
    seed = fresh_seed()
    log(f"seed {seed} (drawn at random, none given; --seed {seed} repeats this run)")
    return seed


def trainable_parameters(model):
    """Every parameter but the gates (the authors exclude names containing 'gate')."""
    gate_params = {id(p) for m in model.modules() if isinstance(m, Gate) for p in m.parameters()}
    return [p for p in model.parameters() if id(p) not in gate_params]


def make_optimizer(model, lr, momentum=_SGD["momentum"], weight_decay=_SGD["weight_decay"]):
    # Weight decay applies to BN affine parameters and biases too, as in the authors' code.
    return torch.optim.SGD(trainable_parameters(model), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_for_epoch(schedule, epoch, base_lr=_SGD["lr"], warmup=_SEARCH["warmup"], scale_to=None):
    """Learning rate for a 1-based epoch, as the authors' adjust_learning_rate* functions set it.

    cifar:  base, x0.1 at epochs 100, 200 and 250.
    tiny:   base, x0.1 at every multiple of 50 (so 1e-4 for the last of 150 epochs).
    search: base until the warm-up epoch W; at W the LR drops to base/10 and is divided by 1.5 at every
            epoch e > W with (e - W) % 10 == 0. With W = 0 the drop never happens (the authors' test
            `epoch == W` cannot fire) and base is divided by 1.5 every 10 epochs.
    tiny_search: as search, but the 1.5 divisions fire at multiples of 10 with exponent (e - W) // 10.
    constant: base (fine-tuning).
    scale_to: (opt-in, for short runs) run each LR of the cifar/tiny schedule for the same fraction
            of `scale_to` epochs as the paper does of 300/150 (a decay at epoch m moves to
            round((m - 1) * scale_to / 300) + 1; scale_to = 300 is the paper's schedule).
    """
    if schedule == "cifar":
        return base_lr * 0.1 ** sum(epoch >= m for m in _scaled(CIFAR_MILESTONES, CIFAR_EPOCHS, scale_to))
    if schedule == "tiny":
        if scale_to is None:
            return base_lr * 0.1 ** (epoch // TINY_STEP)
        milestones = _scaled(range(TINY_STEP, TINY_EPOCHS + 1, TINY_STEP), TINY_EPOCHS, scale_to)
        return base_lr * 0.1 ** sum(epoch >= m for m in milestones)
    if schedule == "constant":
        return base_lr
    if schedule not in ("search", "tiny_search"):
        raise ValueError(f"unknown schedule {schedule!r}")
    if warmup == 0:
        return base_lr / SEARCH_DECAY ** (epoch // SEARCH_EVERY)
    if epoch < warmup:
        return base_lr
    after = base_lr * 0.1
    if schedule == "search":
        return after / SEARCH_DECAY ** ((epoch - warmup) // SEARCH_EVERY)
    last_decay = epoch - epoch % SEARCH_EVERY  # the latest multiple of 10 reached
    if last_decay <= warmup:
        return after
    return after / SEARCH_DECAY ** ((last_decay - warmup) // SEARCH_EVERY)


def plateau_gain(test_acc):
    """How much the best test accuracy rose over the last quarter of the epochs (the last ceil(E / 4) of
    E): near 0 once the accuracy has plateaued; None for a run too short to have a quarter before it."""
    test_acc = np.asarray(test_acc, dtype=np.float64).ravel()
    last = -(-test_acc.size // 4)
    earlier = test_acc[:test_acc.size - last]
    # rounded: accuracies are sums of per-batch percentages, 0.3 must not read as 0.30000000000000004
    return round(float(test_acc.max() - earlier.max()), 9) if earlier.size else None


def prepare_model(model, device, channels_last=None):
    """Move a freshly built network to `device`, with channels_last weights (the same arithmetic in
    another memory layout; default: on CUDA only) and cuDNN autotuning on CUDA. Call it after
    build_model, before the optimizer."""
    model = model.to(device)
    accel.cudnn_autotune(device)
    if channels_last is None:
        channels_last = accel.prefers_channels_last(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def input_format(model):
    """channels_last when the model's weights are (see prepare_model), else contiguous. 1x1 and
    depthwise kernels are both at once, so a 3x3 kernel with several input channels decides."""
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


def _scaled(milestones, paper_epochs, scale_to):
    if scale_to is None:
        return milestones
    return [round((m - 1) * scale_to / paper_epochs) + 1 for m in milestones]


def _progress(iterable, total, desc):
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())


class _Meter:
    """Sums on the device; one synchronisation when read."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.batch_acc = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.batches = self.images = 0

    def add(self, loss, logits, y):
        hits = (logits.argmax(1) == y).sum()
        self.loss += loss.detach().float()
        self.batch_acc += hits * (100.0 / y.numel())
        self.correct += hits
        self.batches += 1
        self.images += y.numel()

    def read(self):
        if not self.batches:
            return {"loss": float("nan"), "acc": float("nan"), "acc_dataset": float("nan")}
        return {"loss": self.loss.item() / self.batches, "acc": self.batch_acc.item() / self.batches,
                "acc_dataset": 100.0 * self.correct.item() / self.images}


def train_epoch(model, loader, epoch, optimizer, device, *, after_step=None, precision="fp32", desc=None):
    """One epoch of SGD. `after_step(loss)` runs after every optimizer step (the pruning hook); when
    it returns "stop" the epoch ends there. Returns loss/acc/acc_dataset and whether it stopped."""
    model.train()
    meter, stopped, layout = _Meter(device), False, input_format(model)
    for x, y in _progress(loader.epoch(epoch), len(loader), desc):
        x = x.contiguous(memory_format=layout)  # a no-op unless prepare_model chose channels_last
        model.zero_grad(set_to_none=True)  # gates too: Taylor-FO reads this batch's gate gradients
        with accel.autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        meter.add(loss, logits, y)
        if after_step is not None and after_step(loss) == "stop":
            stopped = True
            break
    return {**meter.read(), "stopped": stopped}


@torch.no_grad()
def evaluate(model, loader, device, *, epoch=0, precision="fp32", desc=None):
    """Test statistics; `epoch` picks the test loader's order for that epoch (when it shuffles)."""
    model.eval()
    meter, layout = _Meter(device), input_format(model)
    for x, y in _progress(loader.epoch(epoch), len(loader), desc):
        x = x.contiguous(memory_format=layout)
        with accel.autocast(device, precision):
            logits = model(x)
        meter.add(F.cross_entropy(logits.float(), y), logits, y)
    return meter.read()


def load_checkpoint(path, device):
    """A checkpoint written by this project (tensors and plain data only: weights_only loading)."""
    try:
        with warnings.catch_warnings():  # a plain pickle (not torch.save's) warns before it is refused
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError:
        # torch's weights-only loader refused it before running anything; its advice to load with
        # weights_only=False would run whatever the file holds, so it is not repeated.
        raise UserError(f"{path}: not a checkpoint of this project (refused by the weights-only loader, "
                        f"nothing in it was run); delete it or use another --save") from None
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, AttributeError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: not a readable checkpoint: {first}") from None
