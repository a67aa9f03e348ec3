"""The gate layer placed after BatchNorm: one multiplicative weight per channel.

Gates start at 1 and are never trained (the optimizer leaves them out); Taylor-FO pruning reads their
gradient and sets pruned units to 0. A network that is only trained is built without gates.
"""
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x):
        # (B, C, H, W) * (1, C, 1, 1), or (B, C) * (1, C)
        return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self):
        return str(self.weight.numel())


def gate_or_identity(num_features, gates):
    return Gate(num_features) if gates else nn.Identity()
