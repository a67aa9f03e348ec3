"""BatchNorm weight initialisation of the ResNet18 and MobileNetV2 networks.

The authors ran PyTorch 1.0.1, whose BatchNorm reset its weight to U(0, 1) (it became 1 in PyTorch 1.2).
Their PreActResNet18 set only the BN bias (to 0) and their MobileNetV2 set nothing, so every run of
theirs started from U(0, 1) scales: "uniform", the default here. "ones" is today's default (opt-in).
VGG11 sets 0.5 explicitly in the authors' code and ignores this choice.
"""
from torch import nn

BN_INITS = ("uniform", "ones")


def init_batchnorm(model, bn_init):
    """Set every BatchNorm2d weight of `model` (U(0, 1) from the global torch RNG, or 1), bias 0."""
    if bn_init not in BN_INITS:
        raise ValueError(f"unknown bn_init {bn_init!r}; choose one of {', '.join(BN_INITS)}")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            if bn_init == "uniform":
                nn.init.uniform_(m.weight)  # PyTorch 1.0.1's reset_parameters
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
