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
from utils.progress import read_csv

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

UNSEEDED = ["--dataset", "synthetic", "--subset", "256", "--batch-size", "32", "--warmup", "1",
            "--iterations", "2", "--prune_every", "1", "--prune_per_step", "100", "--device", "cpu"]
DEMO = [*UNSEEDED, "--seed", "0"]
# ResNet18 and MobileNetV2 are slow on a CPU: fewer images and a quarter of the budget.
SMALL = ["--dataset", "synthetic", "--subset", "8", "--batch-size", "4", "--warmup", "1", "--iterations", "2",
         "--prune_every", "1", "--prune_per_step", "100", "--search_ratio", "0.25", "--device", "cpu",
         "--seed", "0"]
RECORD_FILES = ["demo_0.csv", "demo_1.csv", "demo_param0.pk", "demo_param1.pk", "demo.pk", "demo_epochs0.csv",
                "demo_epochs1.csv"]
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
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d iteration 0 epoch 1: lr 0\.01 loss [\d.]+ acc [\d.]+ units left "
                     r"2752/2752 \| prune step 0/27, iteration 1/2; elapsed \d:\d\d:\d\d, ETA (\d:\d\d:\d\d)$",
                     proc.stdout, re.M)
    assert not (root / "models").exists()  # the search's weights are never saved (as the authors)
    # The per-epoch CSV of each iteration: one row per epoch the log printed, the units and steps it printed.
    for k in range(2):
        rows = read_csv(records / f"demo_epochs{k}.csv")
        logged = re.findall(rf"iteration {k} epoch (\d+): lr ([\d.e-]+) loss ([\d.]+) acc ([\d.]+) units left "
                            rf"(\d+)/\d+ \| prune step (\d+)/", proc.stdout)
        assert [int(r["epoch"]) for r in rows] == [int(e) for e, *_ in logged] == list(range(1, len(rows) + 1))
        assert [(r["units_left"], r["prune_steps"]) for r in rows] == [(u, s) for *_, u, s in logged]
        assert [round(float(r["train_loss"]), 4) for r in rows] == [float(loss) for _, _, loss, *_ in logged]
        assert rows[-1]["prune_steps"] == "27" and int(rows[-1]["units_left"]) == read_prune_csv(
            records / f"demo_{k}.csv")[-1].sum()
        assert f"iteration {k}: pruning done at epoch {len(rows)} after 27 of 27 steps (every step taken)" \
            in proc.stdout


def test_a_last_step_on_an_epochs_last_minibatch_finishes_the_search(tmp_path):
    """2 minibatches per epoch, no warm-up, a prune every minibatch from the second: the 7th and last
    step lands on epoch 4's last minibatch. The pruner says "done" at the next call, so --epochs 4 used to
    end in "pruning did not finish (7 of 7 steps done)". It finishes, and writes the record that
    --epochs 5 (one more minibatch, as the authors' loop ran) writes."""
    flags = ["--dataset", "synthetic", "--subset", "64", "--batch-size", "32", "--warmup", "0", "--iterations", "1",
             "--prune_every", "1", "--prune_per_step", "400", "--device", "cpu", "--seed", "0"]
    four = search(tmp_path / "four", "vgg", [*flags, "--epochs", "4"])
    assert "prune step 7/7: 138 of 2752 units left" in four.stdout
    assert "iteration 0: pruning done at epoch 4 after 7 of 7 steps (every step taken), 138 of 2752 units left" \
        in four.stdout
    search(tmp_path / "five", "vgg", [*flags, "--epochs", "5"])
    for name in ("demo_0.csv", "demo_param0.pk", "demo_epochs0.csv"):
        assert (tmp_path / "four/records" / name).read_bytes() == (tmp_path / "five/records" / name).read_bytes()


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
    assert sorted(p.name for p in records.iterdir()) == ["demo.pk", "demo_0.csv", "demo_epochs0.csv", "demo_param0.pk"]
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
    # Killed during iteration 1: iteration 0's files only (and iteration 1's CSV when it got past an epoch).
    assert sorted(p.name for p in records.iterdir() if not p.name.startswith(".")) in (
        ["demo_0.csv", "demo_epochs0.csv", "demo_param0.pk"],
        ["demo_0.csv", "demo_epochs0.csv", "demo_epochs1.csv", "demo_param0.pk"])
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
    assert "0 of at most 262 prune steps taken, 2752 of 2752 units left (it prunes to 138)" in proc.stderr
    assert list((tmp_path / "records").glob("*")) == []  # no CSV (not even the per-epoch one), no .pk


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
                      blocker / "records", "--models_dir", tmp_path / "models", "--save", "s", check=False)
    assert_one_line_error(proc)
    assert "cannot write to" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"] and blocker.read_text() == "not a folder"


def test_help_shows_the_tinyimagenet_defaults():
    out = run_script("imagenet_architecture_descent.py", "--help").stdout
    for flag, default in [("--batch-size", "100"), ("--prune_every", "100"), ("--model", "mobilenetv2"),
                          ("--epochs", "300"), ("--momentum", "0.5"), ("--warmup", "10")]:
        assert re.search(rf"{flag}.*\(default: {default}[,)]", " ".join(out.split())), flag
