"""The power-law fit against the authors' stored alpha/beta, its fallback, and the fit_params.py CLI."""
import shutil

import numpy as np
import pytest

from conftest import assert_one_line_error, run_script
from utils.fit import MIN_ROWS, fit_power_law
from utils.io import load_fits, load_pickle, read_prune_csv
from utils.params import count_params

# (series, model, classes, iterations that must re-fit). vgg_10_eff_c10_0.csv is a known defect of the
# authors' data (a copy of _1.csv, reference/README.md), so its iteration 0 cannot be re-fitted.
SERIES = [("vgg_10_eff_c10", "vgg", 10, range(1, 15))]
SERIES += [(f"mobilenetv2_{p}_eff_c100", "mobilenetv2", 100, range(15)) for p in (0, 2, 5, 10, 30, 60)]
SERIES += [(f"mobilenetv2_{p}_eff_tinyimagenet", "mobilenetv2", 200, range(15)) for p in (10, 15, 20)]


@pytest.mark.parametrize("name,model,num_classes,iterations", SERIES, ids=[s[0] for s in SERIES])
def test_fit_reproduces_the_authors_alpha_beta(reference, name, model, num_classes, iterations):
    records = reference / "prune_record"
    stored = load_fits(records / f"{name}.pk")
    assert len(stored) == 15
    for k in iterations:
        alpha, beta = fit_power_law(read_prune_csv(records / f"{name}_{k}.csv"), model, num_classes)
        assert alpha.dtype == beta.dtype == np.float64
        np.testing.assert_allclose(alpha, stored[k][0], rtol=0, atol=1e-12, err_msg=f"{name} k={k}")
        np.testing.assert_allclose(beta, stored[k][1], rtol=0, atol=1e-12, err_msg=f"{name} k={k}")


def test_fit_is_least_squares_of_log_width_on_log_params():
    # Independent of the authors' data: the normal equations equal numpy's lstsq on [ln tau, 1].
    rng = np.random.default_rng(0)
    base = np.array([64, 128, 256, 256, 512, 512, 512, 512])
    rows = np.array([np.maximum(1, (base * s * rng.uniform(0.9, 1.0, 8)).astype(int))
                     for s in np.linspace(1.0, 0.05, 40)])
    rows = np.minimum.accumulate(rows, axis=0)  # a pruning record never grows
    alpha, beta = fit_power_law(rows, "vgg", 10)
    tau = np.array([count_params("vgg", list(r), 10) for r in rows], dtype=float)
    design = np.stack([np.log(tau), np.ones_like(tau)], 1)
    theta = np.linalg.lstsq(design, np.log(rows), rcond=None)[0]
    np.testing.assert_allclose(beta, theta[0], atol=1e-10)
    np.testing.assert_allclose(alpha, np.exp(theta[1]), rtol=1e-10)
    assert np.all(beta > 0)
    # The exact counter is a different tau: for VGG formula == exact, so the fit is the same.
    np.testing.assert_array_equal(fit_power_law(rows, "vgg", 10, exact=True)[1], beta)


def test_fewer_than_six_rows_keep_the_first_row_and_zero_beta():
    rows = np.array([[50, 40, 30], [40, 30, 20], [30, 20, 10]] * 2)[:MIN_ROWS - 1]
    rows = np.pad(rows, ((0, 0), (0, 16)), constant_values=7)  # 19 MobileNetV2 layers
    alpha, beta = fit_power_law(rows, "mobilenetv2", 100)
    np.testing.assert_array_equal(alpha, rows[0].astype(np.float64))
    np.testing.assert_array_equal(beta, np.zeros(19))
    assert alpha.dtype == beta.dtype == np.float64


def test_fit_params_cli_refits_a_copied_series(reference, tmp_path):
    source = reference / "prune_record"
    records = tmp_path / "records"
    records.mkdir()
    for k in range(15):
        shutil.copy(source / f"vgg_10_eff_c10_{k}.csv", records)
    proc = run_script("fit_params.py", "--prune_fname", "vgg_10_eff_c10", "--model", "vgg",
                      "--dataset", "CIFAR10", "--record_dir", records)
    assert proc.stdout.count("alpha = ") == 15
    fits = load_fits(records / "vgg_10_eff_c10.pk")
    stored = load_fits(source / "vgg_10_eff_c10.pk")
    assert len(fits) == 15
    for k in range(1, 15):
        np.testing.assert_allclose(fits[k][0], stored[k][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(fits[k][1], stored[k][1], rtol=0, atol=1e-12)
        per_iteration = load_pickle(records / f"vgg_10_eff_c10_param{k}.pk")
        np.testing.assert_array_equal(per_iteration["train_alpha"], fits[k][0])
        np.testing.assert_array_equal(per_iteration["train_beta"], fits[k][1])
    # The defective _0.csv is a copy of _1.csv, so its fit is the authors' param[1], not param[0].
    np.testing.assert_allclose(fits[0][0], stored[1][0], rtol=0, atol=1e-12)
    assert np.abs(fits[0][0] - stored[0][0]).max() > 0.1

    # Asking for more iterations than recorded is one clear error, and nothing is rewritten.
    before = (records / "vgg_10_eff_c10.pk").read_bytes()
    bad = run_script("fit_params.py", "--prune_fname", "vgg_10_eff_c10", "--model", "vgg", "--dataset",
                     "CIFAR10", "--record_dir", records, "--iterations", "16", check=False)
    assert_one_line_error(bad)
    assert "vgg_10_eff_c10_15.csv" in bad.stderr
    assert (records / "vgg_10_eff_c10.pk").read_bytes() == before
