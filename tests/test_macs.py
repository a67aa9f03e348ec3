"""MACs per image (utils.params.count_macs) against torch.utils.flop_counter on the built network:
its FLOPs / 2 for conv and linear layers, all three models, both input sizes, random widths."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import MODELS, build_model
from utils.params import count_macs

# (num_classes, input size): CIFAR and TinyImageNet, and the crossed pairs (the strides follow the
# class count, the map sizes the input).
SHAPES = [(10, 32), (100, 32), (200, 64), (10, 64), (200, 32)]


def counted_macs(model_name, widths, num_classes, input_size, convcut):
    """flop_counter's conv + mm FLOPs / 2 of one forward pass of one image, on the meta device."""
    with torch.device("meta"):
        net = build_model(model_name, widths, num_classes, convcut=convcut).eval()
        x = torch.empty(1, 3, input_size, input_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    flops = counter.get_total_flops()
    counted = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert counted <= {"aten.convolution", "aten.addmm", "aten.mm"}, counted
    assert flops % 2 == 0
    return flops // 2


def random_widths(rng, model_name):
    default = np.array(MODELS[model_name].DEFAULT_WIDTHS)
    return [int(w) for w in rng.integers(1, 2 * default + 1)]


@pytest.mark.parametrize("model_name", ["vgg", "resnet18", "mobilenetv2"])
@pytest.mark.parametrize("num_classes,input_size", SHAPES)
@pytest.mark.parametrize("convcut", [False, True])
def test_macs_equal_flop_counter(model_name, num_classes, input_size, convcut):
    spec = MODELS[model_name]
    rng = np.random.default_rng([len(model_name), num_classes, input_size, convcut])
    # Random widths, and the default and a uniform scaling (equal widths: identity shortcuts).
    configs = [random_widths(rng, model_name) for _ in range(3)] + [
        list(spec.DEFAULT_WIDTHS), [max(1, w // 4) for w in spec.DEFAULT_WIDTHS]]
    for widths in configs:
        if model_name == "vgg" and (convcut or input_size != 32):
            # The network itself refuses (no shortcuts) or fails (a 2x2 map before the Linear head).
            with pytest.raises(ValueError):
                count_macs(model_name, widths, num_classes, input_size, convcut)
            with pytest.raises((ValueError, RuntimeError)):
                counted_macs(model_name, widths, num_classes, input_size, convcut)
            continue
        assert count_macs(model_name, widths, num_classes, input_size, convcut) == \
            counted_macs(model_name, widths, num_classes, input_size, convcut), widths


def test_known_values():
    """Hand counts: VGG11 at default widths on 32x32, and the shortcut term ConvCut adds."""
    w = MODELS["vgg"].DEFAULT_WIDTHS
    sizes = [32, 16, 8, 8, 4, 4, 2, 2]
    c_in, expected = [3] + w[:-1], 512 * 10
    expected += sum(s * s * a * b * 9 for s, a, b in zip(sizes, c_in, w))
    assert count_macs("vgg", w, 10, 32) == expected == 152_769_536
    # ResNet18 with all widths 8: ConvCut adds a 1x1 shortcut to each of the 5 blocks that had none.
    plain = count_macs("resnet18", [8] * 17, 10, 32)
    cut = count_macs("resnet18", [8] * 17, 10, 32, convcut=True)
    assert cut - plain == 8 * 8 * (32 * 32 * 2 + 16 * 16 + 8 * 8 + 4 * 4)
