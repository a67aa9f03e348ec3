"""list_architecture.py end to end, and the bad inputs it must refuse."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, assert_one_line_error, run_script
from model import build_model
from utils import io
from utils.params import actual_params, count_macs


def test_json_lines_from_the_authors_record(reference):
    proc = run_script("list_architecture.py", "--model", "vgg", "--dataset", "CIFAR10",
                      "--prune_fname", reference / "prune_record" / "vgg_10_eff_c10.pk",
                      "--descent_idx", "14", "--ratios", "0.25", "2", "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["widths"] for r in rows] == [[88, 132, 137, 120, 82, 56, 31, 53],
                                           [319, 659, 994, 1341, 899, 597, 202, 177]]
    assert [r["params"] for r in rows] == [580_572, 36_897_436]
    assert set(rows[0]) == {"model", "dataset", "method", "descent_idx", "ratio", "widths", "params", "macs",
                            "budget"} and rows[0]["budget"] == "params"
    assert [r["macs"] for r in rows] == [count_macs("vgg", r["widths"], 10, 32) for r in rows]
    assert rows[0]["method"] == "neuralscale" and rows[0]["descent_idx"] == 14


def test_run_name_under_record_dir_all_iterations_and_built_params(tmp_path):
    fits = [(np.array([30.0, 20, 40, 25, 35, 30, 20, 25]) / 1e5 ** 0.3, np.full(8, 0.3 + 0.01 * k))
            for k in range(3)]
    io.save_fits(tmp_path / "run.pk", fits)
    proc = run_script("list_architecture.py", "--model", "vgg", "--dataset", "CIFAR100",
                      "--prune_fname", "run", "--record_dir", tmp_path, "--ratios", "0.5", "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["descent_idx"] for r in rows] == [0, 1, 2]
    for r in rows:  # params is the count of the network these widths build
        assert r["params"] == actual_params(build_model("vgg", r["widths"], 100))


def test_uniform_and_morph_methods():
    proc = run_script("list_architecture.py", "--model", "resnet18", "--dataset", "tinyimagenet",
                      "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ratio"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    assert rows[-1]["widths"] == build_model("resnet18", rows[-1]["widths"], 200).widths
    assert rows[-1]["params"] == 11_273_736 and rows[-1]["method"] == "uniform"
    proc = run_script("list_architecture.py", "--model", "vgg", "--dataset", "CIFAR10",
                      "--method", "morph", "--ratios", "0.75", "--json")
    assert json.loads(proc.stdout)["widths"] == [97, 195, 380, 386, 409, 267, 133, 232]


@pytest.mark.slow
def test_plot_writes_png_and_pdf(reference, tmp_path):
    proc = run_script("list_architecture.py", "--model", "mobilenetv2", "--dataset", "CIFAR100",
                      "--prune_fname", reference / "prune_record" / "mobilenetv2_10_eff_c100.pk",
                      "--plot", "--figs_dir", tmp_path)
    png = tmp_path / "architecture_mobilenetv2_CIFAR100.png"
    assert f"wrote {png}" in proc.stdout
    assert Image.open(png).size[0] > 1000
    assert (tmp_path / "architecture_mobilenetv2_CIFAR100.pdf").read_bytes().startswith(b"%PDF")


def _evil(tmp_path):
    path = tmp_path / "evil.pk"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path.write_bytes(pickle.dumps({"param": [Evil()]}))
    return path


@pytest.mark.parametrize("case", ["missing", "corrupt", "not_numpy", "past_record", "pair",
                                  "budget", "unwritable_figs"])
def test_bad_input(case, tmp_path):
    io.save_fits(tmp_path / "ok.pk", [(np.full(8, 40.0), np.zeros(8))])
    (tmp_path / "corrupt.pk").write_bytes(b"\x80\x04garbage")
    (tmp_path / "file").write_text("a file, not a folder")
    base = ["list_architecture.py", "--model", "vgg", "--dataset", "CIFAR10"]
    args = {
        "missing": ["--prune_fname", tmp_path / "missing.pk"],
        "corrupt": ["--prune_fname", tmp_path / "corrupt.pk"],
        "not_numpy": ["--prune_fname", _evil(tmp_path)],
        "past_record": ["--prune_fname", tmp_path / "ok.pk", "--descent_idx", "3"],
        "pair": ["--dataset", "tinyimagenet"],
        "budget": ["--ratios", "0.001"],
        "unwritable_figs": ["--prune_fname", tmp_path / "ok.pk", "--plot", "--figs_dir",
                            tmp_path / "file" / "figs"],
    }[case]
    proc = run_script(*base, *args, check=False)
    assert_one_line_error(proc)
    assert proc.stdout == "" and "pwned" not in proc.stdout
    message = {"missing": "no such file", "corrupt": "not a NeuralScale pickle",
               "not_numpy": "only numpy arrays", "past_record": "past the record",
               "pair": "CIFAR-only", "budget": "no configuration meets the budget",
               "unwritable_figs": "cannot write"}[case]
    assert message in proc.stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`list_architecture.py | head -1`: the reader leaves early; no traceback, the shell's status 141."""
    io.save_fits(tmp_path / "run.pk", [(np.array([30.0, 20, 40, 25, 35, 30, 20, 25]) / 1e5 ** 0.3, np.full(8, 0.3))])
    proc = subprocess.Popen([sys.executable, "list_architecture.py", "--model", "vgg", "--prune_fname", "run",
                             "--record_dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the script has printed anything
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "Exception ignored" not in err, err
