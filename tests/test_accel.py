"""utils/accel.py and the CUDA-only branches it gates, exercised on the CPU: channels_last through
prepare_model, bf16 autocast through torch.autocast("cpu"), the latency protocol with an injected
synchronisation, the fast loader's pinned-memory upload with an injected pinning function."""
import pytest
import torch
from torch import nn

from model import build_model
from utils import accel, train
from utils import data as D
from utils.latency import measure_latency

CPU = torch.device("cpu")
VGG_SMALL = [8, 16, 16, 16, 32, 32, 32, 32]


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def synthetic(batch_size=32, images=64, recipe="train"):
    return D.get_loaders("synthetic", "unused", recipe=recipe, batch_size=batch_size, device=CPU,
                         subset=images, need_test=False)[0]


def conv_output_dtypes(model):
    """Records the dtype of every Conv2d output during forward passes."""
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _args, out: seen.append(out.dtype))
    return seen


# ---------------------------------------------------------------------------------------------------
# The small functions themselves.

def test_cpu_side_of_each_cuda_concern():
    benchmark, tf32 = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    accel.cudnn_autotune(CPU)
    accel.set_precision(CPU, "fp32")
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == (benchmark, tf32)
    assert not accel.prefers_channels_last(CPU) and accel.prefers_channels_last(torch.device("cuda"))
    assert not accel.uses_pinned_memory(CPU) and accel.uses_pinned_memory(torch.device("cuda"))
    t = torch.arange(3)
    assert accel.pin_memory(t, CPU) is t and accel.to_device(t, CPU) is t
    assert accel.device_name(CPU) is None
    assert accel.count_host_syncs(CPU, lambda: 7) == (7, None)
    accel.synchronize(CPU)
    accel.empty_cache(CPU)


def test_precisions():
    assert accel.PRECISIONS == ("fp32", "tf32", "bf16")
    with accel.autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    for precision in ("fp32", "tf32"):
        with accel.autocast(CPU, precision):
            assert not torch.is_autocast_enabled("cpu")
    accel.set_precision(CPU, "tf32")  # a no-op off CUDA
    with pytest.raises(ValueError):
        accel.autocast(CPU, "fp16")
    with pytest.raises(ValueError):
        accel.set_precision(CPU, "fp16")


# ---------------------------------------------------------------------------------------------------
# channels_last.

def test_prepare_model_puts_the_weights_channels_last_on_request():
    model = train.prepare_model(build_model("vgg", VGG_SMALL, 10), CPU, channels_last=True)
    assert train.input_format(model) == torch.channels_last
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert train.input_format(train.prepare_model(build_model("vgg", VGG_SMALL, 10), CPU)) \
        == torch.contiguous_format  # the CPU default is unchanged


def test_channels_last_training_step_matches_nchw():
    """One step through train_epoch and evaluate (later float32 steps drift apart by rounding only;
    test_fast.py checks the gradients in float64)."""
    loader = synthetic()
    train.set_seed(0)
    base = build_model("vgg", VGG_SMALL, 10)
    runs = []
    for channels_last in (False, True):
        model = build_model("vgg", VGG_SMALL, 10)
        model.load_state_dict(base.state_dict())
        model = train.prepare_model(model, CPU, channels_last=channels_last)
        layouts = []
        model.register_forward_pre_hook(lambda m, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last)))
        stats = train.train_epoch(model, synthetic(images=32), 0, train.make_optimizer(model, 0.05), CPU)
        test = train.evaluate(model, loader, CPU)
        runs.append((layouts, stats, test, model.state_dict()))
    (l_a, a, ta, wa), (l_b, b, tb, wb) = runs
    assert l_a == [False] * 3 and l_b == [True] * 3  # one training batch, two test batches
    assert abs(a["loss"] - b["loss"]) < 1e-6 * a["loss"] and a["acc"] == b["acc"]
    assert abs(ta["loss"] - tb["loss"]) < 1e-5 * ta["loss"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5, msg=key)


# ---------------------------------------------------------------------------------------------------
# bf16 autocast on the CPU.

def test_bf16_trains_in_bf16_and_keeps_parameters_and_statistics_in_fp32():
    loader = synthetic(batch_size=32, images=128, recipe="search")
    train.set_seed(0)
    models = {p: build_model("vgg", VGG_SMALL, 10, gates=True) for p in ("fp32", "bf16")}
    models["bf16"].load_state_dict(models["fp32"].state_dict())
    stats, dtypes = {}, {}
    for precision, model in models.items():
        dtypes[precision] = conv_output_dtypes(model)
        stats[precision] = train.train_epoch(model, loader, 0, train.make_optimizer(model, 0.05), CPU,
                                             precision=precision)
        stats[precision]["test"] = train.evaluate(model, loader, CPU, precision=precision)["loss"]
    assert set(dtypes["fp32"]) == {torch.float32}
    assert set(dtypes["bf16"]) == {torch.bfloat16} and len(dtypes["bf16"]) == len(dtypes["fp32"])
    model = models["bf16"]
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not name.endswith("num_batches_tracked"):
            assert tensor.dtype == torch.float32, name
            assert torch.isfinite(tensor).all(), name
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert (bn.running_var > 0).all()
    # Four steps from the same weights: bf16 rounding (relative 2^-8 per value) moves the mean loss by
    # well under 5 %; a loss computed from wrong-dtype logits or broken statistics would not.
    for key in ("loss", "test"):
        assert abs(stats["bf16"][key] - stats["fp32"][key]) < 0.05 * stats["fp32"][key], (key, stats)
    assert stats["bf16"]["loss"] != stats["fp32"]["loss"]  # bf16 really ran


