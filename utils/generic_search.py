"""NeuralScale on your own nn.Module: prune it with Taylor-FO on gates placed by model/generic.py,
fit the power law and give the widths of a budget, in one call. The scripts' path for torchvision
models is the same code (GenericSpec); this one needs no registry name, only a model and a loader.

    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from utils.generic_search import neuralscale
    >>> images = torch.randn(64, 3, 32, 32); labels = torch.randint(0, 10, (64,))
    >>> loader = torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=16)
    >>> law = neuralscale(resnet18(num_classes=10), loader, ratios=(0.5, 1.5), prune_every=1,
    ...                   prune_per_step=64, epochs=20)
    >>> len(law.widths[0.5]) == len(law.alpha) == len(law.groups)
    True
    >>> net = law.build(law.widths[1.5])  # freshly initialised, to train from scratch

The search prunes the model's own weights as they are (train or pre-train it first: the paper trains
ten epochs before pruning); its weights are copied, never changed.
"""
import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from model.generic import GenericSpec
from utils.base import UserError
from utils.fit import fit_power_law
from utils.prune import TaylorFOPruner


@dataclass
class Law:
    """The fitted law width_g = alpha_g * tau^beta_g (tau: parameters, or MACs per image with
    budget="macs"), the widths at each requested ratio or target, the pruning record and the groups
    (the BatchNorm names of each, in width-list order)."""
    alpha: np.ndarray
    beta: np.ndarray
    widths: dict
    rows: list
    groups: list
    spec: GenericSpec = field(repr=False)
    num_classes: int = 0

    def build(self, widths, gates=False):
        """The network at these widths, every conv, BatchNorm and Linear layer new."""
        return self.spec.build(widths, self.num_classes, gates=gates)

    def count(self, widths, budget="params"):
        graph = self.spec.graph(self.num_classes)
        return graph.macs(widths) if budget == "macs" else graph.params(widths)


def neuralscale(model, loader, *, ratios=(1.0,), targets=(), budget="params", epochs=10, lr=0.01, momentum=0.9,
                weight_decay=5e-4, prune_fraction=0.95, prune_every=50, prune_per_step=10, round_to=1,
                device=None, name="model", grouping="traced"):
    """Prune a gated copy of `model` on (images, labels) minibatches of `loader` with SGD until the
    pruner is done (at most `epochs` passes), fit the law on the record and return a Law whose widths
    map each ratio (of the original network's parameters or MACs) and each absolute target to a width
    list meeting it within 0.5 %. budget: "params" or "macs" (at the loader's image size); grouping:
    "traced" or "authors", the channel groups searched (model/generic.py, docs/generic.md)."""
    if budget not in ("params", "macs"):
        raise UserError(f"budget must be params or macs, got {budget!r}")
    images, _ = next(iter(loader))
    device = torch.device(device) if device else next(model.parameters()).device
    with torch.no_grad():
        was_training = model.training
        num_classes = int(model.eval()(images[:1].to(device)).shape[1])
        model.train(was_training)
    spec = GenericSpec(name, lambda _classes: model, input_size=int(images.shape[-1]),
                       in_channels=int(images.shape[1]), grouping=grouping)
    graph = spec.graph(num_classes)
    net = graph.add_gates(copy.deepcopy(model).to(device), device)
    gates = list(net.neuralscale_gates)
    optimizer = torch.optim.SGD([p for p in net.parameters() if all(p is not g.weight for g in gates)], lr=lr,
                                momentum=momentum, weight_decay=weight_decay)
    pruner = TaylorFOPruner(gates, prune_fraction=prune_fraction, prune_every=prune_every,
                            prune_per_step=prune_per_step)
    net.train()
    for _ in range(epochs):
        for x, y in loader:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x.to(device)), y.to(device)).backward()
            optimizer.step()
            if pruner.step() == "done":
                break
        if pruner.complete:
            break
    if not pruner.complete:
        raise UserError(f"pruning did not finish in {epochs} epochs ({pruner.steps_done} of {pruner.max_steps} "
                        f"steps); raise epochs or prune_per_step, or lower prune_every")
    pruner.finish()
    count = graph.macs if budget == "macs" else graph.params
    alpha, beta = fit_power_law(pruner.rows, name, num_classes, budget=budget, count=count)
    widths = {}
    for ratio in ratios:
        widths[ratio] = spec.prepare_filters(ratio, num_classes=num_classes, alpha=alpha, beta=beta,
                                             method="neuralscale", budget=budget, round_to=round_to)
    for target in targets:
        widths[target] = spec.prepare_filters(target=target, num_classes=num_classes, alpha=alpha, beta=beta,
                                              method="neuralscale", budget=budget, round_to=round_to)
    return Law(alpha, beta, widths, [list(r) for r in pruner.rows], graph.bns, spec, num_classes)
