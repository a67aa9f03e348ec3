"""`make demo` (issue 7) at a tiny scale: the Makefile's own chain on Fashion-MNIST IDX files written
here, every stage's output checked, a second run that reuses everything, and the offline failure."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_fashion_mnist
from utils import data as D
from utils.base import run_main
from utils.io import load_fits, load_pickle, read_prune_csv
from utils.params import count_macs

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

TINY = {"DEMO_SUBSET": "320", "DEMO_TEST_SUBSET": "100", "DEMO_SEARCH_RATIO": "0.25",
        "DEMO_ITERATIONS": "2", "DEMO_WARMUP": "1", "DEMO_SEARCH_BATCH": "32", "DEMO_PRUNE_EVERY": "1",
        "DEMO_PRUNE_PER_STEP": "20", "DEMO_EPOCHS": "2", "DEMO_RATIOS": "0.25", "DEMO_SEEDS": "0 1"}


def make_demo(data_dir, demo_dir):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    args = ["make", "--no-print-directory", "demo", "INSTALLED=", f"PY={sys.executable}",
            f"DATA_DIR={data_dir}", f"DEMO_DIR={demo_dir}", *(f"{k}={v}" for k, v in TINY.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def snapshot(folder):
    """{relative path: (bytes, mtime)} of every file under folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def test_demo_chain_runs_every_stage_and_resumes(tmp_path):
    data_dir, demo = tmp_path / "data", tmp_path / "runs"
    write_fashion_mnist(str(data_dir), n_train=400, n_test=120)
    stdout = make_demo(data_dir, demo)

    # 1. The search: two iterations of 8 VGG11 widths, shrinking, and a fit per iteration.
    record = demo / "prune_record"
    default_units = 64 + 128 + 256 * 2 + 512 * 4
    for k in range(2):
        rows = read_prune_csv(str(record / f"fmnist_search_{k}.csv"))
        assert rows.shape[1] == 8 and len(rows) >= 2
        assert (rows[1:] <= rows[:-1]).all() and (rows >= 1).all()
        assert rows[-1].sum() <= 0.05 * default_units * 0.25 + 100   # pruned to 95 % of the searched network
    fits = load_fits(str(record / "fmnist_search.pk"))
    assert len(fits) == 2 and all(len(alpha) == 8 and len(beta) == 8 for alpha, beta in fits)
    # 2. The MorphNet-style search: one iteration pruned to half.
    morph = read_prune_csv(str(record / "fmnist_morph_0.csv"))
    assert morph.shape[1] == 8 and abs(morph[-1].sum() - 0.5 * 0.25 * default_units) <= 100
    assert not (record / "fmnist_morph_1.csv").exists()

    # 3. The swipe: every method and seed at the ratio, in the authors' result format plus our keys.
    curves = {}
    for stem in ("vgg_uni_fmnist", "vgg_pruned_fmnist", "vgg_late_fmnist"):
        for seed in (0, 1):
            result = load_pickle(str(demo / "saved_plots" / "vgg" / f"{stem}_{seed}_25.pk"))
            assert len(result["train_loss"]) == len(result["test_acc"]) == 2
            assert result["seed"] == seed and len(result["widths"]) == 8 and result["params"] > 0
            curves[stem, seed] = result
    assert curves["vgg_uni_fmnist", 0]["widths"] == [16, 32, 64, 64, 128, 128, 128, 128]
    assert curves["vgg_uni_fmnist", 0]["train_loss"] != curves["vgg_uni_fmnist", 1]["train_loss"]  # seeds differ
    assert curves["vgg_late_fmnist", 0]["widths"] != curves["vgg_uni_fmnist", 0]["widths"]
    budget = curves["vgg_uni_fmnist", 0]["params"]
    for stem in ("vgg_pruned_fmnist", "vgg_late_fmnist"):   # same budget, another shape
        assert abs(curves[stem, 0]["params"] - budget) / budget < 0.1

    # 4. The table and the figures.
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert table[0].split("|")[3:6] == [" Params ", " MACs ", " Latency "]
    rows = {line.split("|")[1].strip(): line.split("|")[3:6] for line in table[2:]}
    assert set(rows) == {"Uniform Scale (Baseline)", "MorphNet (Taylor-FO)", "NeuralScale (Iteration = 2)"}
    latencies = {}
    for stem, label in (("vgg_uni_fmnist", "Uniform Scale (Baseline)"),
                        ("vgg_pruned_fmnist", "MorphNet (Taylor-FO)"),
                        ("vgg_late_fmnist", "NeuralScale (Iteration = 2)")):
        result = curves[stem, 0]
        assert result["macs"] == count_macs("vgg", result["widths"], 10, 32)
        assert rows[label][1].strip() == f"{result['macs'] / 1e6:.2f}M"
        # The parallel swipes skip latency; plot_ratio measures it once per configuration, quietly.
        assert result["latency_ms"] is None is curves[stem, 1]["latency_ms"]
        latencies[label] = rows[label][2].strip()
    cache = [json.loads(path.read_text()) for path in (demo / "saved_plots" / "latency_cache").glob("*.json")]
    assert len(cache) == 3 and sorted(f"{entry['latency_ms']:.2f}ms" for entry in cache) == sorted(latencies.values())
    for name in ("param_acc_vgg_FashionMNIST", "macs_acc_vgg_FashionMNIST", "latency_acc_vgg_FashionMNIST"):
        for ext in ("png", "pdf"):
            assert (demo / "figs" / f"{name}.{ext}").stat().st_size > 5000

    # 5. A second run reuses everything: no result, record or checkpoint is rewritten.
    before = snapshot(demo / "prune_record") | snapshot(demo / "saved_plots")
    again = make_demo(data_dir, demo)
    assert snapshot(demo / "prune_record") | snapshot(demo / "saved_plots") == before
    assert [line for line in again.splitlines() if line.startswith("|")] == table