def test_latency_runs_under_the_requested_precision():
    model = build_model("vgg", VGG_SMALL, 10)
    dtypes = conv_output_dtypes(model)
    measure_latency(model, CPU, 32, batch=2, warmup=1, timed=1, precision="bf16")
    assert set(dtypes) == {torch.bfloat16}


# ---------------------------------------------------------------------------------------------------
# The latency protocol with its synchronisation injected.

def test_latency_clock_brackets_exactly_the_timed_passes_after_synchronising():
    events, now = [], [0.0]
    model = build_model("vgg", VGG_SMALL, 10)
    model.register_forward_hook(lambda *_: events.append("forward"))

    def synchronize(device):
        assert device == CPU
        events.append("sync")

    def clock():
        events.append("clock")
        now[0] += 1.5  # seconds per reading: the result is (second - first) / timed
        return now[0]

    ms = measure_latency(model, CPU, 32, batch=2, warmup=3, timed=4, synchronize=synchronize, clock=clock)
    assert events == ["forward"] * 3 + ["sync", "clock"] + ["forward"] * 4 + ["sync", "clock"]
    assert ms == pytest.approx(1.5 * 1000 / 4)


def test_latency_feeds_inputs_in_the_models_layout():
    model = train.prepare_model(build_model("vgg", VGG_SMALL, 10), CPU, channels_last=True)
    layouts = []
    model.register_forward_pre_hook(lambda m, args: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    measure_latency(model, CPU, 32, batch=2, warmup=1, timed=1)
    assert layouts == [True, True]


# ---------------------------------------------------------------------------------------------------
# The fast loader's pinned-memory path.

def test_fast_loader_uploads_every_host_tensor_through_the_pinning_function():
    images, labels = D._synthetic("train")
    images, labels = torch.as_tensor(images[:40]), torch.as_tensor(labels[:40])
    mean, std = D.normalization("synthetic", "search")
    aug = D.augmentation("synthetic", "search")
    pinned = []

    def pin(tensor, device):
        assert device == CPU
        pinned.append(tensor)
        return tensor.clone()  # what pin_memory does: a copy in other (page-locked) memory

    plain = D.FastLoader(images, labels, batch_size=16, device=CPU, mean=mean, std=std, aug=aug, seed=3)
    staged = D.FastLoader(images, labels, batch_size=16, device=CPU, mean=mean, std=std, aug=aug, seed=3, pin=pin)
    assert [t.shape for t in pinned] == [images.shape, labels.shape]  # the split, once
    assert staged.images.data_ptr() != images.data_ptr()  # the loader holds the staged copy
    for epoch in (0, 1):
        del pinned[:]
        for (x, y), (u, v) in zip(plain.epoch(epoch), staged.epoch(epoch), strict=True):
            assert torch.equal(x, u) and torch.equal(y, v)
        # each epoch: the order and every augmentation draw (crop, flip), each the length of the split
        assert len(pinned) == 1 + len(aug_keys(aug)) and all(len(t) == 40 for t in pinned)


def aug_keys(aug):
    return [k for k in ("crop", "rotate", "flip") if aug[k]]


def test_pin_memory_is_the_default_pinning_function():
    loader = synthetic()
    assert loader.pin is accel.pin_memory


# ---------------------------------------------------------------------------------------------------
# --deterministic: the switches, and a run that records it.

@pytest.fixture
def restore_determinism(monkeypatch):
    """set_deterministic flips process-wide torch state: put it back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    state = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(state[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[1:]


def test_set_deterministic_sets_every_switch(restore_determinism):
    import os
    accel.set_deterministic(CPU, False)
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.backends.cudnn.benchmark = True
    accel.set_deterministic(CPU, True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.slow
def test_a_deterministic_run_records_it_and_the_cpu_repeats_either_way(tmp_path, restore_determinism, capsys):
    """On the CPU the same seed gives the same curves with or without --deterministic; the flag is part
    of the run's settings (a result without it is another run's). The three models train under it: no
    operation on their path lacks a deterministic implementation (global pooling is a mean)."""
    import ratio_swipe
    from utils import io
    base = ["--dataset", "synthetic", "--device", "cpu", "--no_latency", "--subset", "16", "--test_subset", "8",
            "--batch-size", "8", "--uniform", "--ratios", "0.0625", "--epochs", "1", "--seed", "0",
            "--plots_dir", str(tmp_path / "plots"), "--models_dir", str(tmp_path / "models")]
    ratio_swipe.main([*base, "--model", "vgg", "--save", "plain"])
    for model in ("vgg", "resnet18", "mobilenetv2"):
        ratio_swipe.main([*base, "--model", model, "--save", "det", "--deterministic"])
    plain, det = (io.load_result(tmp_path / f"plots/vgg/{name}_6.pk") for name in ("plain", "det"))
    assert det["settings"]["deterministic"] is True and "deterministic" not in plain["settings"]
    assert all(det[k] == plain[k] for k in ("train_loss", "test_acc", "test_loss"))
    assert torch.are_deterministic_algorithms_enabled()
    for model in ("resnet18", "mobilenetv2"):
        assert len(io.load_result(tmp_path / f"plots/{model}/det_6.pk")["train_loss"]) == 1
