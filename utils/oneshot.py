"""One-shot pruning for the fine-tuning baselines (the authors' compare_pruner).

Each gate's units are ranked by a criterion read from the layers that feed it:
* "l1" (Li et al., the default): the L1 norm of each filter of the last Conv2d registered before the
  module that precedes the gate (the authors' rule). For VGG and MobileNetV2 that is the conv whose
  BatchNorm the gate follows: for every MobileNetV2 block gate, the residual branch's 1x1 projection,
  never the shortcut's conv, because the authors' block registers residual, gate, shortcut (and so
  does ours; the walk depends on that order). For a ResNet block input (gate1 of block b+1) it is the
  1x1 shortcut conv of block b when block b has one, else block b's conv2; gate2 reads conv1; the first
  block reads the stem; gate_out reads the last block's conv2.
* "slim" (network slimming): |gamma| of the BatchNorm right before the gate (for a MobileNetV2 block,
  the residual branch's last BatchNorm).

The budget keeps the authors' rule with the right model's counter and class count (they always used
the VGG formula with K = 10): target = formula(widths x size) on unrounded floats; L1 walks
r = 0.9, 0.9 x 0.999, ... until formula(int(w x r)) <= target and keeps, per layer, that many filters
with the largest L1 norm; slimming removes the 11 smallest |gamma| still alive over all layers at a
time until formula(surviving widths) <= target.

Pruning is masking, as in the authors' code: a pruned unit's gate (and for L1 its conv filter, for
slimming its BN gamma and beta) is set to 0 in the full-size network; nothing is removed. Gates are
not trained, so a masked unit stays silent through fine-tuning. `surviving_widths` gives the width
vector of the network the mask describes.
"""
from dataclasses import dataclass

import torch
from torch import nn

from model.gate import Gate
from utils.base import UserError

METHODS = ("l1", "slim")
AUTHOR_CODES = {"0": "slim", "1": "l1"}  # the authors' --method 0 / 1
L1_START, L1_DECAY = 0.9, 0.999  # so at least 10 % of each layer goes
SLIM_STEP = 10  # threshold = sorted |gamma|[pruned + 10]: 11 units per round (the authors' index)
MAX_ROUNDS = 1_000_000


@dataclass
class GateSource:
    gate: Gate
    bn: nn.BatchNorm2d
    conv: nn.Conv2d


def method_name(method):
    """'l1' / 'slim', also from the authors' numeric codes."""
    name = AUTHOR_CODES.get(str(method), str(method))
    if name not in METHODS:
        raise UserError(f"unknown --method {method!r}; choose l1 (or 1, Li et al.) or slim (or 0)")
    return name


def gate_sources(model):
    """For each gate, in width order: the BatchNorm registered right before it and the last Conv2d
    registered before that BatchNorm (module order, the authors' walk)."""
    modules = list(model.modules())
    sources = []
    for i, module in enumerate(modules):
        if not isinstance(module, Gate):
            continue
        bn = modules[i - 1]
        conv = next((m for m in reversed(modules[:i - 1]) if isinstance(m, nn.Conv2d)), None)
        units = module.weight.numel()
        if not isinstance(bn, nn.BatchNorm2d) or conv is None or bn.num_features != units \
                or conv.out_channels != units:
            raise ValueError(f"gate {len(sources)} ({units} units) does not follow a BatchNorm2d fed by a "
                             f"Conv2d of the same width")
        sources.append(GateSource(module, bn, conv))
    if not sources:
        raise ValueError("the network has no gates; build it with gates=True")
    return sources


def surviving_widths(model):
    """Units whose gate is not zero, per gated layer."""
    return [int((s.gate.weight != 0).sum()) for s in gate_sources(model)]


def l1_widths(widths, count, size):
    """Per-layer widths under the budget count(widths x size): the authors' r = 0.9 x 0.999^k walk."""
    target = count([w * size for w in widths])
    r = L1_START
    for _ in range(MAX_ROUNDS):
        candidate = [int(w * r) for w in widths]
        achieved = count(candidate)
        r *= L1_DECAY
        if achieved <= target:
            if min(candidate) < 1:
                break
            return candidate
        if max(candidate) == 0:
            break
    raise UserError(f"no widths below {widths} meet the budget of ratio {size:g}")


@torch.no_grad()
def prune_l1(model, count, size):
    """Li et al.: keep, per layer, the filters with the largest L1 norm; zero the rest (conv filter and
    gate). Returns the surviving widths."""
    sources = gate_sources(model)
    keep = l1_widths(surviving_widths(model), count, size)
    for source, k in zip(sources, keep):
        norms = source.conv.weight.abs().flatten(1).sum(1)  # (out_channels,)
        norms = torch.where(source.gate.weight != 0, norms, torch.full_like(norms, -1.0))  # dead ones last
        drop = torch.argsort(norms, descending=True, stable=True)[k:]
        source.conv.weight[drop] = 0
        source.gate.weight[drop] = 0
    return surviving_widths(model)


@torch.no_grad()
def prune_slim(model, count, size):
    """Network slimming: repeatedly zero the 11 units with the smallest |BN gamma| still alive over all
    gated layers (gate, gamma and beta) until the count of the surviving widths meets the budget.
    The authors zeroed every unit with |gamma| <= sorted[pruned + 10], which is the same 11 units unless
    there are ties (an untrained network, where all gammas are equal, would lose every unit at once);
    here ties are broken by layer order. No last-unit protection (authors'), but a layer left with no
    unit is an error. Returns the surviving widths."""
    sources = gate_sources(model)
    target = count([w * size for w in surviving_widths(model)])
    sizes = [s.gate.weight.numel() for s in sources]
    widths = surviving_widths(model)
    for _ in range(MAX_ROUNDS):
        if count(widths) <= target:
            break
        alive = torch.cat([s.gate.weight != 0 for s in sources])
        gammas = torch.cat([s.bn.weight.abs() for s in sources]).masked_fill(~alive, -1.0)  # dead first
        pruned = int((~alive).sum())
        if pruned + SLIM_STEP >= gammas.numel():
            break
        drop = torch.zeros_like(alive)
        drop[torch.argsort(gammas, stable=True)[:pruned + SLIM_STEP + 1]] = True
        for s, mask in zip(sources, drop.split(sizes)):
            s.gate.weight[mask] = 0
            s.bn.weight[mask] = 0
            s.bn.bias[mask] = 0
        widths = surviving_widths(model)
    if count(widths) > target or min(widths) < 1:
        raise UserError(f"slimming cannot meet the budget of ratio {size:g} without emptying a layer "
                        f"(widths {widths})")
    return widths


def prune(model, method, count, size):
    """Mask `model` (built with gates) down to the parameter count of its widths x `size` (a width
    ratio: 0.75 leaves about 56 %); returns the surviving widths.
    `count(widths)` is the model's parameter formula (utils.params.count_params for its name and K)."""
    return (prune_l1 if method_name(method) == "l1" else prune_slim)(model, count, size)
