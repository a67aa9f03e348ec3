"""The paper's tables and figures from the authors' published result pickles.

The expected numbers are typed from the paper's text (paper/neuralscale-paper.txt: Table 1, Supp.
Tables 2-5) as (params in millions, accuracy mean, std), each to the paper's two decimals. Cells the
authors' own data does not give are listed in EXCEPTIONS with the value the data gives and why.
The scripts run as subprocesses, started together (module fixture) to keep the file fast.
"""
import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, REPO, assert_one_line_error
from utils.params import count_macs

PAPER_RATIOS = ("0.25", "0.75", "2")
TINY_RATIOS = ("0.25", "0.75", "1")
NOT_SCRATCH = ("li_magnitude",)

# -- the paper's numbers -----------------------------------------------------------------------------
# Table 1, VGG11 CIFAR10 (ratios 0.25, 0.75, 2.0; Li et al. at 0.75 only)
TABLE1_VGG_C10 = {
    "uniform": [(0.58, 88.18, 0.16), (5.20, 91.64, 0.10), (36.89, 92.96, 0.09)],
    "li_magnitude": [None, (5.20, 91.12, 0.02), None],
    "morphnet": [(0.58, 90.60, 0.11), (5.22, 92.60, 0.09), (36.72, 93.18, 0.11)],
    "neuralscale_it1": [(0.58, 91.13, 0.07), (5.20, 92.61, 0.15), (36.88, 93.31, 0.05)],
    "neuralscale_it15": [(0.58, 91.22, 0.15), (5.20, 92.63, 0.12), (36.90, 93.29, 0.09)],
}
# Table 1, MobileNetV2 CIFAR100 (the reference data has no Li et al. runs for MobileNetV2)
TABLE1_MBV2_C100 = {
    "uniform": [(0.20, 57.80, 0.31), (1.42, 67.85, 0.38), (9.30, 72.40, 0.22)],
    "morphnet": [(0.20, 57.51, 0.36), (1.42, 67.51, 0.48), (9.30, 72.29, 0.28)],
    "neuralscale_it1": [(0.19, 66.00, 0.12), (1.40, 70.23, 0.25), (9.21, 72.37, 0.12)],
    "neuralscale_it15": [(0.19, 66.36, 0.28), (1.41, 71.94, 0.45), (9.27, 74.73, 0.26)],
}
# Supplementary Table 2, VGG11 CIFAR100
TABLE2_VGG_C100 = {
    "uniform": [(0.59, 60.22, 0.45), (5.23, 68.56, 0.21), (36.99, 71.94, 0.25)],
    "li_magnitude": [None, (5.23, 68.41, 0.09), None],
    "morphnet": [(0.59, 64.85, 0.17), (5.21, 70.64, 0.38), (36.80, 72.72, 0.09)],
    "neuralscale_it1": [(0.59, 65.71, 0.28), (5.23, 70.50, 0.16), (36.98, 72.78, 0.19)],
    "neuralscale_it15": [(0.59, 66.07, 0.21), (5.23, 70.70, 0.45), (36.98, 72.78, 0.13)],
}
# Supplementary Table 2 (ratios 0.25, 0.75) and Table 5 (adds ratio 1.0 and ConvCut), MobileNetV2 Tiny
TABLE5_MBV2_TINY = {
    "uniform": [(0.23, 44.22, 0.40), (1.52, 54.63, 0.46), (2.58, 56.62, 0.70)],
    "morphnet": [(0.23, 44.53, 0.50), (1.51, 53.08, 0.52), (2.57, 54.42, 0.53)],
    "convcut": [(0.24, 40.16, 0.63), (1.57, 49.54, 0.30), (2.66, 50.85, 0.27)],
    "neuralscale_it1": [(0.22, 49.70, 0.73), (1.49, 54.18, 0.57), (2.54, 54.52, 0.72)],
    "neuralscale_it15": [(0.22, 46.82, 0.89), (1.49, 55.42, 0.44), (2.54, 55.50, 0.51)],
}
# Supplementary Table 3, VGG11 CIFAR10, pre-training epochs P (rows P = 0, 2, 5, 10, 30, 60)
TABLE3_VGG_P = {
    "uniform": [(0.58, 88.18, 0.16), (5.20, 91.64, 0.10), (36.89, 92.96, 0.09)],
    "neuralscale_p0": [(0.58, 91.23, 0.05), (5.20, 92.62, 0.06), (36.89, 93.24, 0.09)],
    "neuralscale_p2": [(0.58, 91.29, 0.09), (5.20, 92.80, 0.09), (36.90, 93.25, 0.10)],
    "neuralscale_p5": [(0.58, 91.18, 0.13), (5.19, 92.58, 0.08), (36.90, 93.31, 0.08)],
    "neuralscale_p10": [(0.58, 91.22, 0.15), (5.20, 92.63, 0.12), (36.90, 93.29, 0.09)],
    "neuralscale_p30": [(0.58, 91.22, 0.15), (5.20, 92.76, 0.13), (36.90, 93.26, 0.08)],
    "neuralscale_p60": [(0.58, 91.16, 0.17), (5.20, 92.66, 0.18), (36.89, 93.42, 0.13)],
}
# Supplementary Table 4, MobileNetV2 CIFAR100, pre-training epochs P
TABLE4_MBV2_P = {
    "uniform": [(0.20, 57.80, 0.31), (1.42, 67.85, 0.38), (9.30, 72.40, 0.22)],
    "neuralscale_p0": [(0.19, 66.49, 0.43), (1.40, 71.39, 0.45), (9.27, 74.93, 0.34)],
    "neuralscale_p2": [(0.19, 67.04, 0.28), (1.40, 72.98, 0.26), (9.27, 75.51, 0.41)],
    "neuralscale_p5": [(0.19, 66.74, 0.39), (1.40, 72.54, 0.18), (9.26, 75.19, 0.26)],
    "neuralscale_p10": [(0.19, 66.36, 0.28), (1.41, 71.94, 0.45), (9.27, 74.73, 0.26)],
    "neuralscale_p30": [(0.19, 65.53, 0.31), (1.41, 70.64, 0.23), (9.21, 74.14, 0.35)],
    "neuralscale_p60": [(0.19, 66.28, 0.13), (1.40, 71.18, 0.24), (9.27, 74.15, 0.18)],
}

