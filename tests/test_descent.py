"""architecture_descent.py / imagenet_architecture_descent.py end to end on synthetic data (CPU):
records, fits, the hand-off to list_architecture.py, --morph, resume after a kill, and bad input."""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, run_script
from model import get_spec
from utils.io import load_fits, load_pickle, read_prune_csv

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

UNSEEDED = ["--dataset", "synthetic", "--subset", "256", "--batch-size", "32", "--warmup", "1",
            "--iterations", "2", "--prune_every", "1", "--prune_per_step", "100", "--device", "cpu"]
DEMO = [*UNSEEDED, "--seed", "0"]
# ResNet18 and MobileNetV2 are slow on a CPU: fewer images and a quarter of the budget.
SMALL = ["--dataset", "synthetic", "--subset", "8", "--batch-size", "4", "--warmup", "1", "--iterations", "2",
         "--prune_every", "1", "--prune_per_step", "100", "--search_ratio", "0.25", "--device", "cpu",
         "--seed", "0"]
RECORD_FILES = ["demo_0.csv", "demo_1.csv", "demo_param0.pk", "demo_param1.pk", "demo.pk"]
# Tiny batches run faster on one thread, and much faster when other jobs share the two cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def dirs(root):
    return ["--record_dir", root / "records", "--models_dir", root / "models"]


def search(root, model, flags, *extra, script="architecture_descent.py", check=True):
    return run_script(script, "--model", model, *flags, *dirs(root), "--save", "demo", *extra, check=check,
                      env=ONE_THREAD)


def check_record(records, model, iterations, stdout, fraction=0.95, per_step=100, num_classes=10, ratio=1.0):
    """Each CSV: one column per gated layer, non-increasing columns, per_step units fewer per row (the
    last step may take a smaller remainder up to the cap); it ends at the cap, or earlier by the
    last-unit rule (whose step is not recorded). Iteration k >= 1 started from iteration k-1's fit; the
    .pk holds every per-iteration fit."""
    logs = re.split(r"iteration \d+: widths", stdout)[1:]  # one log per iteration
    spec = get_spec(model)
    fits = load_fits(records / "demo.pk", num_layers=len(spec.DEFAULT_WIDTHS))
    assert len(fits) == iterations
    for k in range(iterations):
        rows = read_prune_csv(records / f"demo_{k}.csv", num_layers=len(spec.DEFAULT_WIDTHS))
        if k == 0:
            start = spec.prepare_filters(ratio, num_classes=num_classes)
        else:
            alpha, beta = fits[k - 1]
            start = spec.prepare_filters(ratio, num_classes=num_classes, alpha=alpha, beta=beta, search=True,
                                         first_iteration=True)
        assert np.all(rows[0] <= start) and np.all(np.diff(rows, axis=0) <= 0)
        totals = rows.sum(1)
        assert np.all(totals[:-2] - totals[1:-1] >= per_step)
        assert len(totals) == 1 or totals[-2] > totals[-1]
        cap = sum(start) - int(fraction * sum(start))
        assert totals[-1] > cap if "last-unit rule" in logs[k] else totals[-1] == cap
        per_iteration = load_pickle(records / f"demo_param{k}.pk")
        np.testing.assert_array_equal(per_iteration["train_alpha"], fits[k][0])
        np.testing.assert_array_equal(per_iteration["train_beta"], fits[k][1])
    return fits


@pytest.fixture(scope="module")
def vgg_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg_search")
    return root, search(root, "vgg", DEMO)


def test_vgg_search_writes_records_and_fits(vgg_search):
    root, proc = vgg_search  # speed is a benchmark's business (bench/), never a timed assertion
    records = root / "records"
    assert sorted(p.name for p in records.iterdir()) == sorted(RECORD_FILES)
    fits = check_record(records, "vgg", 2, proc.stdout)
    assert len(read_prune_csv(records / "demo_0.csv")) >= 6 and np.all(fits[0][1] > 0)  # a real fit
    assert "prune step 1/27: 2652 of 2752 units left" in proc.stdout
    assert re.search(r"iteration 0 epoch 1: lr 0\.01 loss [\d.]+ acc [\d.]+ units left 2752/2752", proc.stdout)
    assert not (root / "models").exists()  # the search's weights are never saved (as the authors)


