"""Budgets beyond the paper: --budget macs (the search, the fit and the rescaling meet MACs per image),
absolute budgets (--target_params, --target_macs), records that say their resource, and the MACs
search end to end on synthetic data."""
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_script
from model import MODELS
from utils import io, scaling
from utils.base import UserError
from utils.fit import fit_power_law
from utils.params import count_macs, count_params

# (model, classes): CIFAR (32x32) for all three; TinyImageNet (64x64, 200 classes) where the model runs.
SHAPES = [("vgg", 10), ("vgg", 100), ("resnet18", 100), ("resnet18", 200), ("mobilenetv2", 100),
          ("mobilenetv2", 200)]
RATIOS = (0.25, 1.0, 2.0)
AUTHORS_RECORDS = {("vgg", 10): "vgg_10_eff_c10", ("vgg", 100): "vgg2_10_eff_c100",
                   ("mobilenetv2", 100): "mobilenetv2_10_eff_c100",
                   ("mobilenetv2", 200): "mobilenetv2_15_eff_tinyimagenet"}  # none for ResNet18 published
SYNTH = ["--model", "vgg", "--dataset", "synthetic", "--device", "cpu"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def macs(model, widths, classes):
    return count_macs(model, widths, classes, scaling.input_size(classes))


def synthetic_fits(model, seed):
    """(alpha, beta) with per-layer exponents in [0.2, 0.8]: shapes unlike uniform scaling."""
    default = np.array(MODELS[model].DEFAULT_WIDTHS, dtype=np.float64)
    beta = np.random.default_rng(seed).uniform(0.2, 0.8, default.size)
    return default / 1e8 ** beta, beta


def pruned(model, seed):
    default = np.array(MODELS[model].DEFAULT_WIDTHS, dtype=np.float64)
    return [max(1, int(w)) for w in default * np.random.default_rng(seed).uniform(0.2, 0.8, default.size)]


def assert_meets_uniform_macs(model, classes, ratio, **kwargs):
    spec = MODELS[model]
    widths = spec.prepare_filters(ratio, num_classes=classes, budget="macs", **kwargs)
    target = macs(model, spec.prepare_filters(ratio, num_classes=classes), classes)
    got = macs(model, widths, classes)
    assert abs(got - target) <= 0.005 * target, (model, classes, ratio, got, target, widths)
    assert min(widths) >= 1
    return widths


@pytest.mark.parametrize("model,classes", SHAPES)
def test_macs_budget_meets_the_uniform_networks_macs(model, classes):
    """NeuralScale (two fits), MorphNet-style rescaling and uniform scaling all land within 0.5 % of the
    uniform network's MACs at every ratio."""
    for ratio in RATIOS:
        shapes = set()
        for seed in (0, 1):
            alpha, beta = synthetic_fits(model, seed)
            widths = assert_meets_uniform_macs(model, classes, ratio, alpha=alpha, beta=beta)
            shapes.add(tuple(widths))
            # In the search, ResNet18 and MobileNetV2 add 10 to widths below 10 once the budget is met.
            bumped = scaling.bump_small(widths) if model != "vgg" else widths
            assert MODELS[model].prepare_filters(ratio, num_classes=classes, budget="macs", alpha=alpha,
                                                 beta=beta, search=True) == bumped
            assert_meets_uniform_macs(model, classes, ratio, pruned_widths=pruned(model, seed))
        # The fits matter (both laws pass through the default widths, which ratio 1 gives back).
        assert len(shapes) == (1 if ratio == 1 else 2)
        assert assert_meets_uniform_macs(model, classes, ratio) == \
            MODELS[model].prepare_filters(ratio, num_classes=classes)  # uniform is its own budget


@pytest.mark.parametrize("model,classes", sorted(AUTHORS_RECORDS))
def test_macs_fit_of_the_authors_records(reference, model, classes):
    """The authors' last-iteration record refitted with tau = MACs: the law holds (widths grow with
    MACs) and the MACs search meets the budget at every ratio."""
    name = AUTHORS_RECORDS[(model, classes)]
    rows = io.read_prune_csv(reference / "prune_record" / f"{name}_14.csv")
    alpha, beta = fit_power_law(rows, model, classes, budget="macs")
    alpha_p, beta_p = fit_power_law(rows, model, classes)
    assert np.all(beta > 0) and not np.allclose(beta, beta_p)  # another tau, another law
    for ratio in RATIOS:
        assert_meets_uniform_macs(model, classes, ratio, alpha=alpha, beta=beta)
        # The parameter budget of the same record stays the authors' path (bit for bit elsewhere).
        assert MODELS[model].prepare_filters(ratio, num_classes=classes, alpha=alpha_p, beta=beta_p,
                                             budget="params") == \
            MODELS[model].prepare_filters(ratio, num_classes=classes, alpha=alpha_p, beta=beta_p)


def test_macs_fit_uses_macs_as_tau():
    """Rows on an exact power law in MACs give that law back."""
    model, classes = "vgg", 10
    alpha, beta = synthetic_fits(model, 3)
    rows = []
    for tau in np.geomspace(2e6, 2e8, 12):
        rows.append([int(w) for w in alpha * tau ** beta])
    fitted_alpha, fitted_beta = fit_power_law(rows, model, classes, budget="macs")
    taus = np.array([macs(model, r, classes) for r in rows], dtype=np.float64)
    design = np.stack([np.log(taus), np.ones_like(taus)], axis=1)
    expected = np.linalg.lstsq(design, np.log(np.array(rows, dtype=np.float64)), rcond=None)[0]
    np.testing.assert_allclose(fitted_beta, expected[0], rtol=1e-8)
    np.testing.assert_allclose(fitted_alpha, np.exp(expected[1]), rtol=1e-8)


@pytest.mark.parametrize("model,classes", [("vgg", 10), ("resnet18", 100), ("mobilenetv2", 200)])
def test_absolute_parameter_budget(model, classes):
    spec = MODELS[model]
    alpha, beta = synthetic_fits(model, 0)
    for kwargs in ({}, {"alpha": alpha, "beta": beta}, {"pruned_widths": pruned(model, 0)}):
        widths = spec.prepare_filters(None, num_classes=classes, target=1_500_000, **kwargs)
        got = count_params(model, widths, classes, exact=True)
        assert abs(got - 1_500_000) <= 0.005 * 1_500_000, (kwargs.keys(), got)
    widths = spec.prepare_filters(None, num_classes=classes, target=300_000_000, budget="macs")
    assert abs(macs(model, widths, classes) - 3e8) <= 0.005 * 3e8


@pytest.mark.parametrize("model", ["vgg", "resnet18", "mobilenetv2"])
def test_unmeetable_budgets_fail_in_bounded_searches(model):
    spec = MODELS[model]
    with pytest.raises(scaling.BudgetError, match=rf"{model} at --target_params 10: no configuration "
                                                  r"meets the budget of 10 parameters"):
        spec.prepare_filters(None, target=10)
    with pytest.raises(scaling.BudgetError, match=r"--target_macs .* MACs per image"):
        spec.prepare_filters(None, target=10 ** 60, budget="macs")  # past 64 doublings of the scale
    alpha, beta = synthetic_fits(model, 0)
    with pytest.raises(scaling.BudgetError, match=rf"{model} at ratio 0.5: .* MACs per image"):
        spec.prepare_filters(0.5, alpha=alpha, beta=-beta, budget="macs")  # widths shrink as tau grows


def test_parse_count_and_resolve_budget():
    assert [scaling.parse_count(t, "--x") for t in ("1.5M", "300M", "64k", "2G", "20000", "1e6", "2.5m")] == \
        [1_500_000, 300_000_000, 64_000, 2_000_000_000, 20_000, 1_000_000, 2_500_000]
    for bad in ("0", "-1M", "M", "abc", "nan", "inf", "1.5X", ""):
        with pytest.raises(UserError, match="--x takes a positive count"):
            scaling.parse_count(bad, "--x")
    assert scaling.resolve_budget(None) == "params"
    assert scaling.resolve_budget("macs") == "macs"
    assert scaling.resolve_budget(None, target_macs=["1M"]) == "macs"
    assert scaling.resolve_budget("params", target_params=["1M"]) == "params"
    with pytest.raises(UserError, match="cannot go with --budget params"):
        scaling.resolve_budget("params", target_macs=["1M"])
    with pytest.raises(UserError, match="not both"):
        scaling.resolve_budget(None, target_params=["1M"], target_macs=["1M"])


def test_records_say_their_resource(tmp_path):
    fits = [(np.ones(8), np.full(8, 0.5))]
    io.save_fits(tmp_path / "p.pk", fits)
    io.save_fits(tmp_path / "m.pk", fits, budget="macs")
    assert set(io.load_pickle(tmp_path / "p.pk")) == {"param"}  # the authors' format, unchanged
    assert io.load_pickle(tmp_path / "m.pk")["budget"] == "macs"
    assert len(io.load_fits(tmp_path / "m.pk", 8, "macs")) == 1
    assert len(io.load_fits(tmp_path / "p.pk", 8, "params")) == 1
    with pytest.raises(UserError, match="fitted on macs .* not params"):
        io.load_fits(tmp_path / "m.pk", 8, "params")
    with pytest.raises(UserError, match="fitted on params .* not macs"):
        io.load_fits(tmp_path / "p.pk", 8, "macs")


def test_absolute_and_ratio_tags_never_collide():
    ratio_tags = {str(io.budget_tag(r / 100)) for r in range(1, 100_000)}
    absolute = {io.budget_tag(None, res, t) for res in scaling.RESOURCES for t in (1, 25, 1_500_000, 3e8)}
    assert len(absolute) == 4 * len(scaling.RESOURCES) and not ratio_tags & absolute
    assert io.budget_tag(None, "params", 1_500_000) == "params1500000"
    assert io.budget_tag(None, "latency", 12.5) == "latency12.5ms"


@pytest.mark.slow
def test_macs_search_end_to_end(tmp_path):
    """Descent and fit on MACs, a swipe at a ratio and at an absolute MACs budget, the table; the record
    is refused by parameter-budget tools, each in one line."""
    rec, plots = tmp_path / "rec", tmp_path / "plots"
    folders = ["--record_dir", rec, "--plots_dir", plots, "--models_dir", tmp_path / "models",
               "--figs_dir", tmp_path / "figs"]
    out = run_script("architecture_descent.py", *SYNTH, "--subset", "256", "--batch-size", "32", "--warmup", "1",
                     "--iterations", "2", "--prune_every", "1", "--prune_per_step", "100", "--search_ratio",
                     "0.5", "--budget", "macs", "--save", "m", *folders, env=ONE_THREAD).stdout
    assert "MACs" in out
    record = io.load_pickle(rec / "m.pk")
    assert record["budget"] == "macs"
    assert io.load_pickle(rec / "m_param1.pk")["budget"] == "macs"
    alpha, beta = io.load_fits(rec / "m.pk", 8, "macs")[1]
    # Iteration 1 started from iteration 0's MACs law at the search budget.
    start = io.read_prune_csv(rec / "m_1.csv")[0]
    widths = MODELS["vgg"].prepare_filters(0.5, num_classes=10, budget="macs", search=True, first_iteration=True,
                                           **dict(zip(("alpha", "beta"), io.load_fits(rec / "m.pk", 8, "macs")[0])))
    assert np.all(start <= widths)
    # fit_params refits the CSVs on MACs and writes the same record.
    run_script("fit_params.py", "--model", "vgg", "--dataset", "synthetic", "--prune_fname", "m",
               "--record_dir", rec, "--budget", "macs")
    np.testing.assert_array_equal(io.load_fits(rec / "m.pk", 8, "macs")[1][1], beta)

    train = [*SYNTH, "--no_latency", "--subset", "64", "--test_subset", "64", "--batch-size", "32", "--epochs",
             "1", "--prune_fname", "m", "--descent_idx", "1", *folders]
    run_script("ratio_swipe.py", *train, "--budget", "macs", "--ratios", "0.25", "--save", "ns_0",
               env=ONE_THREAD)
    run_script("ratio_swipe.py", *train, "--target_macs", "5M", "--save", "ns_0", env=ONE_THREAD)
    at_ratio = io.load_result(plots / "vgg" / "ns_0_25.pk")
    absolute = io.load_result(plots / "vgg" / "ns_0_macs5000000.pk")
    uniform = MODELS["vgg"].prepare_filters(0.25, num_classes=10)
    assert abs(macs("vgg", at_ratio["widths"], 10) - macs("vgg", uniform, 10)) <= 0.005 * macs("vgg", uniform, 10)
    assert abs(macs("vgg", absolute["widths"], 10) - 5e6) <= 0.005 * 5e6
    assert at_ratio["budget"] == absolute["budget"] == "macs" and absolute["target"] == 5_000_000
    assert absolute["ratio"] is None and at_ratio["ratio"] == 0.25

    # The table: the MACs-searched rows, sorted by MACs, against the MACs axis.
    proc = run_script("plot_ratio.py", "--model", "vgg", "--dataset", "synthetic", "--ratios", "0.25",
                      "--seeds", "0", "--macs_record", "m", "--late_idx", "1", "--macs_name", "ns",
                      "--methods", "neuralscale_macs", "--x", "macs", "--json", "--no_latency", *folders)
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["method"] == "neuralscale_macs" and row["widths"] == at_ratio["widths"]
    assert row["n_seeds"] == 1 and row["macs"] == macs("vgg", at_ratio["widths"], 10)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["macs_acc_vgg_synthetic.pdf",
                                                                    "macs_acc_vgg_synthetic.png"]

    # A MACs record used under a parameter budget: one line, nothing written.
    before = sorted(p.name for p in (plots / "vgg").iterdir())
    refused = run_script("ratio_swipe.py", *train, "--ratios", "0.5", "--save", "ns_p", check=False)
    assert_one_line_error(refused)
    assert "fitted on macs" in refused.stderr
    assert sorted(p.name for p in (plots / "vgg").iterdir()) == before
    assert_one_line_error(run_script("list_architecture.py", "--model", "vgg", "--dataset", "synthetic",
                                     "--prune_fname", "m", "--record_dir", rec, check=False))
    assert_one_line_error(run_script("architecture_descent.py", *SYNTH, "--iterations", "2", "--save", "m",
                                     *folders, check=False))  # resuming it under params


@pytest.mark.slow
def test_list_architecture_absolute_budgets():
    proc = run_script("list_architecture.py", "--model", "resnet18", "--dataset", "CIFAR100", "--target_params",
                      "1.5M", "--json")
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert abs(row["params"] - 1_500_000) <= 7_500 and row["target"] == 1_500_000 and row["ratio"] is None
    for flags, words in ((["--target_params", "10"], "resnet18 at --target_params 10: no configuration meets "
                                                     "the budget of 10 parameters"),
                         (["--target_macs", "1M", "--budget", "params"], "cannot go with"),
                         (["--target_macs", "1M", "--ratios", "1"], "not both"),
                         (["--target_macs", "lots"], "positive count")):
        bad = run_script("list_architecture.py", "--model", "resnet18", "--dataset", "CIFAR100", *flags,
                         check=False)
        assert_one_line_error(bad)
        assert words in bad.stderr
