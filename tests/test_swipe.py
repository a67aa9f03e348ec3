"""ratio_swipe.py and imagenet_ratio_swipe.py end to end on tiny data: files, keys, resume after SIGKILL,
seeds, and every bad input (one line, exit 2, nothing written). Engine pieces in-process."""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, run_script
from model import MODELS, build_model
from utils import io, run, swipe
from utils.params import actual_params, count_macs
from utils.progress import read_csv
from utils.train import load_checkpoint

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

SYNTH = ["--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--no_latency"]
CURVES = ("train_acc", "train_loss", "test_acc", "test_loss", "train_acc_dataset", "test_acc_dataset")


def dirs(root):
    return ["--plots_dir", root / "plots", "--models_dir", root / "models", "--record_dir", root / "rec"]


def curves_of(result):
    return {k: result[k] for k in CURVES}


def wait_for(paths, proc, timeout=240):
    start = time.monotonic()
    while not all(os.path.exists(p) for p in paths):
        assert proc.poll() is None, f"the run ended before {paths} appeared"
        assert time.monotonic() - start < timeout, f"timed out waiting for {paths}"
        time.sleep(0.02)


def swipe_cmd(root, ratios=("0.25", "0.5"), epochs=3, seed=0):
    return ["ratio_swipe.py", *SYNTH, "--subset", "512", "--test_subset", "128", "--uniform", "--ratios",
            *ratios, "--epochs", str(epochs), "--seed", str(seed), "--save", "run", *dirs(root)]


