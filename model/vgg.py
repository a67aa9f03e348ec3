"""VGG11-BN for 32x32 inputs, as the authors built it.

Template 'A' = [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]: eight searched widths. Each
conv (3x3, bias) is followed by BatchNorm, the gate, ReLU. After five pools a 32x32 input is 1x1 and
the head is a single Linear layer, so the network is CIFAR-only.
"""
from collections import OrderedDict

import torch
from torch import nn

from model.gate import gate_or_identity
from utils import scaling

NAME = "vgg"
DEFAULT_WIDTHS = [64, 128, 256, 256, 512, 512, 512, 512]
POOL_AFTER = (0, 1, 3, 5, 7)  # the 'M' positions of template A, by conv index
TAU_STEPS, TAU_LR = 2000, 50.0  # the authors' fixed-length tau descent


class VGG(nn.Module):
    bn_init = "half"  # the authors' explicit BN weight 0.5; --bn_init does not apply

    def __init__(self, widths, num_classes=10, gates=False, convcut=False):
        super().__init__()
        if convcut:
            raise ValueError("VGG has no shortcuts; convcut applies to resnet18 and mobilenetv2")
        self.widths, self.num_classes, self.gates, self.convcut = list(widths), num_classes, gates, False
        layers, c_in = OrderedDict(), 3
        for i, w in enumerate(widths):
            layers[f"conv{i}"] = nn.Conv2d(c_in, w, 3, padding=1)
            layers[f"bn{i}"] = nn.BatchNorm2d(w)
            if gates:
                layers[f"gate{i}"] = gate_or_identity(w, True)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            if i in POOL_AFTER:
                layers[f"pool{i}"] = nn.MaxPool2d(2, 2)
            c_in = w
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(c_in, num_classes)
        self._initialize_weights()

    def _initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")  # leaky_relu a=0, i.e. ReLU gain
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)  # the authors' BN init
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (B, widths[-1], 1, 1) for 32x32 inputs
        return self.classifier(torch.flatten(x, 1))


def build(widths, num_classes=10, gates=False, convcut=False, bn_init=None):
    """bn_init is accepted for a uniform interface and ignored: the authors set VGG's BN weights to 0.5."""
    return VGG(widths, num_classes, gates, convcut)


def formula_params(widths, num_classes):
    """The authors' counter; for VGG it equals the built network's count exactly."""
    total, c_prev = 0, 3
    for c in widths:
        total += c_prev * c * 9 + c + 2 * c  # conv weight, conv bias, BN weight and bias
        c_prev = c
    return total + c_prev * num_classes + num_classes


def exact_params(widths, num_classes, convcut=False):
    return formula_params([int(w) for w in widths], num_classes)


def exact_macs(widths, num_classes, input_size=32, convcut=False):
    """Multiply-accumulates per image in the conv and linear layers (biases, BatchNorm, ReLU and
    pooling left out). Only inputs that pool down to 1x1 (32..63 pixels) fit the Linear head."""
    if convcut:
        raise ValueError("VGG has no shortcuts; convcut applies to resnet18 and mobilenetv2")
    total, c_in, size = 0, 3, input_size
    for i, c in enumerate(int(w) for w in widths):
        total += size * size * c_in * c * 9
        if i in POOL_AFTER:
            size //= 2
        c_in = c
    if size != 1:
        raise ValueError(f"VGG's Linear head needs a 1x1 map; a {input_size}x{input_size} input ends "
                         f"{size}x{size}")
    return total + c_in * num_classes


def _tau_search(alpha, beta, target, count, first_iteration):
    return scaling.tau_fixed_steps(alpha, beta, target, count, steps=TAU_STEPS, lr=TAU_LR)


# The flat width list (utils.scaling.width_rule). VGG specifics (authors'): the budget counts the
# unrounded scaled widths; the tau search is 2000 fixed steps; no small-width rules (a beta == 0 fit
# keeps int(alpha) at every ratio).
prepare_filters = scaling.width_rule(NAME, DEFAULT_WIDTHS, formula_params, exact_params, tau_search=_tau_search,
                                     small_width_rules=False, unrounded_budget=True)
