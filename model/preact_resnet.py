"""Pre-activation ResNet18 as the authors built it.

17 searched widths: the stem conv, then (conv1, conv2) of each of the 8 blocks; block b reads width
2b (the stem or the previous block's conv2) and writes 2b+1, 2b+2. A 1x1 shortcut conv (no BN) appears
whenever a block's stride is not 1 or its input and output widths differ (always with convcut).
BatchNorm weights start from U(0, 1) by default, as under the authors' PyTorch 1.0.1 (model/bn_init.py).
"""
import torch
from torch import nn
from torch.nn import functional as F

from model.bn_init import init_batchnorm
from model.gate import gate_or_identity
from utils import scaling

NAME = "resnet18"
DEFAULT_WIDTHS = [64, 64, 64, 64, 64, 128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512]
TINY_CLASSES = 200  # the authors pick the TinyImageNet strides by the class count


def block_strides(num_classes):
    # NOTE: layer1 has stride 2 on TinyImageNet (64x64), so both inputs end on a 4x4 map.
    first = 2 if num_classes == TINY_CLASSES else 1
    return [first, 1, 2, 1, 2, 1, 2, 1]


class PreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, gates, convcut):
        super().__init__()
        mid, out = planes
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.gate1 = gate_or_identity(in_planes, gates)
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gate2 = gate_or_identity(mid, gates)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        has_conv = stride != 1 or in_planes != out or convcut
        self.shortcut = nn.Conv2d(in_planes, out, 1, stride, bias=False) if has_conv else None

    def forward(self, x):
        out = F.relu(self.gate1(self.bn1(x)))
        # An identity shortcut adds the ungated x: a pruned input unit leaves the residual branch only.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.gate2(self.bn2(out))))
        return out + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, widths, num_classes=10, gates=False, convcut=False, bn_init="uniform"):
        super().__init__()
        self.widths, self.num_classes, self.gates, self.convcut = list(widths), num_classes, gates, convcut
        self.bn_init = bn_init
        w = self.widths
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)  # pre-activation: no BN right after it
        strides = block_strides(num_classes)
        blocks = [PreActBlock(w[2 * b], (w[2 * b + 1], w[2 * b + 2]), strides[b], gates, convcut)
                  for b in range(8)]
        self.layer1, self.layer2, self.layer3, self.layer4 = (nn.Sequential(*blocks[i:i + 2])
                                                               for i in range(0, 8, 2))
        self.bn_out = nn.BatchNorm2d(w[16])
        self.gate_out = gate_or_identity(w[16], gates)
        self.linear = nn.Linear(w[16], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        init_batchnorm(self, bn_init)  # the authors set only the bias; the weight kept the library's

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))  # (B, w16, 4, 4)
        # NOTE: the authors' head has no ReLU between bn_out and the pooling.
        out = self.gate_out(F.adaptive_avg_pool2d(self.bn_out(out), 1))
        return self.linear(torch.flatten(out, 1))


def build(widths, num_classes=10, gates=False, convcut=False, bn_init="uniform"):
    return PreActResNet18(widths, num_classes, gates, convcut, bn_init)


def formula_params(widths, num_classes):
    """The authors' counter. Quirk: a shortcut conv is counted only when a block's input and output
    widths differ, not for a stride-2 block with equal widths (TinyImageNet's layer1: 4,096 short)."""
    total, c_prev = 0, 3
    for c in widths:
        total += c_prev * c * 9 + 2 * c  # conv (no bias), and the BN that reads it
        c_prev = c
    total += widths[16] * num_classes + num_classes
    for b in range(8):
        if widths[2 * b] != widths[2 * b + 2]:
            total += widths[2 * b] * widths[2 * b + 2]
    return total


def exact_params(widths, num_classes, convcut=False):
    w = [int(x) for x in widths]
    total = 3 * w[0] * 9
    for b, stride in enumerate(block_strides(num_classes)):
        c_in, mid, out = w[2 * b], w[2 * b + 1], w[2 * b + 2]
        total += 2 * c_in + c_in * mid * 9 + 2 * mid + mid * out * 9  # bn1, conv1, bn2, conv2
        if stride != 1 or c_in != out or convcut:
            total += c_in * out
    return total + 2 * w[16] + w[16] * num_classes + num_classes  # bn_out, linear


def exact_macs(widths, num_classes, input_size=32, convcut=False):
    """Multiply-accumulates per image in the conv and linear layers (BatchNorm, ReLU, pooling and
    the residual additions left out)."""
    w = [int(x) for x in widths]
    size = input_size
    total = size * size * 3 * w[0] * 9
    for b, stride in enumerate(block_strides(num_classes)):
        c_in, mid, out = w[2 * b], w[2 * b + 1], w[2 * b + 2]
        size = (size - 1) // stride + 1  # 3x3 pad 1 and 1x1 pad 0 give the same map at this stride
        total += size * size * (c_in * mid * 9 + mid * out * 9)
        if stride != 1 or c_in != out or convcut:
            total += size * size * c_in * out
    return total + w[16] * num_classes


def _tau_search(alpha, beta, target, count, first_iteration):
    # The authors keyed the tolerance on descent_idx == 0: the search itself, or --descent_idx 0.
    tolerance = int((0.009 if first_iteration else 0.007) * target)
    return scaling.tau_tolerance(alpha, beta, target, count, tolerance=tolerance)


# The flat width list (utils.scaling.width_rule). ResNet18 specifics (authors'): the budget counts the
# unrounded scaled widths; the tau search stops within 0.9 % of the budget for a first iteration's fit
# and 0.7 % otherwise; the small-width rules apply.
prepare_filters = scaling.width_rule(NAME, DEFAULT_WIDTHS, formula_params, exact_params, tau_search=_tau_search,
                                     small_width_rules=True, unrounded_budget=True)