def test_kill_resume_seeds_and_outputs(tmp_path):
    """SIGKILL during the second ratio, run again: the first ratio's file is untouched, the second
    resumes from its checkpoint and ends with the curves, and the per-epoch CSV, of an uninterrupted run
    (same seed), even when the CSV had a row past the checkpoint; another seed gives other curves. A
    finished run keeps its best-epoch weights only (--keep_checkpoints best, the default)."""
    cmd = swipe_cmd(tmp_path / "a")
    first = tmp_path / "a/plots/vgg/run_25.pk"
    checkpoint = tmp_path / "a/models/vgg/run_50_checkpoint.pt"
    second = tmp_path / "a/plots/vgg/run_50.pk"
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            wait_for([first, checkpoint], proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not second.exists(), "killed too late: the second ratio had finished"
    killed_at = load_checkpoint(checkpoint, torch.device("cpu"))["epoch"]
    assert 1 <= killed_at < 3
    stat = first.stat()
    before = first.read_bytes()
    assert (tmp_path / "a/models/vgg/run_25_best_model.pt").exists()
    assert not (tmp_path / "a/models/vgg/run_25_checkpoint.pt").exists()  # removed once run_25.pk existed
    # A row written after the checkpoint (a kill between the two): the resumed run must not keep it.
    second_csv = tmp_path / "a/plots/vgg/run_50.csv"
    with open(second_csv, "a") as f:
        f.write(f"{killed_at + 1},0.1,9.0,9.0,9.0,9.0,9.0,9.0\n")

    resumed = run_script(*cmd)
    assert "run_25.pk exists, skipped" in resumed.stdout
    assert f"resuming from {checkpoint} at epoch {killed_at + 1}" in resumed.stdout
    assert first.read_bytes() == before and first.stat().st_mtime_ns == stat.st_mtime_ns

    # Outputs: names, keys, lengths, widths, params, the checkpoint's own architecture.
    for ratio, tag in ((0.25, 25), (0.5, 50)):
        result = io.load_result(tmp_path / f"a/plots/vgg/run_{tag}.pk")
        widths = [int(w * ratio) for w in MODELS["vgg"].DEFAULT_WIDTHS]
        assert result["ratio"] == ratio and result["epochs"] == 3
        assert all(len(result[k]) == 3 and all(isinstance(v, float) for v in result[k]) for k in CURVES)
        assert result["lr"] == [0.1, 0.1, 0.1]
        assert result["widths"] == widths
        assert result["params"] == actual_params(build_model("vgg", widths, 10))
        assert result["macs"] == count_macs("vgg", widths, 10, 32)
        assert (result["seed"], result["model"], result["dataset"], result["method"]) == (0, "vgg", "synthetic",
                                                                                          "uniform")
        assert result["latency_ms"] is None
        assert result["final_test_acc"] == result["test_acc"][-1]
        assert result["best_test_acc"] == max(result["test_acc"])
        assert all(0 <= a <= 100 for a in result["test_acc"] + result["train_acc_dataset"])
        best = load_checkpoint(tmp_path / f"a/models/vgg/run_{tag}_best_model.pt", torch.device("cpu"))
        arch = best["architecture"]
        assert arch == {"model": "vgg", "widths": widths, "num_classes": 10, "gates": False, "convcut": False,
                        "bn_init": "half"}  # VGG: the authors' explicit 0.5
        build_model(arch["model"], arch["widths"], arch["num_classes"], arch["gates"],
                    arch["convcut"]).load_state_dict(best["state_dict"])
        assert best["best_prec1"] == result["best_test_acc"] and best["epoch"] == result["best_epoch"]
        # The per-epoch CSV holds the result's curves, digit for digit.
        rows = read_csv(tmp_path / f"a/plots/vgg/run_{tag}.csv")
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
        for key in run.EPOCH_COLUMNS[1:]:
            assert [float(r[key]) for r in rows] == result[key], key
    assert sorted(os.listdir(tmp_path / "a/models/vgg")) == ["run_25_best_model.pt", "run_50_best_model.pt"]

    # The same seed, uninterrupted and without the 0.25 ratio before it: the same curves.
    run_script(*swipe_cmd(tmp_path / "b", ratios=("0.5",)))
    reference = io.load_result(tmp_path / "b/plots/vgg/run_50.pk")
    assert curves_of(reference) == curves_of(io.load_result(second))
    assert second_csv.read_bytes() == (tmp_path / "b/plots/vgg/run_50.csv").read_bytes()

    # Another seed: other curves (init and batches both change).
    run_script(*swipe_cmd(tmp_path / "c", ratios=("0.25",), epochs=1, seed=1))
    other = io.load_result(tmp_path / "c/plots/vgg/run_25.pk")
    assert other["seed"] == 1
    assert other["train_loss"][0] != io.load_result(first)["train_loss"][0]


def write_record(root, name, iterations=2):
    """A VGG search record: fits alpha * tau^0.5 through the default widths, and a morph CSV."""
    default = np.array(MODELS["vgg"].DEFAULT_WIDTHS, dtype=np.float64)
    tau = MODELS["vgg"].formula_params(default, 10)
    fits = [(default / tau ** 0.5 * (1 + 0.1 * k * np.linspace(-1, 1, 8)), np.full(8, 0.5))
            for k in range(iterations)]
    os.makedirs(root, exist_ok=True)
    io.save_fits(os.path.join(root, f"{name}.pk"), fits)
    io.write_prune_csv(os.path.join(root, f"{name}_0.csv"), [default.astype(int), default.astype(int) // 2 + 3])
    return fits


def test_neuralscale_end_to_end(tmp_path):
    fits = write_record(tmp_path / "rec", "search")
    run_script("ratio_swipe.py", *SYNTH, "--subset", "64", "--test_subset", "64", "--batch-size", "32",
               "--prune_fname", "search", "--descent_idx", "1", "--ratios", "0.25", "--epochs", "1",
               "--save", "ns", *dirs(tmp_path))
    result = io.load_result(tmp_path / "plots/vgg/ns_25.pk")
    alpha, beta = fits[1]
    assert result["widths"] == MODELS["vgg"].prepare_filters(0.25, num_classes=10, alpha=alpha, beta=beta,
                                                             first_iteration=False)
    assert result["method"] == "neuralscale" and result["descent_idx"] == 1
    assert result["prune_fname"].endswith("search.pk")
    assert len(result["test_acc"]) == 1


def namespace(**kw):
    base = {"model": "vgg", "dataset": "synthetic", "prune_fname": None, "descent_idx": 14, "exact": False,
            "record_dir": "prune_record", "uniform": False, "morph": False, "convcut": False,
            "grouping": "traced"}
    return argparse.Namespace(**{**base, **kw})


def test_plan_widths_morph_sources(tmp_path):
    write_record(tmp_path, "m")
    args = namespace(morph=True, prune_fname="m", record_dir=str(tmp_path), dataset="CIFAR10")
    table = {("vgg", "CIFAR10"): [64, 128, 249, 253, 268, 175, 87, 152]}
    plans, info = swipe.plan_widths(args, "morph", [0.5, 0.5, 1.0], 10, table)
    last_row = [int(w) // 2 + 3 for w in MODELS["vgg"].DEFAULT_WIDTHS]
    assert [r for r, _ in plans] == [0.5, 1.0]  # duplicates dropped
    assert plans[0][1] == MODELS["vgg"].prepare_filters(0.5, num_classes=10, pruned_widths=last_row)
    assert info["pruned_widths"] == last_row
    plans, info = swipe.plan_widths(namespace(morph=True, dataset="CIFAR10"), "morph", [0.5], 10, table)
    assert plans[0][1] == MODELS["vgg"].prepare_filters(0.5, num_classes=10, pruned_widths=table[("vgg", "CIFAR10")])
    assert info["prune_fname"] == "PRUNED_FILTERS"


def test_plan_widths_warns_when_a_flat_fit_misses_the_budget(tmp_path, capsys):
    """The authors' fallback fit (beta == 0, from a record of fewer than 6 rows) keeps VGG at int(alpha)
    at every ratio: kept, but said."""
    flat = np.array([15.0, 29, 52, 56, 92, 90, 75, 79])
    io.save_fits(tmp_path / "flat.pk", [(flat, np.zeros(8))])
    args = namespace(prune_fname="flat", descent_idx=0, record_dir=str(tmp_path), dataset="CIFAR10")
    plans, _ = swipe.plan_widths(args, "neuralscale", [0.25], 10, {})
    assert plans[0][1] == [15, 29, 52, 56, 92, 90, 75, 79]
    out = capsys.readouterr().out
    got = actual_params(build_model("vgg", plans[0][1], 10))
    budget = actual_params(build_model("vgg", [16, 32, 64, 64, 128, 128, 128, 128], 10))
    assert (got, budget) == (281_327, 579_786)
    assert f"warning: vgg neuralscale at ratio 0.25 has {got:,} parameters, 49% of the uniform network's " \
           f"{budget:,} (a beta == 0 fit" in out
    swipe.plan_widths(namespace(morph=True, dataset="CIFAR10"), "morph", [0.25], 10,
                      {("vgg", "CIFAR10"): [64, 128, 249, 253, 268, 175, 87, 152]})
    assert "warning" not in capsys.readouterr().out  # on budget: silent


def test_unseeded_runs_draw_store_and_keep_their_seeds(tmp_path, capsys):
    """The authors' recipe, five runs with no --seed, gives five runs with five different seeds, each
    printed and stored; the printed seed repeats its run exactly; a resumed run keeps its checkpoint's
    seed. Also: --precision bf16 and --test_order are taken and recorded."""
    import ratio_swipe
    base = [*SYNTH, "--subset", "32", "--test_subset", "24", "--batch-size", "16", "--uniform", "--ratios",
            "0.0625", "--epochs", "1", "--keep_checkpoints", "all", *map(str, dirs(tmp_path))]
    seeds = []
    for i in range(5):
        ratio_swipe.main([*base, "--save", f"run_{i}"])
        seeds.append(io.load_result(tmp_path / f"plots/vgg/run_{i}_6.pk")["seed"])
        assert f"seed {seeds[-1]} (drawn at random, none given; --seed {seeds[-1]} repeats this run)" \
            in capsys.readouterr().out
    assert len(set(seeds)) == 5
    first = io.load_result(tmp_path / "plots/vgg/run_0_6.pk")
    assert (first["precision"], first["test_order"], first["bn_init"]) == ("fp32", "shuffled", "half")

    ratio_swipe.main([*base, "--save", "again", "--seed", str(seeds[0])])
    assert curves_of(io.load_result(tmp_path / "plots/vgg/again_6.pk")) == curves_of(first)

    # Resume: drop run_1's result, ask for a second epoch without a seed: it continues with seed[1].
    os.remove(tmp_path / "plots/vgg/run_1_6.pk")
    ratio_swipe.main([*base, "--epochs", "2", "--save", "run_1"])  # the last --epochs counts
    out = capsys.readouterr().out
    assert f"seed {seeds[1]} (stored in" in out and "resuming from" in out
    resumed = io.load_result(tmp_path / "plots/vgg/run_1_6.pk")
    assert resumed["seed"] == seeds[1] and len(resumed["test_acc"]) == 2

    ratio_swipe.main([*base, "--save", "bf16", "--seed", "3", "--precision", "bf16", "--test_order", "fixed"])
    bf16 = io.load_result(tmp_path / "plots/vgg/bf16_6.pk")
    assert (bf16["precision"], bf16["test_order"], bf16["seed"]) == ("bf16", "fixed", 3)


def test_plot_ratio_warns_when_two_seeds_of_a_cell_share_a_run_seed(tmp_path):
    from utils import report
    curves = {k: [50.0] for k in ("train_acc", "train_loss", "test_acc", "test_loss")}
    for name, seed in (("m_0", 7), ("m_1", 7), ("m_2", 8)):
        io.save_result(str(tmp_path / "vgg" / f"{name}_25.pk"), {"ratio": 0.25, **curves, "seed": seed})
    notes = []
    found = report.read_seeds(str(tmp_path), "vgg", "m", 0.25, [0, 1, 2], log=notes.append)
    assert len(found) == 3 and len(notes) == 1
    assert "m_0_25.pk and" in notes[0] and "m_1_25.pk were trained with the same seed 7" in notes[0]


def test_plan_widths_convcut_and_uniform():
    plans, _ = swipe.plan_widths(namespace(model="resnet18", convcut=True), "convcut", [0.5], 10, {})
    assert plans[0][1] == [int(w * 0.5) for w in MODELS["resnet18"].DEFAULT_WIDTHS]


def test_seeds_and_ratios():
    assert swipe.CIFAR_RATIOS == (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert swipe.TINY_RATIOS == (0.25, 0.5, 0.75, 1.0)
    assert run.init_seed(0, 0.5) == run.init_seed(0, 0.5)
    assert len({run.init_seed(s, r) for s in (0, 1) for r in swipe.CIFAR_RATIOS}) == 16
    assert swipe.schedule_for("tinyimagenet") == "tiny" and swipe.schedule_for("CIFAR100") == "cifar"
    assert swipe.choose_method(namespace()) == "neuralscale"
    assert swipe.choose_method(namespace(morph=True)) == "morph"


def write_tiny(root, classes=3, train=4, test=2):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}" / "images"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")


def test_imagenet_ratio_swipe(tmp_path):
    """TinyImageNet from ImageFolder train/ and test/ trees: Tiny strides (200 classes), Tiny schedule."""
    write_tiny(tmp_path / "tiny")
    proc = run_script("imagenet_ratio_swipe.py", "--model", "resnet18", "--data_dir", tmp_path / "tiny",
                      "--device", "cpu", "--no_latency", "--batch-size", "4", "--test-batch-size", "6",
                      "--uniform", "--ratios", "0.25", "--epochs", "2", "--save", "tiny", *dirs(tmp_path))
    result = io.load_result(tmp_path / "plots/resnet18/tiny_25.pk")
    assert result["dataset"] == "tinyimagenet" and result["ratio"] == 0.25
    assert all(len(result[k]) == 2 for k in CURVES)
    assert result["lr"] == [0.1, 0.1]
    assert result["widths"] == [int(w * 0.25) for w in MODELS["resnet18"].DEFAULT_WIDTHS]
    assert result["params"] == actual_params(build_model("resnet18", result["widths"], 200))
    assert result["macs"] == count_macs("resnet18", result["widths"], 200, 64)
    assert os.listdir(tmp_path / "models/resnet18") == ["tiny_25_best_model.pt"]
    assert proc.stdout.count(" epoch ") == 2  # one summary line per epoch
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d resnet18 tinyimagenet uniform r=0.25 seed=\d+ \| ratio 1/1 "
                     r"epoch 2/2 lr 0.1 \| train loss [\d.]+ acc [\d.]+ \| test loss [\d.]+ acc [\d.]+ \([\d.]+ dataset\) "
                     r"\| best [\d.]+ @\d \| [\d.]+s; elapsed \d:\d\d:\d\d, ETA 0:00:00$", proc.stdout, re.M)


def test_keep_checkpoints_all_and_none(tmp_path):
    """all: the resumable checkpoint stays beside the best-epoch weights; none: neither is left (and the
    best-epoch file is never written), while the result and its CSV are the same."""
    for keep in ("all", "none"):
        run_script("ratio_swipe.py", *SYNTH, "--subset", "32", "--test_subset", "16", "--batch-size", "16",
                   "--uniform", "--ratios", "0.0625", "--epochs", "2", "--seed", "0", "--keep_checkpoints", keep,
                   "--save", "run", *dirs(tmp_path / keep))
    assert sorted(os.listdir(tmp_path / "all/models/vgg")) == ["run_6_best_model.pt", "run_6_checkpoint.pt"]
    assert os.listdir(tmp_path / "none/models/vgg") == []
    for name in ("run_6.csv",):
        assert (tmp_path / "all/plots/vgg" / name).read_bytes() == (tmp_path / "none/plots/vgg" / name).read_bytes()
    assert curves_of(io.load_result(tmp_path / "all/plots/vgg/run_6.pk")) == \
        curves_of(io.load_result(tmp_path / "none/plots/vgg/run_6.pk"))


def test_tiny_morph_lists_reach_imagenet_ratio_swipe():
    """The authors' imagenet script crashed on --morph --model mobilenetv2 (args.mode); here both Tiny
    lists come from ratio_swipe.PRUNED_FILTERS and rescale to every Tiny ratio."""
    import imagenet_ratio_swipe
    for model in ("resnet18", "mobilenetv2"):
        args = namespace(model=model, dataset="tinyimagenet", morph=True)
        plans, info = swipe.plan_widths(args, "morph", swipe.TINY_RATIOS, 200, imagenet_ratio_swipe.PRUNED_FILTERS)
        assert info["pruned_widths"] == imagenet_ratio_swipe.PRUNED_FILTERS[(model, "tinyimagenet")]
        budgets = [MODELS[model].formula_params([int(w * r) for w in MODELS[model].DEFAULT_WIDTHS], 200)
                   for r, _ in plans]
        for (ratio, widths), budget in zip(plans, budgets):
            assert abs(MODELS[model].formula_params(widths, 200) - budget) <= 0.01 * budget


BAD = {
    "descent_idx past the record": (["--prune_fname", "search", "--descent_idx", "5"], "past the record"),
    "morph without a list": (["--morph"], "--morph has no pruned widths for vgg on synthetic"),
    "missing CIFAR10": (["--uniform", "--dataset", "CIFAR10", "--download", "never"], "CIFAR10 not found"),
    "two methods": (["--uniform", "--morph"], "at most one of"),
    "neuralscale without a record": ([], "needs --prune_fname"),
    "convcut on vgg": (["--convcut"], "--convcut applies to resnet18 and mobilenetv2"),
    "bad ratio": (["--uniform", "--ratios", "0"], "--ratios must be positive"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path, case):
    flags, message = BAD[case]
    write_record(tmp_path / "rec", "search")
    (tmp_path / "empty").mkdir()
    proc = run_script("ratio_swipe.py", *SYNTH, "--data_dir", tmp_path / "empty", "--ratios", "0.25",
                      "--epochs", "1", "--save", "run", *dirs(tmp_path), *flags, check=False)
    assert_one_line_error(proc)
    assert message in proc.stderr
    assert not (tmp_path / "plots").exists() and not (tmp_path / "models").exists()
    assert os.listdir(tmp_path / "empty") == []


def test_ctrl_c_says_the_same_command_resumes(tmp_path):
    """SIGINT (Ctrl-C) during a run: exit status 130, and the last line says that the same command
    resumes; it does, from the epoch the checkpoint holds."""
    from utils.base import RESUMES_EPOCH
    cmd = swipe_cmd(tmp_path, ratios=("0.25",), epochs=3)
    checkpoint = tmp_path / "models/vgg/run_25_checkpoint.pt"
    proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for([checkpoint], proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == RESUMES_EPOCH
    assert "resuming from" in run_script(*cmd).stdout