def test_demo_without_data_or_network_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    """The demo's first step with no Fashion-MNIST anywhere and the download failing."""
    import architecture_descent

    def offline(dataset, root):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "not-installed"))
    monkeypatch.setattr(D, "_torchvision_download", offline)
    monkeypatch.setattr(sys, "argv", ["architecture_descent.py", "--model", "vgg", "--dataset", "FashionMNIST",
                                      "--data_dir", str(tmp_path / "data"),
                                      "--record_dir", str(tmp_path / "record"), "--device", "cpu",
                                      "--save", "fmnist_search"])
    with pytest.raises(SystemExit) as exit_:
        run_main(architecture_descent.main)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: FashionMNIST not found")
    assert "apt-get install dataset-fashion-mnist" in lines[0] and "--data_dir" in lines[0]
    assert not (tmp_path / "record").exists()
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.gz"))


# -- make data: Fashion-MNIST where the loader looks, or Debian's package installed as root ------------

FAKE_APT = """#!/bin/sh
echo "$@" >> "{log}"
if [ "$1" = install ]; then mkdir -p "{system}" && cp "{source}"/* "{system}"/; fi
"""


def make_data(tmp_path, data_dir, *, root=True, apt=True, target="data", extra=()):
    """`make data` (or another target) with the package folder and apt-get replaced by test doubles;
    returns (process, the fake apt-get's calls)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    source, system, log = tmp_path / "package-files", tmp_path / "usr-share", tmp_path / "apt.log"
    if not source.exists():
        write_fashion_mnist(str(source), gz=True)
    fake = tmp_path / "apt-get"
    fake.write_text(FAKE_APT.format(log=log, system=system, source=source))
    fake.chmod(0o755)
    args = ["make", "--no-print-directory", target, f"DATA_DIR={data_dir}", f"FMNIST_SYSTEM_DIR={system}",
            f"APT_GET={fake if apt else tmp_path / 'no-apt-get'}", f"IS_ROOT={'0' if root else ''}",
            *extra]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.mark.parametrize("layout", ["flat", "raw_gz", "system", "three_of_four"])
def test_make_data_accepts_exactly_what_the_loader_finds(tmp_path, monkeypatch, layout):
    data_dir = tmp_path / "data"
    folder = {"flat": data_dir, "raw_gz": data_dir / "FashionMNIST" / "raw",
              "system": tmp_path / "usr-share", "three_of_four": data_dir}[layout]
    write_fashion_mnist(str(folder), gz=layout == "raw_gz")
    if layout == "three_of_four":
        os.remove(folder / "t10k-labels-idx1-ubyte")
    proc, calls = make_data(tmp_path, data_dir, apt=False, root=False)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "usr-share"))
    found = D._find_fashion_mnist(str(data_dir)) is not None
    assert found == (layout != "three_of_four")
    assert proc.returncode == (0 if found else 2), proc.stderr
    assert calls == [] and proc.stdout == ""


def test_make_data_installs_the_package_as_root(tmp_path):
    proc, calls = make_data(tmp_path, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    # The index first: a fresh machine has none.
    assert calls == ["update", "install -y dataset-fashion-mnist"]
    assert not (tmp_path / "data").exists()
    # Installed where the loader looks: a second run finds it and calls apt no more.
    proc, calls = make_data(tmp_path, tmp_path / "data")
    assert proc.returncode == 0 and calls == ["update", "install -y dataset-fashion-mnist"]


@pytest.mark.parametrize("root,apt", [(False, True), (True, False)])
def test_make_demo_without_root_or_apt_names_the_command_and_writes_nothing(tmp_path, root, apt):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc, calls = make_data(tmp_path, tmp_path / "data", root=root, apt=apt, target="demo",
                            extra=[f"VENV={tmp_path / 'venv'}", f"DEMO_DIR={tmp_path / 'runs'}"])
    assert proc.returncode == 2 and calls == []
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("make")]  # make adds its status
    assert len(ours) == 1 and ours[0].startswith("error: Fashion-MNIST not found")
    assert "`apt-get update && apt-get install -y dataset-fashion-mnist`" in ours[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # Neither the environment nor the demo folder: the data check runs first.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["apt-get", "package-files"])
