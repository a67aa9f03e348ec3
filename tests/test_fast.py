"""Fast training: both loaders train to the same accuracy, the CUDA speed settings keep the arithmetic,
and the throughput benchmark runs. (The fast loader's augmentation itself is tested in test_data.py.)"""
import importlib
import json
import re
import warnings

import pytest
import torch
from torch import nn

from conftest import load_bench, run_script
from model import build_model, get_spec
from utils import data as D
from utils import train

CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The equivalence run: VGG11 at ratio 0.125, 4,096 real Fashion-MNIST training images, 3 epochs
# (LR 0.05, 0.05, 0.005; the drop settles BatchNorm), tested on the first 2,000 test images.
EQ_RATIO, EQ_TRAIN, EQ_TEST, EQ_LRS, EQ_MOMENTUM = 0.125, 4096, 2000, (0.05, 0.05, 0.005), 0.9
# Measured on this setting over seeds 0..9 (the same seed for both loaders: the same initial weights
# and image order, only the augmentation draws differ): test accuracy 73.2-76.5 % (fast 74.7 +- 1.1,
# torchvision 75.1 +- 0.9), paired difference fast - torchvision -0.4 +- 1.0 points (seed 0: -1.25).
# 4 points is 4 standard deviations of that difference; a broken pipeline (labels out of step with
# images, wrong normalisation or channels) lands far outside it, or near 10 %.
EQ_TOLERANCE, EQ_FLOOR = 4.0, 65.0


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads make small ops 10-50x slower,
    and one thread makes CPU reductions independent of scheduling."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _accuracy(loader, data_dir, seed=0):
    widths = [int(w) for w in get_spec("vgg").prepare_filters(EQ_RATIO, num_classes=10)]
    train_loader, test_loader = D.get_loaders("FashionMNIST", data_dir, recipe="train", batch_size=128,
                                              device=CPU, loader=loader, subset=EQ_TRAIN, test_subset=EQ_TEST,
                                              seed=seed, download="never", workers=1)
    train.set_seed(seed)
    model = train.prepare_model(build_model("vgg", widths, 10), CPU)
    optimizer = train.make_optimizer(model, EQ_LRS[0], EQ_MOMENTUM)
    for epoch, lr in enumerate(EQ_LRS, start=1):
        train.set_lr(optimizer, lr)
        train.train_epoch(model, train_loader, epoch, optimizer, CPU)
    return train.evaluate(model, test_loader, CPU)["acc_dataset"]