# (table, method, ratio, field) -> (what the authors' data gives, why it differs from the paper)
EXCEPTIONS = {
    ("T1_vgg_c10", "morphnet", 0.75, "params"): (
        5.17, "the hard-coded MorphNet list rescaled by the authors' rule (walk r up from 1.2 in 5e-5 "
              "steps until within 0.5 % of the budget 5,195,338) stops at 5,169,497, 0.5 % under it; the "
              "paper's 5.22M sits at the +0.5 % edge, which a walk up from r = 1.2 cannot reach with "
              "this list: the paper's runs used another pruned list"),
    ("T1_vgg_c10", "morphnet", 2.0, "params"): (
        36.71, "same cause: the hard-coded list gives 36,712,753 (budget 36,894,218; paper 36.72M)"),
    ("T1_mbv2_c100", "morphnet", 2.0, "params"): (
        9.26, "the hard-coded MorphNet list rescaled by the authors' rule gives 9,257,874 (formula "
              "9,255,690, 0.48 % under the budget 9,299,988); the paper's 9.30M is the budget itself"),
    ("T2_vgg_c100", "neuralscale_it1", 0.75, "std"): (
        0.25, "the five pickles give 70.4984 +- 0.2480 (ddof 0; 0.2773 with ddof 1); the mean matches, "
              "no seed subset or other statistic gives 0.16: a transcription slip in the paper"),
    ("T2_vgg_c100", "neuralscale_it15", 0.25, "mean"): (
        66.08, "the five pickles give 66.07991 (ORIGINAL_BEHAVIOUR 10.2 also lists 66.08); every other "
               "cell of these tables rounds, none truncates"),
    ("T3_vgg_p", "neuralscale_p0", 0.75, "params"): (
        5.19, "the authors' fixed 2000-step VGG tau descent ends, at this ratio, in a 2-cycle between "
              "5,193,583 and 5,199,688 params; step 2000 lands on the first (5.19M), the paper shows "
              "the second (5.20M)"),
    ("T3_vgg_p", "neuralscale_p30", 2.0, "params"): (
        36.91, "the same 2-cycle, between 36,888,047 and 36,905,438: step 2000 gives 36.91M; the "
               "paper's 36.90M lies between the two"),
    ("T4_mbv2_p", "neuralscale_p0", 0.75, "std"): (
        0.34, "the five pickles give 71.3944 +- 0.3448; the mean matches; 0.45 is the std of the "
              "P = 10 row just below it in the paper"),
}


