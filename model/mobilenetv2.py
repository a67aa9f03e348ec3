"""MobileNetV2, the authors' variant.

19 searched widths: the stem, the 17 bottleneck outputs (stages of 1, 2, 3, 4, 3, 3, 1 blocks) and
the final 1x1 conv (1280). Unlike the standard network, every block keeps a residual: a conv+BN
shortcut appears wherever the stride is not 1 or the widths differ (always with convcut), and the gate
sits after the addition. The expansion width is the block's actual input width times t (not searched).
A block registers residual, gate, shortcut, in the authors' order: module-order walks (the one-shot
pruners' source layers, utils/oneshot.py) depend on it. Initialisation is PyTorch's default except the
BatchNorm weights: U(0, 1) by default, as under the authors' PyTorch 1.0.1 (model/bn_init.py).
"""
from collections import OrderedDict

import torch
from torch import nn

from model.bn_init import init_batchnorm
from model.gate import gate_or_identity
from utils import scaling

NAME = "mobilenetv2"
DEFAULT_WIDTHS = [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280]
STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
TINY_CLASSES = 200
TAU_TOL = 0.0005


def block_plan(num_classes):
    """(stride, expansion t) of each of the 17 bottlenecks; a stage's first block carries its stride."""
    # NOTE: stage 5 has stride 2 on TinyImageNet, so both input sizes end on a 2x2 map.
    stage_strides = (1, 2, 2, 2, 2 if num_classes == TINY_CLASSES else 1, 2, 1)
    plan = []
    for stage, (blocks, stride) in enumerate(zip(STAGE_BLOCKS, stage_strides)):
        t = 1 if stage == 0 else 6
        plan += [(stride if i == 0 else 1, t) for i in range(blocks)]
    return plan


def conv_bn_gate(conv, gates):
    """conv -> BN -> gate -> ReLU6 (the stem and the head conv)."""
    width = conv.out_channels
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(width),
                                     gate=gate_or_identity(width, gates), relu=nn.ReLU6(inplace=True)))


class LinearBottleNeck(nn.Module):
    def __init__(self, in_ch, out_ch, stride, t, gates, convcut):
        super().__init__()
        mid = in_ch * t
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, out_ch, 1), nn.BatchNorm2d(out_ch))
        self.gate = gate_or_identity(out_ch, gates)  # registered before the shortcut, as the authors'
        has_conv = stride != 1 or in_ch != out_ch or convcut
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride), nn.BatchNorm2d(out_ch))
                         if has_conv else None)

    def forward(self, x):
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return self.gate(self.residual(x) + shortcut)  # no activation after the addition


class MobileNetV2(nn.Module):
    def __init__(self, widths, num_classes=100, gates=False, convcut=False, bn_init="uniform"):
        super().__init__()
        self.widths, self.num_classes, self.gates, self.convcut = list(widths), num_classes, gates, convcut
        self.bn_init = bn_init
        w = self.widths
        self.pre = conv_bn_gate(nn.Conv2d(3, w[0], 3, padding=1), gates)
        blocks, c_in = [], w[0]
        for j, (stride, t) in enumerate(block_plan(num_classes), start=1):
            blocks.append(LinearBottleNeck(c_in, w[j], stride, t, gates, convcut))
            c_in = w[j]
        self.stages = nn.Sequential(*blocks)
        self.conv1 = conv_bn_gate(nn.Conv2d(w[17], w[18], 1), gates)
        self.conv2 = nn.Conv2d(w[18], num_classes, 1)  # the classifier
        init_batchnorm(self, bn_init)

    def forward(self, x):
        x = self.conv1(self.stages(self.pre(x)))  # (B, w18, 2, 2)
        x = self.conv2(nn.functional.adaptive_avg_pool2d(x, 1))
        return torch.flatten(x, 1)


def build(widths, num_classes=100, gates=False, convcut=False, bn_init="uniform"):
    return MobileNetV2(widths, num_classes, gates, convcut, bn_init)


def formula_params(widths, num_classes):
    """The authors' counter ("+3x" = bias, BN weight, BN bias). Quirks: the stem omits the 3x3 kernel
    factor (24 * w0 short), a stride-2 block with equal widths gets no shortcut, and float widths (as the
    tau search passes them) count a shortcut conv in almost every block."""
    w = widths
    total = 3 * w[0] + 3 * w[0]
    prev = w[0]
    for j in range(1, 18):
        t = 1 if j == 1 else 6
        out, mid = w[j], prev * t
        if prev != out:
            total += prev * out + 3 * out
        total += prev * mid + 3 * mid + 9 * mid + 3 * mid + mid * out + 3 * out
        prev = out
    return total + w[17] * w[18] + 3 * w[18] + w[18] * num_classes + num_classes


def exact_params(widths, num_classes, convcut=False):
    w = [int(x) for x in widths]
    total = 3 * w[0] * 9 + 3 * w[0]
    prev = w[0]
    for j, (stride, t) in enumerate(block_plan(num_classes), start=1):
        out, mid = w[j], prev * t
        if stride != 1 or prev != out or convcut:
            total += prev * out + 3 * out
        total += prev * mid + 3 * mid + 9 * mid + 3 * mid + mid * out + 3 * out
        prev = out
    return total + w[17] * w[18] + 3 * w[18] + w[18] * num_classes + num_classes


def exact_macs(widths, num_classes, input_size=32, convcut=False):
    """Multiply-accumulates per image in the conv layers, depthwise ones included (biases,
    BatchNorm, ReLU6, pooling and the residual additions left out)."""
    w = [int(x) for x in widths]
    size = input_size
    total = size * size * 3 * w[0] * 9
    prev = w[0]
    for j, (stride, t) in enumerate(block_plan(num_classes), start=1):
        out, mid = w[j], prev * t
        expand = size * size * prev * mid
        size = (size - 1) // stride + 1
        total += expand + size * size * (mid * 9 + mid * out)  # expand, depthwise, project
        if stride != 1 or prev != out or convcut:
            total += size * size * prev * out
        prev = out
    return total + size * size * w[17] * w[18] + w[18] * num_classes  # head conv, classifier


def _tau_search(alpha, beta, target, count, first_iteration):
    return scaling.tau_tolerance(alpha, beta, target, count, tolerance=int(TAU_TOL * target), float_widths=True,
                                 halve_overshoot=True)


# The flat width list (utils.scaling.width_rule). MobileNetV2 specifics (authors'): the budget is the
# count of the truncated uniform widths; the tau search counts float widths, halves tau on overshoot and
# stops within 0.05 %; the small-width rules apply.
prepare_filters = scaling.width_rule(NAME, DEFAULT_WIDTHS, formula_params, exact_params, tau_search=_tau_search,
                                     small_width_rules=True, unrounded_budget=False, default_classes=100)
