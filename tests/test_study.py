"""`make study` (issue 22) at a tiny scale: the Makefile's own chain on Fashion-MNIST IDX files written
here, with a latency table the test wrote where the chain looks for it (nothing is timed)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_fashion_mnist
from model import MODELS
from test_latency_model import table_for_scripts
from utils import io, latency_model
from utils.params import count_macs

pytestmark = pytest.mark.slow  # scripts run end to end

TINY = {"STUDY_SUBSET": "320", "STUDY_TEST_SUBSET": "100", "STUDY_SEARCH_RATIO": "0.25", "STUDY_ITERATIONS": "2",
        "STUDY_WARMUP": "1", "STUDY_SEARCH_BATCH": "32", "STUDY_PRUNE_EVERY": "1", "STUDY_PRUNE_PER_STEP": "20",
        "STUDY_EPOCHS": "2", "STUDY_RATIOS": "0.25", "STUDY_SEEDS": "0", "STUDY_TABLE_FLAGS": "--no_latency",
        "STUDY_PLATEAU": "100"}  # wired through, but any rise is < 100 points: 2 epochs (tests/test_plateau.py)


def test_study_chain(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    data_dir, runs = tmp_path / "data", tmp_path / "runs"
    write_fashion_mnist(str(data_dir), n_train=400, n_test=120)
    target = latency_model.Target("vgg", 10, 32, "cpu", "bf16", 100, True, "cpu", threads=1)
    table = table_for_scripts(runs / "prune_record", target)
    args = ["make", "--no-print-directory", "study", "INSTALLED=", f"PY={sys.executable}", f"DATA_DIR={data_dir}",
            f"STUDY_DIR={runs}", *(f"{k}={v}" for k, v in TINY.items())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "measuring on" not in proc.stdout + proc.stderr  # the table was reused, never rebuilt

    for budget in ("params", "macs", "latency"):
        assert io.load_pickle(runs / "prune_record" / f"fmnist_{budget}.pk").get("budget", "params") == budget
    plots = runs / "saved_plots" / "vgg"
    uniform = io.load_result(plots / "vgg_uni_fmnist_0_25.pk")
    assert uniform["widths"] == MODELS["vgg"].prepare_filters(0.25)
    macs = count_macs("vgg", uniform["widths"], 10, 32)
    goal = table.predict(uniform["widths"])
    for method in ("pruned", "ns"):
        by_macs = io.load_result(plots / f"vgg_{method}_macs_fmnist_0_25.pk")
        by_latency = io.load_result(plots / f"vgg_{method}_latency_fmnist_0_25.pk")
        assert abs(count_macs("vgg", by_macs["widths"], 10, 32) - macs) <= 0.005 * macs
        assert abs(table.predict(by_latency["widths"]) - goal) <= 0.02 * goal
        assert by_latency["budget"] == "latency" and by_latency["precision"] == "bf16"
        assert by_latency["latency_predicted_ms"] == pytest.approx(table.predict(by_latency["widths"]))
        assert io.load_result(plots / f"vgg_{method}_params_fmnist_0_25.pk")["params"] == pytest.approx(
            uniform["params"], rel=0.01)
    # Three tables, one per budget, each with the three methods and the plateau evidence.
    for heading in ("## VGG11 FashionMNIST\n", "## VGG11 FashionMNIST, equal MACs per image",
                    "## VGG11 FashionMNIST, equal ms of predicted latency"):
        assert heading in proc.stdout
    assert proc.stdout.count("| Uniform Scale (Baseline) | 0.25 |") == 3
    assert proc.stdout.count("NeuralScale (Iteration = 2) | 0.25 |") == 3
    # Every network trained under --plateau (STUDY_PLATEAU), and the tables say how far it rose.
    assert proc.stdout.count("Plateau: over the last quarter of the 2 epochs") == 3
    for path in plots.glob("*.pk"):
        result = io.load_result(path)
        assert result["settings"]["plateau"] == 100 and result["epochs_run"] == 2