# -- running the scripts -----------------------------------------------------------------------------

def ref_args():
    return ["--no_latency", "--plots_dir", REFERENCE / "saved_plots",
            "--record_dir", REFERENCE / "prune_record"]


def copy_subset(root, name, seeds, ratios):
    """A plots folder holding only some of the authors' files (seeds x ratio tags)."""
    dest = root / "vgg"
    dest.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        for r in ratios:
            shutil.copy(REFERENCE / "saved_plots" / "vgg" / f"{name}_{s}_{r}.pk", dest)
    return root


class Runs:
    """Every script run of this file, started at once (they are mostly interpreter and torch
    start-up); each test waits on the runs it reads."""

    def __init__(self, commands):
        self.procs = {key: subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                      for key, args in commands.items()}
        self.done = {}

    def result(self, key):
        if key not in self.done:
            out, err = self.procs[key].communicate(timeout=300)
            self.done[key] = subprocess.CompletedProcess(self.procs[key].args, self.procs[key].returncode,
                                                         out, err)
        return self.done[key]

    def get(self, key):
        proc = self.result(key)
        assert proc.returncode == 0, f"{key} exited {proc.returncode}\nstdout:\n{proc.stdout}\n" \
                                     f"stderr:\n{proc.stderr}"
        return proc.stdout, proc.stderr

    def json(self, key):
        return [json.loads(line) for line in self.get(key)[0].splitlines() if line.strip()]

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


