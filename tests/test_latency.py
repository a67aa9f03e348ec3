"""utils.latency.measure_latency: a positive time, and the model's train/eval mode left as it was."""
import pytest
import torch

from model import architecture, build_model
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


@pytest.mark.slow
def test_latency_measured_once_per_configuration(tmp_path, monkeypatch):
    """Three seeds of a two-ratio swipe with --latency measure two configurations, and every result
    carries them; another thread count, width list or class count measures again. Each seed is its own
    main() call, as each is its own process in `make demo`: only the files under plots_dir are shared."""
    import ratio_swipe
    from utils import io, latency
    calls = []

    def fake(model, device, image_size, **protocol):
        calls.append((tuple(model.widths), torch.get_num_threads(), model.num_classes))
        return 10.0 + len(calls)

    monkeypatch.setattr(latency, "measure_latency", fake)
    plots = tmp_path / "plots"

    def swipe(seed, save, *extra):
        ratio_swipe.main(["--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--uniform",
                          "--subset", "64", "--test_subset", "32", "--epochs", "1", "--batch-size", "32",
                          "--seed", str(seed), "--save", f"{save}_{seed}", "--plots_dir", str(plots),
                          "--models_dir", str(tmp_path / "models"), "--latency", *extra])

    for seed in (0, 1, 2):
        swipe(seed, "uni", "--ratios", "0.125", "0.25")
    assert [c[0] for c in calls] == [(8, 16, 32, 32, 64, 64, 64, 64), (16, 32, 64, 64, 128, 128, 128, 128)]
    for tag, ms in ((12, 11.0), (25, 12.0)):
        assert [io.load_result(str(plots / "vgg" / f"uni_{s}_{tag}.pk"))["latency_ms"] for s in range(3)] \
            == [ms] * 3
    assert len(list((plots / "latency_cache").glob("*.json"))) == 2

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        swipe(3, "uni", "--ratios", "0.25")   # same widths, another thread count
    finally:
        torch.set_num_threads(threads)
    swipe(4, "uni", "--ratios", "0.375")      # other widths
    assert len(calls) == 4 and calls[2][1] == threads + 1 and calls[3][0][0] == 24
    swipe(5, "uni", "--ratios", "0.25")       # the first settings again: reused
    assert len(calls) == 4

    # The key holds everything the time depends on; a change of any of them is another key.
    net = build_model("vgg", [4] * 8, 10)
    cpu = torch.device("cpu")
    base = latency.latency_key(architecture(net), cpu, 32)
    assert {"architecture", "input_size", "batch", "device", "device_name", "threads"} <= set(base)
    assert base["architecture"]["widths"] == [4] * 8 and base["architecture"]["num_classes"] == 10
    others = [latency.latency_key(architecture(build_model("vgg", [4] * 8, 100)), cpu, 32),
              latency.latency_key(architecture(build_model("resnet18", [4] * 17, 10, convcut=True)), cpu, 32),
              latency.latency_key(architecture(net), cpu, 64),
              latency.latency_key(architecture(net), cpu, 32, batch=50),
              latency.latency_key(architecture(net), torch.device("meta"), 32)]
    assert all(other != base for other in others)
