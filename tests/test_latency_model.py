"""The latency model (utils/latency_model.py) and --budget latency, with injected measurements: nothing
here times anything. The fake device costs each unit its MACs plus a fixed overhead, so predictions
have exact expected values."""
import json
import math
import statistics

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import MODELS
from utils import io, latency_model, scaling
from utils.base import UserError
from utils.params import count_macs

UNIT_OVERHEAD, NETWORK_OVERHEAD, MS_PER_MAC = 0.05, 0.3, 1e-6
SHAPES = [("vgg", 10, 32), ("resnet18", 100, 32), ("resnet18", 200, 64), ("mobilenetv2", 100, 32),
          ("mobilenetv2", 200, 64)]


def out_size(size, stride):
    return (size - 1) // stride + 1


def unit_macs(unit, a, b):
    """Multiply-accumulates per image of one unit, written out from the model files."""
    kind, size = unit[0], (unit[1] if len(unit) > 1 else 1)
    stride = unit[2] if kind in ("res_conv", "res_shortcut", "mb_depthwise", "mb_shortcut") else 1
    spatial = out_size(size, stride) ** 2
    return {"vgg_conv": spatial * 9 * a * b, "linear": a * b, "res_stem": spatial * 9 * a * b,
            "res_conv": spatial * 9 * a * b, "res_shortcut": spatial * a * b, "add": 0, "res_head": a * b,
            "mb_stem": spatial * 9 * a * b, "mb_expand": spatial * a * b, "mb_depthwise": spatial * 9 * a,
            "mb_project": spatial * a * b, "mb_shortcut": spatial * a * b, "add_gate": 0, "mb_head": spatial * a * b,
            "mb_classifier": a * b}[kind]