BAD_INPUTS = {  # one-line errors; --record_dir is the reference only where the case needs it
    "bad_pair": ["plot_ratio.py", "--model", "vgg", "--dataset", "tinyimagenet"],
    "bad_ratio": ["plot_ratio.py", "--model", "vgg", "--dataset", "CIFAR10", "--ratios", "0",
                  "--no_latency"],
    "bad_filters": ["plot_filters.py", "--model", "vgg", "--prune_fname", "nothing_here", "--no_figs"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    empty = tmp / "empty"
    empty.mkdir()
    commands = {key: [*args, "--plots_dir", empty, "--record_dir", empty, "--figs_dir", tmp / "figs_bad"]
                for key, args in BAD_INPUTS.items()}
    commands["no_results"] = ["plot_ratio.py", "--model", "vgg", "--dataset", "CIFAR10", "--no_latency",
                              "--figs_dir", tmp / "figs_bad", "--plots_dir", empty, "--record_dir", empty]
    have_reference = (REFERENCE / "prune_record").is_dir() and (REFERENCE / "saved_plots").is_dir()
    if have_reference:
        commands.update(reference_commands(tmp))
    r = Runs(commands)
    r.tmp = tmp
    yield r
    r.close()


def reference_commands(tmp):
    ratio = ["plot_ratio.py", *ref_args()]
    warm = ["plot_ratio_warmup.py", *ref_args(), "--json", "--no_figs", "--ratios", *PAPER_RATIOS]
    vgg_c10 = ["--model", "vgg", "--dataset", "CIFAR10"]
    # missing seeds and ratios: uniform seeds 0, 1, 3 at 0.25 and 0.75, Iteration 15 seed 4 at 0.25
    subset = copy_subset(tmp / "subset", "vgg_uni_c10", (0, 1, 3), (25, 75))
    copy_subset(subset, "vgg_10_eff_c10_late", (4,), (25,))
    partial = ["plot_ratio.py", *vgg_c10, "--no_latency", "--no_figs", "--plots_dir", subset,
               "--record_dir", REFERENCE / "prune_record", "--ratios", *PAPER_RATIOS]
    # pickles that carry a measured latency, and NeuralScale results without their search record
    from utils.io import load_result, save_result
    lat = copy_subset(tmp / "lat", "vgg_10_eff_c10_late", (0,), (25,))
    for name, ms in (("vgg_uni_c10_0_25", 1.5), ("vgg_uni_c10_1_25", 2.5), ("vgg_uni_c10_0_75", 3.0),
                     ("vgg_uni_c10_1_75", 5.0), ("vgg_norm_c10_0_75", 99.0)):
        curve = load_result(REFERENCE / "saved_plots" / "vgg" / f"{name}.pk")
        save_result(lat / "vgg" / f"{name}.pk", {**curve, "latency_ms": ms})
    return {
        "vgg_c10": [*ratio, *vgg_c10, "--json", "--no_figs"],
        "vgg_c10_table": [*ratio, *vgg_c10, "--figs_dir", tmp / "figs"],
        "vgg_c100": [*ratio, "--model", "vgg", "--dataset", "CIFAR100", "--json", "--no_figs",
                     "--ratios", *PAPER_RATIOS],
        "mbv2_c100": [*ratio, "--model", "mobilenetv2", "--dataset", "CIFAR100", "--json", "--no_figs",
                      "--ratios", *PAPER_RATIOS],
        "mbv2_tiny": [*ratio, "--model", "mobilenetv2", "--dataset", "tinyimagenet", "--json",
                      "--no_figs", "--ratios", *TINY_RATIOS],
        "vgg_p": [*warm, "--model", "vgg", "--dataset", "CIFAR10"],
        "mbv2_p": [*warm, "--model", "mobilenetv2", "--dataset", "CIFAR100"],
        "partial_json": [*partial, "--json"],
        "partial_table": partial,
        "latency": ["plot_ratio.py", *vgg_c10, "--json", "--no_latency", "--plots_dir", lat,
                    "--figs_dir", tmp / "figs_lat", "--ratios", "0.25", "0.75", "--record_dir",
                    tmp / "no_records"],
        "filters": ["plot_filters.py", *vgg_c10, "--prune_fname", "vgg_10_eff_c10", "--record_dir",
                    REFERENCE / "prune_record", "--figs_dir", tmp / "figs_growth", "--json",
                    "--iterations", "0", "14"],
        "bad_descent_idx": ["plot_ratio_warmup.py", "--model", "vgg", "--descent_idx", "40",
                            "--no_latency", "--record_dir", REFERENCE / "prune_record",
                            "--figs_dir", tmp / "figs_bad_idx"],
    }


def by_key(rows):
    return {(row["method"], round(row["ratio"], 4)): row for row in rows}


def check_table(rows, expected, ratios, table):
    """Every paper cell, rounded as the paper rounds, or the documented exception."""
    got = by_key(rows)
    mismatches, checked = [], 0
    for method, cells in expected.items():
        for ratio, cell in zip(ratios, cells):
            if cell is None:
                continue
            row = got.get((method, ratio))
            assert row is not None, f"{table}: no row for {method} at {ratio}"
            assert row["n_seeds"] == 5 and row["missing_seeds"] == [], row
            ours = {"params": round(row["params"] / 1e6, 2), "mean": round(row["acc_mean"], 2),
                    "std": round(row["acc_std"], 2)}
            for field, paper in zip(("params", "mean", "std"), cell):
                checked += 1
                exception = EXCEPTIONS.get((table, method, ratio, field))
                want = exception[0] if exception else paper
                if not math.isclose(ours[field], want, abs_tol=1e-9):
                    mismatches.append(f"{method} {ratio} {field}: ours {ours[field]}, expected {want}"
                                      f" (paper {paper})")
    assert not mismatches, f"{table}:\n" + "\n".join(mismatches)
    for (name, method, ratio, field), (ours, _) in EXCEPTIONS.items():  # each one really differs
        if name == table:
            paper = expected[method][ratios.index(ratio)][("params", "mean", "std").index(field)]
            assert ours != paper, (table, method, ratio, field)
    return checked


@pytest.mark.slow
def test_table1_vgg_cifar10(runs, reference):
    rows = runs.json("vgg_c10")
    assert check_table(rows, TABLE1_VGG_C10, (0.25, 0.75, 2.0), "T1_vgg_c10") == 39
    # the full sweep the authors plotted: 8 ratios for every trained-from-scratch method
    assert sorted({r["ratio"] for r in rows if r["method"] == "uniform"}) == \
        [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    li = [r for r in rows if r["method"] == "li_magnitude"]
    assert [r["ratio"] for r in li] == [0.75]
    uniform_075 = by_key(rows)[("uniform", 0.75)]
    assert li[0]["params"] == uniform_075["params"] and li[0]["widths"] == uniform_075["widths"]
    assert not any(r["method"] == "convcut" for r in rows)  # VGG has no shortcuts


@pytest.mark.slow
def test_table1_mobilenetv2_cifar100(runs, reference):
    rows = runs.json("mbv2_c100")
    assert check_table(rows, TABLE1_MBV2_C100, (0.25, 0.75, 2.0), "T1_mbv2_c100") == 36
    _, err = runs.get("mbv2_c100")
    assert "Li et al. left out" in err and "convcut" in err  # no such files in the reference


def test_table2_vgg_cifar100(runs, reference):
    assert check_table(runs.json("vgg_c100"), TABLE2_VGG_C100, (0.25, 0.75, 2.0), "T2_vgg_c100") == 39


def test_table2_and_5_mobilenetv2_tiny(runs, reference):
    rows = runs.json("mbv2_tiny")
    assert check_table(rows, TABLE5_MBV2_TINY, (0.25, 0.75, 1.0), "T5_mbv2_tiny") == 45


def test_table3_vgg_pretraining_epochs(runs, reference):
    rows = runs.json("vgg_p")
    assert check_table(rows, TABLE3_VGG_P, (0.25, 0.75, 2.0), "T3_vgg_p") == 63
    assert [r["method"] for r in rows[::3]] == list(TABLE3_VGG_P)


def test_table4_mobilenetv2_pretraining_epochs(runs, reference):
    # descent_idx 14 for every P reproduces all 18 parameter counts; the authors' script used 13 at P = 0
    assert check_table(runs.json("mbv2_p"), TABLE4_MBV2_P, (0.25, 0.75, 2.0), "T4_mbv2_p") == 63


def parse_table(text):
    """{(method label, ratio): cells} from the markdown table; continuation rows inherit the label."""
    rows, label = {}, None
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| Method"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        label = cells[0].rstrip(" *") or label
        rows[(label, float(cells[1]))] = cells[2:]
    return rows


def test_table_and_json_agree(runs, reference):
    from utils.report import METHOD_LABELS
    table = parse_table(runs.get("vgg_c10_table")[0])
    rows = runs.json("vgg_c10")
    assert len(table) == len(rows) == 4 * 8 + 1
    for row in rows:
        params, macs, latency, acc, final, seeds = table[(METHOD_LABELS[row["method"]], row["ratio"])]
        assert params == f"{row['params'] / 1e6:.2f}M" and macs == f"{row['macs'] / 1e6:.2f}M"
        assert row["macs"] == count_macs("vgg", row["widths"], 10, 32)
        assert latency == "—" and row["latency_ms"] is None
        assert acc == f"{row['acc_mean']:.2f} ± {row['acc_std']:.2f}"
        assert final == f"{row['acc_final_mean']:.2f}"
        assert seeds == f"{row['n_seeds']}/5"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_figures_written(runs, reference):
    _, err = runs.get("vgg_c10_table")
    figs = runs.tmp / "figs"
    png = figs / "param_acc_vgg_CIFAR10.png"
    assert f"wrote {png}" in err
    width, height = png_size(png)
    assert (width, height) == (750, 540) and png.stat().st_size > 20_000
    assert (figs / "param_acc_vgg_CIFAR10.pdf").read_bytes()[:5] == b"%PDF-"
    assert png_size(figs / "macs_acc_vgg_CIFAR10.png") == (750, 540)
    assert not (figs / "latency_acc_vgg_CIFAR10.png").exists()  # latency unknown: no figure


def test_figure_axes_cover_the_data(runs, reference, tmp_path):
    """In-process: the returned figures' axes hold every point and band of the data."""
    from utils import report
    methods = [report.Method("uniform", report.METHOD_LABELS["uniform"], "vgg_uni_c10",
                             report.uniform_widths("vgg", "CIFAR10"))]
    rows = report.gather(methods, model="vgg", dataset="CIFAR10",
                         plots_dir=REFERENCE / "saved_plots", ratios=report.CIFAR_RATIOS,
                         seeds=report.DEFAULT_SEEDS, log=lambda m: None)
    for i, row in enumerate(rows):  # a latency, as if the pickles carried one
        row.latency_ms = 1.0 + i
    written = report.accuracy_figures(rows, figs_dir=tmp_path, model="vgg", dataset="CIFAR10")
    assert set(written) == {"params", "macs", "latency_ms"}
    for x, (fig, paths) in written.items():
        ax = fig.axes[0]
        xs = np.array([getattr(r, x) for r in rows], dtype=float) / (1 if x == "latency_ms" else 1e6)
        lo, hi = min(min(r.best) for r in rows), max(max(r.best) for r in rows)
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        assert x0 <= xs.min() and xs.max() <= x1, (x, ax.get_xlim(), xs)
        assert y0 <= lo and hi <= y1 and lo < hi
        assert ax.get_xscale() == "log" and ax.get_legend().get_texts()[0].get_text() == \
            "Uniform Scale (Baseline)"
        assert [Path(p).suffix for p in paths] == [".png", ".pdf"]
        assert png_size(Path(paths[0]))[0] > 500


def test_missing_seeds_and_ratios_are_reported_not_invented(runs, reference):
    from utils.io import load_result
    plots = runs.tmp / "subset"
    rows = by_key(runs.json("partial_json"))
    _, err = runs.get("partial_json")
    assert {m for m, _ in rows} == {"uniform", "neuralscale_it15"}
    for method in ("MorphNet (Taylor-FO)", "NeuralScale (Iteration = 1)", "Li et al."):
        assert f"note: {method} left out" in err
    for ratio, tag in ((0.25, 25), (0.75, 75)):
        row = rows[("uniform", ratio)]
        best = [max(load_result(plots / "vgg" / f"vgg_uni_c10_{s}_{tag}.pk")["test_acc"]) for s in (0, 1, 3)]
        assert row["n_seeds"] == 3 and row["missing_seeds"] == [2, 4]
        assert row["acc_mean"] == pytest.approx(np.mean(best), abs=1e-12)
        assert row["acc_std"] == pytest.approx(np.std(best), abs=1e-12)
    for key in (("uniform", 2.0), ("neuralscale_it15", 0.75), ("neuralscale_it15", 2.0)):
        row = rows[key]
        assert row["n_seeds"] == 0 and row["missing_seeds"] == [0, 1, 2, 3, 4]
        assert row["acc_mean"] is None and row["acc_std"] is None and row["acc_final_mean"] is None
        assert row["params"] > 0  # the configuration is known; only the accuracy is missing
    one = rows[("neuralscale_it15", 0.25)]
    assert one["n_seeds"] == 1 and one["acc_std"] == 0.0
    cells = parse_table(runs.get("partial_table")[0])
    assert cells[("Uniform Scale (Baseline)", 0.25)][-1] == "3/5"
    assert cells[("Uniform Scale (Baseline)", 2.0)][3:] == ["—", "—", "0/5"]
    assert cells[("NeuralScale (Iteration = 15)", 0.25)][3:] == [
        f"{one['acc_mean']:.2f} ± 0.00", f"{one['acc_final_mean']:.2f}", "1/5"]


def test_missing_record_leaves_neuralscale_out(runs, reference):
    out, err = runs.get("latency")  # Iteration = 15 results exist, its search record does not
    assert [json.loads(line)["method"] for line in out.splitlines()] == ["uniform", "uniform",
                                                                         "li_magnitude"]
    notes = [line for line in err.splitlines() if "no search record" in line]
    assert len(notes) == 2 and all(line.startswith("note: NeuralScale") for line in notes)


def test_latency_from_pickles(runs, reference):
    rows = by_key(runs.json("latency"))
    row = rows[("uniform", 0.25)]
    assert row["latency_ms"] == 2.0 and row["n_seeds"] == 2  # the mean of the stored 1.5 and 2.5 ms
    # Li et al. reports the uniform 0.75 network's params and latency (the authors' convention),
    # not the latency stored with its own run
    li, uniform = rows[("li_magnitude", 0.75)], rows[("uniform", 0.75)]
    assert uniform["latency_ms"] == li["latency_ms"] == 4.0 and li["params"] == uniform["params"]
    assert li["n_seeds"] == 1
    assert png_size(runs.tmp / "figs_lat" / "latency_acc_vgg_CIFAR10.png")[0] > 500


def test_plot_filters_refits_the_authors_record(runs, reference):
    from utils.io import load_fits
    rows = runs.json("filters")
    assert len(rows) == 16
    stored = load_fits(reference / "prune_record" / "vgg_10_eff_c10.pk")
    late = [r for r in rows if r["iteration"] == 14]
    assert np.allclose([r["alpha"] for r in late], stored[14][0], rtol=0, atol=1e-12)
    assert np.allclose([r["beta"] for r in late], stored[14][1], rtol=0, atol=1e-12)
    assert late[0]["rows"] == 237 and late[0]["tau_min"] < late[0]["tau_max"]
    figs = runs.tmp / "figs_growth"
    width, height = png_size(figs / "growth_vgg_CIFAR10.png")
    assert width > 1000 and height == 600
    assert (figs / "growth_vgg_CIFAR10.pdf").read_bytes()[:5] == b"%PDF-"


def test_plot_growth_axes_are_log_log_and_cover_the_record(reference):
    from utils import report
    from utils.fit import fit_power_law
    from utils.io import read_prune_csv
    rows = read_prune_csv(reference / "prune_record" / "vgg_10_eff_c10_14.csv", 8)
    taus = report.record_taus("vgg", "CIFAR10", rows)
    alpha, beta = fit_power_law(rows, "vgg", 10)
    ax = report.plot_growth([("late", rows, taus, alpha, beta)]).axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlim()[0] <= taus.min() and taus.max() <= ax.get_xlim()[1]
    assert ax.get_ylim()[0] <= rows.min() and rows.max() <= ax.get_ylim()[1]
    assert len(ax.lines) == 2 * 8  # measured dots and fitted line per layer


@pytest.mark.parametrize("key", sorted(BAD_INPUTS))
def test_bad_input_is_one_line(runs, key):
    assert_one_line_error(runs.result(key))
    assert not (runs.tmp / "figs_bad").exists()  # nothing written on bad input


def test_descent_idx_past_the_record_is_one_line(runs, reference):
    proc = runs.result("bad_descent_idx")
    assert_one_line_error(proc)
    assert not (runs.tmp / "figs_bad_idx").exists()  # nothing written on bad input
    assert "past the record" in proc.stderr


def test_no_results_at_all_is_an_error(runs):
    proc = runs.result("no_results")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no result files")
    assert not (runs.tmp / "figs_bad").exists()
