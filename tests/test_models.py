"""The three networks: structure, gates, parameter counts (formula and exact) against the built model."""
import random

import pytest
import torch
from torch import nn

from model import MODELS, architecture, build_model, gates_of
from model.gate import Gate
from utils.params import actual_params, built_params, count_params

VARIANTS = [("vgg", 10, 32), ("vgg", 100, 32), ("resnet18", 10, 32), ("resnet18", 100, 32),
            ("resnet18", 200, 64), ("mobilenetv2", 100, 32), ("mobilenetv2", 200, 64)]


@pytest.mark.parametrize("name,num_classes,size", VARIANTS)
@pytest.mark.parametrize("convcut", [False, True])
def test_forward_backward_gates_and_shape(name, num_classes, size, convcut):
    if name == "vgg" and convcut:
        pytest.skip("VGG has no shortcuts")
    torch.manual_seed(0)
    widths = [max(2, w // 8) for w in MODELS[name].DEFAULT_WIDTHS]
    net = build_model(name, widths, num_classes, gates=True, convcut=convcut)
    gates = gates_of(net)
    # One gate per searched width, in the order of the flat width list.
    assert [g.weight.numel() for g in gates] == widths
    out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)
    out.sum().backward()
    assert all(g.weight.grad is not None and g.weight.grad.abs().sum() > 0 for g in gates)
    assert all(p.grad is not None for n, p in net.named_parameters()), "every weight is used"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_gates_when_only_trained(name):
    net = build_model(name, MODELS[name].DEFAULT_WIDTHS, 10 if name == "vgg" else 100)
    assert gates_of(net) == []
    assert not any("gate" in n for n, _ in net.named_parameters())


def test_gate_parameter_names_contain_gate():
    """The authors exclude parameters by the substring 'gate'; ours keep names that satisfy it."""
    for name in MODELS:
        net = build_model(name, MODELS[name].DEFAULT_WIDTHS, 200 if name != "vgg" else 10, gates=True)
        gate_names = [n for n, p in net.named_parameters() if any(p is g.weight for g in gates_of(net))]
        assert len(gate_names) == len(MODELS[name].DEFAULT_WIDTHS)
        assert all("gate" in n for n in gate_names)


@pytest.mark.parametrize("name,num_classes,formula,built", [
    ("vgg", 10, 9_231_114, 9_231_114),
    ("resnet18", 100, 11_218_340, 11_218_340),
    ("resnet18", 200, 11_269_640, 11_273_736),  # the formula misses layer1's stride-2 shortcut
    ("mobilenetv2", 100, 2_447_932, 2_448_700),  # the formula misses the stem's 3x3 factor
    ("mobilenetv2", 200, 2_576_032, 2_576_800),
])
def test_default_counts(name, num_classes, formula, built):
    widths = MODELS[name].DEFAULT_WIDTHS
    assert count_params(name, widths, num_classes) == formula
    assert count_params(name, widths, num_classes, exact=True) == built
    assert actual_params(build_model(name, widths, num_classes)) == built


def test_uniform_vgg_counts():
    spec = MODELS["vgg"]
    assert actual_params(build_model("vgg", spec.prepare_filters(0.25), 10)) == 579_786
    assert actual_params(build_model("vgg", spec.prepare_filters(1.0), 10)) == 9_231_114


@pytest.mark.parametrize("name,num_classes", [(n, k) for n, k, _ in VARIANTS])
@pytest.mark.parametrize("convcut", [False, True])
def test_exact_counter_equals_built_network(name, num_classes, convcut):
    if name == "vgg" and convcut:
        pytest.skip("VGG has no shortcuts")
    rng = random.Random(f"{name}{num_classes}{convcut}")
    spec = MODELS[name]
    for trial in range(12):
        widths = [rng.randint(1, 80) for _ in spec.DEFAULT_WIDTHS]
        if trial % 3 == 0:  # equal widths around blocks: identity shortcuts appear
            widths = [rng.choice((8, 16))] * len(widths)
        expected = built_params(name, widths, num_classes, convcut=convcut)
        assert spec.exact_params(widths, num_classes, convcut) == expected, widths


def test_built_params_matches_a_real_build():
    widths = [12, 7, 7, 9, 9, 20, 11, 20, 20, 31, 5, 31, 31, 40, 40, 40, 40]
    assert built_params("resnet18", widths, 200) == actual_params(build_model("resnet18", widths, 200))


def test_authors_layer_details():
    vgg = build_model("vgg", MODELS["vgg"].DEFAULT_WIDTHS, 10, gates=True)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in vgg.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(c.bias is not None for c in convs)
    assert all(torch.all(b.weight == 0.5) for b in bns)  # the authors' BN init
    assert isinstance(vgg.classifier, nn.Linear) and vgg.classifier.in_features == 512

    resnet = build_model("resnet18", MODELS["resnet18"].DEFAULT_WIDTHS, 200)
    assert resnet.layer1[0].shortcut is not None  # stride 2 on TinyImageNet, 64 -> 64
    cifar = build_model("resnet18", MODELS["resnet18"].DEFAULT_WIDTHS, 100)
    assert cifar.layer1[0].shortcut is None and cifar.layer2[0].shortcut is not None
    assert all(c.bias is None for c in cifar.modules() if isinstance(c, nn.Conv2d))

    mbv2 = build_model("mobilenetv2", MODELS["mobilenetv2"].DEFAULT_WIDTHS, 100)
    with_conv = [i for i, b in enumerate(mbv2.stages) if b.shortcut is not None]
    assert with_conv == [0, 1, 3, 6, 10, 13, 16]  # stage1, and the first block of stages 2-7
    expansion = mbv2.stages[3].residual[0]
    assert expansion.out_channels == 6 * 24  # stage 3 reads stage 2's 24 channels, times t = 6


def test_feature_maps():
    """Final maps: VGG 1x1, ResNet 4x4 and MobileNetV2 2x2, for both input sizes."""
    seen = {}
    for name, num_classes, size in [("resnet18", 100, 32), ("resnet18", 200, 64),
                                    ("mobilenetv2", 100, 32), ("mobilenetv2", 200, 64)]:
        net = build_model(name, [8] * len(MODELS[name].DEFAULT_WIDTHS), num_classes).eval()
        last = net.layer4 if name == "resnet18" else net.stages
        last.register_forward_hook(lambda m, i, o, key=(name, size): seen.__setitem__(key, o.shape[-1]))
        net(torch.randn(1, 3, size, size))
    assert seen == {("resnet18", 32): 4, ("resnet18", 64): 4, ("mobilenetv2", 32): 2,
                    ("mobilenetv2", 64): 2}


def test_architecture_rebuilds_the_network():
    net = build_model("mobilenetv2", [8] * 19, 200, gates=True, convcut=True)
    arch = architecture(net)
    assert arch == {"model": "mobilenetv2", "widths": [8] * 19, "num_classes": 200, "gates": True,
                    "convcut": True, "bn_init": "uniform"}
    copy = build_model(arch["model"], arch["widths"], arch["num_classes"], arch["gates"], arch["convcut"],
                       arch["bn_init"])
    copy.load_state_dict(net.state_dict())
    assert architecture(build_model("resnet18", [8] * 17, 10, bn_init="ones"))["bn_init"] == "ones"


def bn_weights(net):
    return torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_batchnorm_weights_start_uniform_as_under_the_authors_pytorch(name):
    """The authors' PyTorch 1.0.1 drew BN weights from U(0, 1) and their ResNet18/MobileNetV2 left them
    there: the default. --bn_init ones gives today's 1. Seeded like every other init."""
    widths = MODELS[name].DEFAULT_WIDTHS
    torch.manual_seed(0)
    net = build_model(name, widths, 100)
    gammas = bn_weights(net)
    assert gammas.min() >= 0 and gammas.max() < 1 and len(gammas.unique()) > 0.99 * len(gammas)
    assert 0.45 < gammas.mean() < 0.55  # thousands of draws: U(0, 1) has mean 0.5
    assert all(torch.all(m.bias == 0) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    torch.manual_seed(0)
    assert torch.equal(bn_weights(build_model(name, widths, 100)), gammas)
    assert torch.all(bn_weights(build_model(name, widths, 100, bn_init="ones")) == 1)
    vgg = build_model("vgg", MODELS["vgg"].DEFAULT_WIDTHS, 10, bn_init="ones")
    assert torch.all(bn_weights(vgg) == 0.5)  # VGG: the authors set 0.5 explicitly
    with pytest.raises(ValueError):
        build_model(name, widths, 100, bn_init="zeros")


def test_gate_multiplies_channels():
    gate = Gate(3)
    gate.weight.data = torch.tensor([1.0, 0.0, 2.0])
    x = torch.ones(2, 3, 4, 4)
    assert torch.equal(gate(x)[:, 1], torch.zeros(2, 4, 4))
    assert torch.equal(gate(x)[:, 2], torch.full((2, 4, 4), 2.0))
    assert torch.equal(gate(torch.ones(2, 3)), torch.tensor([[1.0, 0.0, 2.0]] * 2))