class FakeDevice:
    """measure(probe) without a clock: MACs * MS_PER_MAC plus an overhead per unit (per network)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, probe):
        self.calls += 1
        if probe.unit[0] == "network":
            model = probe.unit[1]
            return count_macs(model, probe.widths, probe.num_classes, probe.size) * MS_PER_MAC + NETWORK_OVERHEAD
        return unit_macs(probe.unit, *probe.widths) * MS_PER_MAC + UNIT_OVERHEAD


def table_for_scripts(record_dir, target):
    """The table of `target` timed by a fake device and cached where the scripts look for it (beside
    the search records in `record_dir`): a script under --budget latency reuses it and times nothing."""
    return latency_model.load_table(latency_model.table_dir(record_dir), target, FakeDevice(),
                                    log=lambda line: None)


def fake_table(model, classes, size, **target):
    return latency_model.build_table(latency_model.Target(model, classes, size, **target), FakeDevice(),
                                     log=lambda line: None)


def random_widths(model, rng, low=0.03, high=3.0):
    return [max(1, int(w * rng.uniform(low, high))) for w in MODELS[model].DEFAULT_WIDTHS]


def meta_macs(probe):
    """MACs of the module a probe times, counted by torch on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module, shape = probe.build()
        with FlopCounterMode(display=False) as counter:
            module(torch.empty(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("model,classes,size", SHAPES)
def test_the_units_are_the_network(model, classes, size):
    """The units of a configuration, built as the table times them, hold exactly the network's convs and
    linear layers (torch's FLOP counter against count_macs), with and without convcut."""
    rng = np.random.default_rng(0)
    for convcut in ((False, True) if model != "vgg" else (False,)):
        widths = random_widths(model, rng)
        if model != "vgg":  # one block with equal widths at stride 1: an identity shortcut
            widths[3 if model == "mobilenetv2" else 4] = widths[2]
        units = latency_model.plan(model, widths, classes, size, convcut)
        total = sum(meta_macs(latency_model.Probe(unit, (a, b), classes, size)) for unit, a, b in units)
        assert total == count_macs(model, widths, classes, size, convcut)
        assert all(unit_macs(unit, a, b) == meta_macs(latency_model.Probe(unit, (a, b), classes, size))
                   for unit, a, b in units[:6])  # the test's own formulas agree with torch


@pytest.mark.parametrize("model,classes,size", SHAPES)
def test_prediction_is_exact_for_a_bilinear_cost(model, classes, size):
    """Bilinear interpolation reproduces any cost p + q*a + r*b + s*a*b (MACs are of this form), on the
    grid, between its points and beyond it; the constant is the network's own overhead."""
    table = fake_table(model, classes, size)
    rng = np.random.default_rng(1)
    for _ in range(5):
        widths = random_widths(model, rng)  # off the grid, some beyond 2x the default widths
        units = latency_model.plan(model, widths, classes, size)
        expected = count_macs(model, widths, classes, size) * MS_PER_MAC + UNIT_OVERHEAD * len(units)
        assert table.predict(widths) - expected == pytest.approx(table.constant_ms, abs=1e-9)
    uniform_units = len(latency_model.plan(model, MODELS[model].DEFAULT_WIDTHS, classes, size))
    assert table.constant_ms == pytest.approx(NETWORK_OVERHEAD - UNIT_OVERHEAD * uniform_units)
    assert table.scale == pytest.approx(1.0)


def test_calibration_is_robust_to_one_disturbed_measurement():
    units = [1.0, 2.0, 4.0, 8.0, 16.0]
    whole = [2 + 1.5 * u for u in units]
    assert latency_model.calibration(units, whole) == pytest.approx((2.0, 1.5))
    whole[2] += 30  # another job ran during this one
    assert latency_model.calibration(units, whole) == pytest.approx((2.0, 1.5))
    constant, scale = latency_model.calibration(units, [10 - u for u in units])  # nonsense: shrinks as it grows
    assert scale == 1.0 and constant == pytest.approx(statistics.median(10 - 2 * u for u in units))


def test_a_noisy_grid_is_made_monotone():
    """A wider unit is never predicted faster, whatever the measurements (noise on a shared machine)."""
    rng = np.random.default_rng(2)
    table = latency_model.build_table(latency_model.Target("vgg", 10, 32), lambda probe: float(rng.uniform(1, 2)),
                                      log=lambda line: None)
    for _, _, ms in table.units.values():
        assert np.all(np.diff(ms, axis=0) >= 0) and np.all(np.diff(ms, axis=1) >= 0)
    widths = [16, 32, 64, 64, 128, 128, 128, 128]
    wider = [w + 7 for w in widths]
    assert table.predict(wider) >= table.predict(widths)


def test_the_table_is_built_once_and_reused(tmp_path):
    """The first call measures every grid point once, writes one JSON file, and every later call (a new
    process would do the same) reads it back without measuring; the reloaded table predicts the same."""
    target = latency_model.Target("resnet18", 100, 32, threads=1)
    device = FakeDevice()
    table = latency_model.load_table(tmp_path, target, device, log=lambda line: None)
    axes = latency_model.grid_axes("resnet18", 100, 32)
    points = sum(len(a) * len(b) for a, b in axes.values())
    assert device.calls == points + len(latency_model.REFERENCE_RATIOS)
    (path,) = tmp_path.iterdir()
    assert json.loads(path.read_text())["key"] == target.key()
    widths = MODELS["resnet18"].prepare_filters(0.3)
    for _ in range(3):
        again = latency_model.load_table(tmp_path, target, device, log=lambda line: None)
        assert again.predict(widths) == table.predict(widths)
    lazy = latency_model.predictor(cache_dir=tmp_path, model="resnet18", num_classes=100, input_size=32,
                                   device="cpu", precision="fp32", batch=100, clock="wall", measure=device)
    if torch.get_num_threads() == 1:
        assert lazy(widths) == table.predict(widths)
    assert device.calls == points + len(latency_model.REFERENCE_RATIOS)


def test_the_cache_key_separates_devices_precisions_and_batches(tmp_path):
    base = dict(model="vgg", num_classes=10, input_size=32, device="cpu", device_name="CPU A", threads=1)
    variants = [base, {**base, "device": "cuda:0", "device_name": "GPU B"}, {**base, "device_name": "CPU C"},
                {**base, "precision": "bf16"}, {**base, "batch": 32}, {**base, "threads": 2},
                {**base, "clock": "cpu"}, {**base, "num_classes": 100}, {**base, "gates": True}]
    keys = [latency_model.Target(**v).key() for v in variants]
    assert len({latency_model.cache_path(tmp_path, k) for k in keys}) == len(variants)
    device = FakeDevice()
    latency_model.load_table(tmp_path, latency_model.Target(**base), device, log=lambda line: None)
    once = device.calls
    latency_model.load_table(tmp_path, latency_model.Target(**base), device, log=lambda line: None)
    assert device.calls == once  # reused
    latency_model.load_table(tmp_path, latency_model.Target(**{**base, "precision": "bf16"}), device,
                             log=lambda line: None)
    assert device.calls == 2 * once  # another precision: measured again, the first table kept
    latency_model.load_table(tmp_path, latency_model.Target(**{**base, "batch": 32}), device, log=lambda line: None)
    assert device.calls == 3 * once and len(list(tmp_path.iterdir())) == 3


def test_the_cpu_clock_needs_the_cpu_at_one_thread():
    with pytest.raises(UserError, match="one thread only"):
        latency_model.Target("vgg", 10, 32, clock="cpu", threads=2).check()
    with pytest.raises(UserError, match="one thread only"):
        latency_model.check_clock("cpu", "cuda", 1)
    latency_model.Target("vgg", 10, 32, clock="cpu", threads=1).check()


def synthetic_fits(model, seed):
    default = np.array(MODELS[model].DEFAULT_WIDTHS, dtype=np.float64)
    beta = np.random.default_rng(seed).uniform(0.2, 0.8, default.size)
    return default / 10.0 ** beta, beta  # tau in ms: the law passes through the default widths at 10 ms


def pruned(model, seed):
    default = np.array(MODELS[model].DEFAULT_WIDTHS, dtype=np.float64)
    return [max(1, int(w)) for w in default * np.random.default_rng(seed).uniform(0.2, 0.8, default.size)]


@pytest.mark.parametrize("model,classes,size", [s for s in SHAPES if s != ("resnet18", 200, 64)])
def test_latency_budget_met_within_two_percent(model, classes, size):
    """NeuralScale, MorphNet-style and uniform scaling meet uniform scaling's predicted latency within 2 %
    at ratios 0.25, 1 and 2, and an absolute latency budget; with round_to 8 every width is a multiple
    of 8 and the budget is still met."""
    table = fake_table(model, classes, size)
    spec, alpha, beta = MODELS[model], *synthetic_fits(model, 0)
    methods = ({"alpha": alpha, "beta": beta}, {"pruned_widths": pruned(model, 0)}, {"method": "uniform"})
    for ratio in (0.25, 1.0, 2.0):
        goal = table.predict(spec.prepare_filters(ratio, num_classes=classes))
        for round_to in (1, 8):
            for kwargs in methods:
                options = dict(num_classes=classes, budget="latency", cost=table.predict, round_to=round_to, **kwargs)
                if table.predict([round_to] * len(alpha)) > 1.02 * goal:  # MobileNetV2 at 64x64, 0.25: 8 is too wide
                    with pytest.raises(scaling.BudgetError, match="none within 2.0%, widths multiples of 8"):
                        spec.prepare_filters(ratio, **options)
                    continue
                widths = spec.prepare_filters(ratio, **options)
                assert abs(table.predict(widths) - goal) <= 0.02 * goal, (ratio, round_to, kwargs.keys())
                assert all(w % round_to == 0 and w >= round_to for w in widths), widths
    target = round(table.predict(spec.prepare_filters(0.5, num_classes=classes)), 1)  # e.g. --target_latency 12.3ms
    absolute = spec.prepare_filters(None, num_classes=classes, budget="latency", target=target, cost=table.predict,
                                    alpha=alpha, beta=beta)
    assert abs(table.predict(absolute) - target) <= 0.02 * target


@pytest.mark.parametrize("model", ["vgg", "resnet18", "mobilenetv2"])
def test_round_to_applies_to_every_budget(model):
    """--round_to 8 under a parameter or MACs budget too: multiples of 8, within 0.5 %, where a
    configuration of multiples of 8 lands that close (ratio 1: the default widths)."""
    spec, alpha, beta = MODELS[model], *synthetic_fits(model, 1)
    for budget in ("params", "macs"):
        for kwargs in ({"alpha": alpha, "beta": beta}, {"method": "uniform"}):
            widths = spec.prepare_filters(1.0, budget=budget, round_to=8, **kwargs)
            assert all(w % 8 == 0 for w in widths)
            count = scaling.resource_counter(model, budget, 100 if model == "mobilenetv2" else 10)
            goal = count(spec.DEFAULT_WIDTHS)
            assert abs(count(widths) - goal) <= 0.005 * goal
    assert spec.prepare_filters(0.5, method="uniform", round_to=1) == spec.prepare_filters(0.5)  # the authors'


def test_a_latency_budget_needs_the_model():
    with pytest.raises(ValueError, match="latency model"):
        MODELS["vgg"].prepare_filters(0.5, budget="latency")


def test_bad_latency_targets_are_refused():
    assert [scaling.parse_latency(t) for t in ("12ms", "12", "12.5 ms", "0.5s", "1e1ms")] == [12, 12, 12.5, 500, 10]
    for bad in ("0ms", "-1", "nan", "12 parsecs", "inf", "ms", "", "1e999"):
        with pytest.raises(UserError, match="--target_latency takes a positive latency"):
            scaling.parse_latency(bad)
    with pytest.raises(UserError, match="not both"):
        scaling.resolve_budget(None, target_macs=["1M"], target_latency=["12ms"])
    with pytest.raises(UserError, match="cannot go with --budget macs"):
        scaling.resolve_budget("macs", target_latency=["12ms"])
    assert scaling.resolve_budget(None, target_latency=["12ms"]) == "latency"


def refused(capsys, argv):
    """list_architecture.py run in this process through run_main: its exit status and stderr lines."""
    import list_architecture
    from utils.base import run_main
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: list_architecture.main([str(arg) for arg in argv]))
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("target", ["0ms", "-1", "nan", "12 parsecs"])
def test_bad_latency_targets_are_refused_in_one_line(tmp_path, capsys, target):
    code, lines = refused(capsys, ["--model", "vgg", "--dataset", "CIFAR10", "--record_dir", tmp_path,
                                   "--target_latency", target])
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: --target_latency takes a positive latency") and repr(target) in lines[0]
    assert list(tmp_path.iterdir()) == []  # no table was built


@pytest.mark.parametrize("budget", ["params", "macs"])
def test_a_count_record_is_refused_under_a_latency_budget(tmp_path, capsys, budget):
    """A record fitted on parameters or MACs, used with --budget latency: one line, before any timing."""
    io.save_fits(tmp_path / "rec.pk", [synthetic_fits("vgg", 0)], budget=budget)
    code, lines = refused(capsys, ["--model", "vgg", "--dataset", "CIFAR10", "--record_dir", tmp_path,
                                   "--prune_fname", "rec", "--budget", "latency"])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert f"was fitted on {budget}" in lines[0] and "not latency" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.pk"]  # no table was built


def test_latency_fit_uses_the_prediction_as_tau():
    """fit_power_law with budget latency regresses ln(width) on ln(predicted ms)."""
    from utils.fit import fit_power_law
    table = fake_table("vgg", 10, 32)
    alpha, beta = synthetic_fits("vgg", 4)
    rows = [[max(1, int(w)) for w in alpha * tau ** beta] for tau in np.geomspace(2, 200, 10)]
    fitted_alpha, fitted_beta = fit_power_law(rows, "vgg", 10, budget="latency", cost=table.predict)
    taus = np.log([table.predict(r) for r in rows])
    design = np.stack([taus, np.ones_like(taus)], axis=1)
    expected = np.linalg.lstsq(design, np.log(np.array(rows, dtype=np.float64)), rcond=None)[0]
    np.testing.assert_allclose(fitted_beta, expected[0], rtol=1e-8)
    assert math.isfinite(fitted_alpha.sum())


@pytest.mark.slow
def test_latency_budget_end_to_end(tmp_path):
    """Search, refit, swipe (at a ratio, at an absolute budget, rounded to 8), list and table under
    --budget latency, with a table the test wrote where the scripts look for it: they reuse it (nothing
    is timed), and every record and result says which budget made it."""
    from conftest import run_script
    rec, plots = tmp_path / "rec", tmp_path / "plots"
    table = table_for_scripts(rec, latency_model.Target("vgg", 10, 32, threads=1, gates=True))
    one = {"OMP_NUM_THREADS": "1"}
    folders = ["--record_dir", rec, "--plots_dir", plots, "--models_dir", tmp_path / "models", "--figs_dir",
               tmp_path / "figs"]
    synth = ["--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--budget", "latency", *folders]
    out = run_script("architecture_descent.py", *synth, "--subset", "256", "--batch-size", "32", "--warmup", "1",
                     "--iterations", "2", "--prune_every", "1", "--prune_per_step", "100", "--search_ratio", "0.5",
                     "--save", "lat", env=one).stdout
    assert "ms predicted" in out and "measuring" not in out
    assert io.load_pickle(rec / "lat.pk")["budget"] == "latency"
    assert io.load_pickle(rec / "lat_param1.pk")["settings"]["latency_batch"] == 100
    goal = table.predict(MODELS["vgg"].prepare_filters(0.5))
    start = io.read_prune_csv(rec / "lat_1.csv")[0]  # iteration 1 began at the budget, before pruning
    assert np.all(start <= MODELS["vgg"].prepare_filters(0.5, budget="latency", cost=table.predict, search=True,
                                                         **dict(zip(("alpha", "beta"), io.load_fits(rec / "lat.pk")[0]))))
    beta = io.load_fits(rec / "lat.pk", 8, "latency")[1][1]
    run_script("fit_params.py", "--model", "vgg", "--dataset", "synthetic", "--prune_fname", "lat", "--record_dir",
               rec, "--budget", "latency", "--device", "cpu", env=one)
    np.testing.assert_array_equal(io.load_fits(rec / "lat.pk", 8, "latency")[1][1], beta)

    train = [*synth, "--subset", "64", "--test_subset", "64", "--batch-size", "32", "--epochs", "1", "--no_latency",
             "--prune_fname", "lat", "--descent_idx", "1"]
    run_script("ratio_swipe.py", *train, "--ratios", "0.25", "--round_to", "8", "--save", "ns_0", env=one)
    run_script("ratio_swipe.py", *train, "--target_latency", "9.5ms", "--save", "ns_0", env=one)
    at_ratio, absolute = (io.load_result(plots / "vgg" / f"ns_0_{tag}.pk") for tag in ("25", "latency9.5ms"))
    budget = table.predict(MODELS["vgg"].prepare_filters(0.25))
    assert all(w % 8 == 0 for w in at_ratio["widths"]) and at_ratio["round_to"] == 8
    assert abs(table.predict(at_ratio["widths"]) - budget) <= 0.02 * budget
    assert at_ratio["latency_predicted_ms"] == pytest.approx(table.predict(at_ratio["widths"]))
    assert at_ratio["latency_budget_ms"] == pytest.approx(budget) and at_ratio["latency_ms"] is None
    assert absolute["budget"] == at_ratio["budget"] == "latency" and absolute["target"] == 9.5
    assert abs(absolute["latency_predicted_ms"] - 9.5) <= 0.02 * 9.5 and absolute["ratio"] is None

    listed = run_script("list_architecture.py", *synth[:6], "--prune_fname", "lat", "--descent_idx", "1",
                        "--ratios", "0.25", "--round_to", "8", "--budget", "latency", "--json", *folders, env=one)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["widths"] == at_ratio["widths"] and row["latency_predicted_ms"] == pytest.approx(
        at_ratio["latency_predicted_ms"], abs=1e-4)
    shown = run_script("plot_ratio.py", *synth[:6], "--budget", "latency", "--round_to", "8", "--ratios", "0.25",
                       "--seeds", "0", "--methods", "neuralscale_it15", "--prune_fname", "lat", "--late_idx", "1",
                       "--late_name", "ns", "--no_latency", "--no_figs", *folders, env=one)
    assert "VGG11 synthetic, equal ms of predicted latency" in shown.stdout
    assert f"| {at_ratio['latency_predicted_ms']:.2f}ms |" in shown.stdout and "Predicted" in shown.stdout
    assert "measuring" not in listed.stderr + shown.stderr + listed.stdout


def test_top_up_exchanges_a_step_when_every_single_step_overshoots():
    """Under the budget at [5, 5] (85) and over it after any one more unit (92, 95): moving a unit from
    the second layer to the first lands on 88, within 1 %; with steps of 2 the same holds."""
    def count(widths):
        return 10 * widths[0] + 7 * widths[1]

    assert scaling.top_up([5, 5], np.array([5.5, 5.5]), 88, count, 0.01) == [6, 4]
    assert scaling.top_up([6, 6], np.array([6.0, 6.0]), 108, count, 0.01, step=2) == [8, 4]
    assert scaling.top_up([5, 5], np.array([5.5, 5.5]), 88.5, lambda w: 10 * w[0] + 10 * w[1], 0.001) is None
    assert scaling.rounded([7.9, 8.0, 17.5, 0.4], 8) == [8, 8, 16, 8] and scaling.rounded([7.9, 0.4]) == [7, 0]


def test_time_forward_with_an_injected_clock():
    """The unit protocol: UNIT_WARMUP passes, then UNIT_TIMED passes between two clock readings (after a
    synchronisation each), in eval mode; ms per pass."""
    calls, readings, syncs = [], iter([1.0, 1.05]), []

    class Count(torch.nn.Module):
        def forward(self, x):
            calls.append((x.shape, self.training))
            return x

    ms = latency_model.time_forward(Count(), (3, 4, 4), device="cpu", precision="fp32", batch=2,
                                    clock=lambda: next(readings), synchronize=syncs.append)
    assert ms == pytest.approx(50.0 / latency_model.UNIT_TIMED)
    assert len(calls) == latency_model.UNIT_WARMUP + latency_model.UNIT_TIMED and len(syncs) == 2
    assert all(shape == (2, 3, 4, 4) and not training for shape, training in calls)
