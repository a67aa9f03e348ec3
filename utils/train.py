"""The one training engine: seeding, the optimizer, the authors' LR schedules, an epoch of training or
evaluation, checkpoints.

Accuracy is reported two ways: `acc`, the authors' mean over minibatches of the per-batch top-1 %
(the last, smaller batch weighs as much as a full one; this is what the paper's tables hold), and
`acc_dataset`, correct / total. Statistics stay on the device and are read once per epoch.
"""
import contextlib
import random
import sys

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from model.gate import Gate
from utils.cli import UserError

SCHEDULES = ("cifar", "tiny", "search", "tiny_search", "constant")
CIFAR_MILESTONES = (100, 200, 250)  # x0.1 at each (300 epochs)
TINY_STEP = 50  # x0.1 every 50 epochs (150 epochs)
SEARCH_DECAY, SEARCH_EVERY = 1.5, 10  # the search divides the LR by 1.5 every 10 epochs


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trainable_parameters(model):
    """Every parameter but the gates (the authors exclude names containing 'gate')."""
    gate_params = {id(p) for m in model.modules() if isinstance(m, Gate) for p in m.parameters()}
    return [p for p in model.parameters() if id(p) not in gate_params]


def make_optimizer(model, lr, momentum=0.5, weight_decay=5e-4):
    # Weight decay applies to BN affine parameters and biases too, as in the authors' code.
    return torch.optim.SGD(trainable_parameters(model), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_for_epoch(schedule, epoch, base_lr=0.1, warmup=10):
    """Learning rate for a 1-based epoch, as the authors' adjust_learning_rate* functions set it.

    cifar:  base, x0.1 at epochs 100, 200 and 250.
    tiny:   base, x0.1 at every multiple of 50 (so 1e-4 for the last of 150 epochs).
    search: base until the warm-up epoch W; at W the LR drops to base/10 and is divided by 1.5 at every
            epoch e > W with (e - W) % 10 == 0. With W = 0 the drop never happens (the authors' test
            `epoch == W` cannot fire) and base is divided by 1.5 every 10 epochs.
    tiny_search: as search, but the 1.5 divisions fire at multiples of 10 with exponent (e - W) // 10.
    constant: base (fine-tuning).
    """
    if schedule == "cifar":
        return base_lr * 0.1 ** sum(epoch >= m for m in CIFAR_MILESTONES)
    if schedule == "tiny":
        return base_lr * 0.1 ** (epoch // TINY_STEP)
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


def autocast(device, amp):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def train_epoch(model, loader, epoch, optimizer, device, *, after_step=None, amp=False, desc=None):
    """One epoch of SGD. `after_step(loss)` runs after every optimizer step (the pruning hook); when
    it returns "stop" the epoch ends there. Returns loss/acc/acc_dataset and whether it stopped."""
    model.train()
    meter, stopped = _Meter(device), False
    for x, y in _progress(loader.epoch(epoch), len(loader), desc):
        model.zero_grad(set_to_none=True)  # gates too: Taylor-FO reads this batch's gate gradients
        with autocast(device, amp):
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
def evaluate(model, loader, device, *, amp=False, desc=None):
    model.eval()
    meter = _Meter(device)
    for x, y in _progress(loader.epoch(0), len(loader), desc):
        with autocast(device, amp):
            logits = model(x)
        meter.add(F.cross_entropy(logits.float(), y), logits, y)
    return meter.read()


def load_checkpoint(path, device):
    """A checkpoint written by this project (tensors and plain data only: weights_only loading)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except (RuntimeError, OSError, ValueError, EOFError) as err:
        raise UserError(f"{path}: not a readable checkpoint: {err}") from None
