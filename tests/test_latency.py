"""utils.latency.measure_latency: a positive time, and the model's train/eval mode left as it was."""
import pytest
import torch

from model import build_model
from utils.latency import BATCH, TIMED, WARMUP, measure_latency


def test_paper_protocol_constants():
    assert (BATCH, WARMUP, TIMED) == (100, 20, 80)


@pytest.mark.parametrize("training", [True, False])
def test_positive_and_mode_kept(training):
    torch.manual_seed(0)
    net = build_model("vgg", [4, 4, 8, 8, 8, 8, 8, 8], 10)
    net.train(training)
    running_mean = net.features.bn0.running_mean.clone()
    ms = measure_latency(net, torch.device("cpu"), 32, batch=4, warmup=2, timed=3)
    assert isinstance(ms, float) and ms > 0
    assert net.training is training
    assert all(m.training is training for m in net.modules())
    # Timed in eval mode: BatchNorm statistics are not touched.
    assert torch.equal(net.features.bn0.running_mean, running_mean)


def test_tiny_input_size():
    net = build_model("resnet18", [4] * 17, 200)
    assert measure_latency(net, torch.device("cpu"), 64, batch=2, warmup=1, timed=1) > 0