def list_architecture(root, model, *extra):
    if not (REPO / "list_architecture.py").exists():
        pytest.skip("list_architecture.py is not written yet")
    proc = run_script("list_architecture.py", "--model", model, "--dataset", "synthetic", "--prune_fname", "demo",
                      "--record_dir", root / "records", "--json", *extra)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_list_architecture_reads_the_search_record(vgg_search):
    root = vgg_search[0]
    lines = list_architecture(root, "vgg", "--ratios", "0.5", "1")
    assert {line["descent_idx"] for line in lines} == {0, 1}
    assert all(len(line["widths"]) == 8 and line["params"] > 0 for line in lines)


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv2"])
def test_resnet18_and_mobilenetv2_searches(tmp_path, model):
    proc = search(tmp_path, model, SMALL)
    check_record(tmp_path / "records", model, 2, proc.stdout, ratio=0.25)
    lines = list_architecture(tmp_path, model, "--ratios", "0.5")
    assert len(lines) == 2 and all(len(line["widths"]) == len(get_spec(model).DEFAULT_WIDTHS) for line in lines)


def test_morph_prunes_half_and_prints_the_pruned_filters_line(tmp_path):
    proc = search(tmp_path, "vgg", ["--dataset", "synthetic", "--subset", "256", "--batch-size", "32",
                                    "--warmup", "0", "--prune_every", "1", "--prune_per_step", "100",
                                    "--device", "cpu", "--morph", "--seed", "0"])
    records = tmp_path / "records"
    assert sorted(p.name for p in records.iterdir()) == ["demo.pk", "demo_0.csv", "demo_param0.pk"]
    check_record(records, "vgg", 1, proc.stdout, fraction=0.5)
    last = read_prune_csv(records / "demo_0.csv")[-1]
    assert last.sum() == 1376
    assert f'("vgg", "synthetic"): {last.tolist()},' in proc.stdout.splitlines()


def test_resume_after_a_kill_matches_an_uninterrupted_run(vgg_search, tmp_path):
    args = [sys.executable, "architecture_descent.py", "--model", "vgg", *DEMO, *dirs(tmp_path), "--save", "demo"]
    records = tmp_path / "records"
    proc = subprocess.Popen(list(map(str, args)), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **ONE_THREAD})
    try:
        deadline = time.monotonic() + 120
        while not (records / "demo_param0.pk").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "iteration 0 never finished"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    # Killed during iteration 1: iteration 0's files only.
    assert sorted(p.name for p in records.iterdir() if not p.name.startswith(".")) == [
        "demo_0.csv", "demo_param0.pk"]
    resumed = search(tmp_path, "vgg", UNSEEDED)  # no --seed: it continues with the stored seed 0
    assert "seed 0 (stored in" in resumed.stdout and load_pickle(records / "demo_param1.pk")["seed"] == 0
    assert "iteration 0: resumed from" in resumed.stdout and "iteration 0: widths" not in resumed.stdout
    assert "iteration 1: widths" in resumed.stdout
    reference = vgg_search[0] / "records"
    for name in RECORD_FILES:
        assert (records / name).read_bytes() == (reference / name).read_bytes(), name


def test_pruning_not_finished_within_epochs_is_an_error(tmp_path):
    proc = search(tmp_path, "vgg", ["--dataset", "synthetic", "--subset", "64", "--batch-size", "32",
                                    "--warmup", "1", "--epochs", "2", "--device", "cpu"], check=False)
    assert_one_line_error(proc)
    assert "--epochs 2" in proc.stderr and "--prune_every" in proc.stderr
    assert list((tmp_path / "records").glob("*")) == []  # no CSV, no .pk (no folder: nothing was written)


@pytest.mark.parametrize("script,model,dataset", [
    ("imagenet_architecture_descent.py", "vgg", "tinyimagenet"),
    ("architecture_descent.py", "mobilenetv2", "tinyimagenet"),
])
def test_unknown_model_dataset_pair(tmp_path, script, model, dataset):
    proc = search(tmp_path, model, ["--dataset", dataset, "--device", "cpu"], script=script, check=False)
    assert_one_line_error(proc)
    assert not (tmp_path / "records").exists()


def test_unwritable_record_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_script("architecture_descent.py", "--dataset", "synthetic", "--device", "cpu", "--record_dir",
                      blocker / "records", "--models_dir", tmp_path / "models", check=False)
    assert_one_line_error(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"] and blocker.read_text() == "not a folder"


def test_help_shows_the_tinyimagenet_defaults():
    out = run_script("imagenet_architecture_descent.py", "--help").stdout
    for flag, default in [("--batch-size", "100"), ("--prune_every", "100"), ("--model", "mobilenetv2"),
                          ("--epochs", "300"), ("--momentum", "0.5"), ("--warmup", "10")]:
        assert re.search(rf"{flag}.*\(default: {default}\)", " ".join(out.split())), flag