@pytest.mark.slow
def test_both_loaders_train_to_the_same_accuracy(tmp_path, one_thread):
    if D._find_fashion_mnist(str(tmp_path)) is None:
        pytest.skip(f"real Fashion-MNIST not installed at {D.FASHION_MNIST_SYSTEM_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
    fast, authors = _accuracy("fast", str(tmp_path)), _accuracy("torchvision", str(tmp_path))
    assert fast > EQ_FLOOR and authors > EQ_FLOOR, (fast, authors)
    assert abs(fast - authors) <= EQ_TOLERANCE, (fast, authors)


# ---------------------------------------------------------------------------------------------------
# The speed settings.

def test_prepare_model_on_the_cpu_only_moves():
    model = build_model("vgg", [8] * 8, 10)
    assert train.prepare_model(model, CPU) is model
    assert train.input_format(model) == torch.contiguous_format
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("name", ["vgg", "resnet18", "mobilenetv2"])
def test_input_format_follows_the_weights(name):
    widths = [int(w) for w in get_spec(name).prepare_filters(0.125, num_classes=10)]
    model = build_model(name, widths, 10, gates=True)
    assert train.input_format(model) == torch.contiguous_format
    model.to(memory_format=torch.channels_last)  # what prepare_model does on CUDA
    assert train.input_format(model) == torch.channels_last


@pytest.mark.parametrize("name", ["vgg", "resnet18", "mobilenetv2"])
def test_channels_last_computes_the_same_gradients(name, one_thread):
    """The layout prepare_model picks on CUDA changes no arithmetic, only the order of sums: in float64
    the gradients agree to rounding (in float32 the thin BatchNorm channels of a 0.125 network amplify
    rounding differences, so float32 is no test of correctness here)."""
    widths = [int(w) for w in get_spec(name).prepare_filters(0.125, num_classes=10)]
    train.set_seed(0)
    nchw = build_model(name, widths, 10, gates=True).double()
    last = build_model(name, widths, 10, gates=True).double()
    last.load_state_dict(nchw.state_dict())
    last.to(memory_format=torch.channels_last)
    x, y = torch.randn(16, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (16,))
    for model, inputs in ((nchw, x), (last, x.contiguous(memory_format=torch.channels_last))):
        nn.functional.cross_entropy(model(inputs), y).backward()
    scale = max(p.grad.abs().max() for p in nchw.parameters())
    for (key, a), b in zip(nchw.named_parameters(), last.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10 * scale, rtol=1e-8, msg=key)


def test_train_epoch_feeds_inputs_in_the_models_layout(one_thread):
    """One step (later float32 steps drift apart by rounding, as the float64 test above explains)."""
    loader, _ = D.get_loaders("synthetic", "unused", recipe="train", batch_size=32, device=CPU, subset=32,
                              need_test=False)
    train.set_seed(0)
    nchw = build_model("vgg", [8, 16, 16, 16, 32, 32, 32, 32], 10)
    last = build_model("vgg", nchw.widths, 10)
    last.load_state_dict(nchw.state_dict())
    last.to(memory_format=torch.channels_last)
    seen = []  # per forward pass: did the input arrive channels_last?
    last.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    results = []
    for model in (nchw, last):
        stats = train.train_epoch(model, loader, 0, train.make_optimizer(model, 0.05), CPU)
        results.append((stats, {k: v.clone() for k, v in model.state_dict().items()}))
        train.evaluate(model, loader, CPU)
    assert seen == [True, True]  # the training batch, then the test batch
    (a, wa), (b, wb) = results
    assert abs(a["loss"] - b["loss"]) < 1e-6 * a["loss"] and a["acc"] == b["acc"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_bf16_keeps_parameters_and_batchnorm_statistics_in_fp32(device):
    """--precision bf16 runs the forward pass under torch.autocast(device, bfloat16), on the CPU too."""
    device = torch.device(device)
    loader, _ = D.get_loaders("synthetic", "unused", recipe="search", batch_size=64, device=device,
                              subset=256, need_test=False)
    train.set_seed(0)
    model = train.prepare_model(build_model("vgg", [16, 32, 64, 64, 128, 128, 128, 128], 10, gates=True), device)
    reference = train.prepare_model(build_model("vgg", model.widths, 10, gates=True), device)
    reference.load_state_dict(model.state_dict())
    seen = []
    model.classifier.register_forward_hook(lambda m, i, out: seen.append(
        (out.dtype, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))))
    bf16 = train.train_epoch(model, loader, 0, train.make_optimizer(model, 0.05), device, precision="bf16")
    fp32 = train.train_epoch(reference, loader, 0, train.make_optimizer(reference, 0.05), device)
    assert set(seen) == {(torch.bfloat16, True, torch.bfloat16)}
    if device.type == "cuda":
        assert torch.backends.cudnn.benchmark and train.input_format(model) == torch.channels_last
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not name.endswith("num_batches_tracked"):
            assert tensor.dtype == torch.float32, name
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.isfinite(bn.running_var).all() and (bn.running_var > 0).all()
    assert abs(bf16["loss"] - fp32["loss"]) < 0.05 * fp32["loss"] and bf16["loss"] != fp32["loss"]


@CUDA
def test_no_per_batch_synchronisation():
    """train_epoch with the fast loader waits for the GPU a fixed number of times per epoch (the
    epoch's index upload and the final read), however many batches it has."""
    device = torch.device("cuda")
    model = train.prepare_model(build_model("vgg", [8] * 8, 10), device)
    optimizer = train.make_optimizer(model, 0.01)

    def syncs(batches):
        loader, _ = D.get_loaders("synthetic", "unused", recipe="train", batch_size=16, device=device,
                                  subset=16 * batches, need_test=False)
        train.train_epoch(model, loader, 0, optimizer, device)  # warm-up (cuDNN autotuning)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train.train_epoch(model, loader, 1, optimizer, device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(2) == syncs(8)


# ---------------------------------------------------------------------------------------------------
# The benchmark.

def test_flop_count_of_vgg11_matches_the_hand_count():
    bench = load_bench("train_throughput")
    widths = get_spec("vgg").DEFAULT_WIDTHS
    sides = (32, 16, 8, 8, 4, 4, 2, 2)  # each conv's output side (a pool follows convs 0, 1, 3, 5, 7)
    expected, c_in = 0, 3
    for side, c_out in zip(sides, widths):
        expected += side * side * c_out * c_in * 9
        c_in = c_out
    expected += 512 * 10
    assert bench.forward_macs(build_model("vgg", widths, 10), 32) == expected  # 153 M MACs


@pytest.mark.slow
def test_bench_quick_runs_and_ends_with_the_speedup_line():
    proc = run_script("bench/train_throughput.py", "--quick", "--device", "cpu", "--threads", "1",
                      "--steps", "1", "--reps", "1", "--ratio", "0.125", "--batch-size", "32",
                      "--descent-ratio", "0.125", "--descent-batch-size", "32", timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\d \(ours \d+ img/s vs authors' pipeline \d+ img/s, device cpu\)",
                        lines[-1]), lines[-1]
    assert any(line.startswith("authors' ") for line in lines) and any(line.startswith("ours ") for line in lines)
    assert any("EXTRAPOLATED full iteration" in line for line in lines)
    # gated VGG11 at 0.125 has 344 units: 95 % is 326, 33 steps of 10; 50,000 images are 1,563 batches of 32
    assert any("15630 warm-up + 1652 pruning minibatches (33 prune steps x 50 + 2)" in line for line in lines)


TRAINING_SCRIPTS = ("ratio_swipe", "imagenet_ratio_swipe", "train_norm", "fine_tune", "architecture_descent",
                    "imagenet_architecture_descent")


@pytest.mark.parametrize("script", TRAINING_SCRIPTS)
def test_every_training_script_takes_precision_and_bn_init(script, monkeypatch, capsys):
    """One --precision flag (default fp32, the authors' arithmetic) and --bn_init in every training script."""
    module = importlib.import_module(script)
    monkeypatch.setattr("sys.argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    help_text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "--precision {fp32,tf32,bf16}" in help_text and "(default: fp32)" in help_text
    assert "--bn_init {uniform,ones}" in help_text and "--amp" not in help_text


@CUDA
def test_fp32_is_strict_on_cuda():
    from utils import accel
    cuda = torch.device("cuda")
    for precision, tf32 in (("tf32", True), ("fp32", False), ("bf16", False)):
        accel.set_precision(cuda, precision)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32


@pytest.mark.slow
def test_precision_study_quick_runs(tmp_path):
    """bench/precision_study.py (the README's bf16 measurements) at smoke size on real Fashion-MNIST."""
    if D._find_fashion_mnist(str(tmp_path)) is None:
        pytest.skip(f"real Fashion-MNIST not installed at {D.FASHION_MNIST_SYSTEM_DIR}")
    proc = run_script("bench/precision_study.py", "--quick", "--skip_accuracy", "--data_dir", tmp_path,
                      "--out", tmp_path / "out", timeout=240, env={"OMP_NUM_THREADS": "1"})
    summary = json.loads((tmp_path / "out" / "precision_study.json").read_text())["prune_sets"]
    assert summary["steps"] >= 5 and summary["set_sizes"][0] == 100  # --quick prunes 100 units a step
    for kind in ("bf16", "fp32_flipped"):
        overlaps = summary[kind]["overlaps"]
        assert len(overlaps) == summary["steps"] and all(0 <= o <= 1 for o in overlaps)
    assert "fp32 vs bf16, same batches: mean overlap" in proc.stdout
