"""The adversarial findings of issue 13, one test each (numbered as in the issue): every careless or hostile
input ends in one `error:` line with exit status 2, names the file at fault, and writes nothing."""
import errno
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from model import MODELS, build_model
from test_identity import T, cli, dirs, files_under, one_line_error
from utils import io, run
from utils.base import UserError

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

SEARCH = ["--dataset", "synthetic", "--subset", "64", "--batch-size", "32", "--warmup", "1", "--iterations",
          "1", "--prune_every", "1", "--prune_per_step", "100", "--search_ratio", "0.25", "--device", "cpu",
          "--model", "vgg"]
VGG = MODELS["vgg"].DEFAULT_WIDTHS


def all_paths(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def search_main():
    import architecture_descent
    return architecture_descent.main


# -- silent wrong results and writes in the wrong place -----------------------------------------------

def test_1_search_record_is_refused_under_other_settings(tmp_path, monkeypatch, capsys):
    base = [*SEARCH, "--record_dir", tmp_path / "rec", "--save", "s", "--seed", "0"]
    assert cli(monkeypatch, capsys, search_main(), *base)[0] == 0
    record = tmp_path / "rec/s.pk"
    assert io.load_pickle(record)["settings"]["lr"] == 0.1
    before = {p: (tmp_path / "rec" / p).read_bytes() for p in os.listdir(tmp_path / "rec")}
    for flags, change in ((["--search_ratio", "0.5"], "search_ratio: 0.25 there, 0.5 now"),
                          (["--lr", "0.05"], "lr: 0.1 there, 0.05 now"),
                          (["--seed", "1"], "seed: 0 there, 1 now")):
        code, _, err = cli(monkeypatch, capsys, search_main(), *base, *flags)
        one_line_error(code, err, change, "--overwrite", "s.pk")
    assert {p: (tmp_path / "rec" / p).read_bytes() for p in os.listdir(tmp_path / "rec")} == before
    code, out, _ = cli(monkeypatch, capsys, search_main(), *base, "--lr", "0.05", "--overwrite")
    assert code == 0 and "recomputing" in out
    assert io.load_pickle(record)["settings"]["lr"] == 0.05
    assert io.load_pickle(tmp_path / "rec/s_param0.pk")["settings"]["lr"] == 0.05


def test_2_a_diverged_search_writes_no_record(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, search_main(), *SEARCH, "--record_dir", tmp_path / "rec",
                       "--save", "s", "--lr", "1e30")
    one_line_error(code, err, "iteration 0: the training loss became nan", "lower --lr")
    assert files_under(tmp_path) == []


def test_2_a_nan_criterion_stops_the_pruner():
    """Gradients can overflow while the loss stays finite: a NaN threshold would prune nothing."""
    from model import gates_of
    from utils.prune import TaylorFOPruner
    net = build_model("vgg", [4] * 8, 10, gates=True)
    gates = gates_of(net)
    pruner = TaylorFOPruner(gates, prune_every=1)
    for gate in gates:
        gate.weight.grad = torch.full_like(gate.weight, float("nan"))
    assert pruner.step() is None  # the authors' counter skips step 0
    with pytest.raises(UserError, match="the Taylor criterion became nan at prune step 1"):
        pruner.step()


def test_3_fine_tune_refuses_a_network_of_other_widths(tmp_path, monkeypatch, capsys):
    import fine_tune
    import ratio_swipe
    assert cli(monkeypatch, capsys, ratio_swipe.main, *T, "--uniform", "--ratios", "0.125", "--save", "small",
               *dirs(tmp_path))[0] == 0
    small = tmp_path / "models/vgg/small_12_best_model.pt"
    code, _, err = cli(monkeypatch, capsys, fine_tune.main, *T, "--resume", small, "--save", "ft",
                       *dirs(tmp_path))
    one_line_error(code, err, small, "default widths")
    assert not (tmp_path / "plots/vgg/ft_75.pk").exists()


def _fit_params_main():
    import fit_params
    return fit_params.main


def _record(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    io.write_prune_csv(folder / f"{name}.csv", rows)


GOOD_ROWS = [[int(w * f) for w in VGG] for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)]


@pytest.mark.parametrize("script, flags", [
    ("ratio_swipe", ["--save", "../../escaped"]),
    ("train_norm", ["--save", "../../escaped"]),
    ("ratio_swipe", ["--save", "a/b/c"]),
    ("ratio_swipe", ["--save", ""]),
    ("fit_params", ["--prune_fname", "../x"]),
])
def test_4_a_run_name_is_a_plain_file_name(tmp_path, monkeypatch, capsys, script, flags):
    work = tmp_path / "w"
    _record(tmp_path, "x_0", GOOD_ROWS)  # what --prune_fname ../x reaches from w/rec
    before = all_paths(tmp_path)
    if script == "fit_params":
        code, _, err = cli(monkeypatch, capsys, _fit_params_main(), "--record_dir", work / "rec", *flags)
    else:
        main = __import__(script).main
        swipe_flags = ["--uniform", "--ratios", "0.25"] if script == "ratio_swipe" else []
        code, _, err = cli(monkeypatch, capsys, main, *T, *swipe_flags, *dirs(work), *flags)
    one_line_error(code, err, "plain file name")
    assert all_paths(tmp_path) == before


def test_5_fit_params_writes_nothing_unless_every_fit_succeeds(tmp_path, monkeypatch, capsys):
    rec = tmp_path / "rec"
    _record(rec, "x_0", GOOD_ROWS)
    _record(rec, "x_1", GOOD_ROWS[:-1] + [[0] * len(VGG)])  # a width of 0 cannot be fitted
    io.save_pickle({"train_alpha": np.ones(8), "train_beta": np.zeros(8)}, rec / "x_param0.pk")
    before = (rec / "x_param0.pk").read_bytes()
    code, _, err = cli(monkeypatch, capsys, _fit_params_main(), "--record_dir", rec, "--prune_fname", "x")
    one_line_error(code, err, rec / "x_1.csv")
    assert (rec / "x_param0.pk").read_bytes() == before and not (rec / "x.pk").exists()


# -- tracebacks instead of one line ------------------------------------------------------------------

class _Payload:
    """Creates a file when unpickled: proof that the payload ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("kind", ["garbage", "torch.save payload", "pickle payload"])
def test_6_a_bad_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, kind):
    import ratio_swipe
    checkpoint = tmp_path / "models/vgg/run_25_checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    marker = tmp_path / "payload_ran"
    if kind == "garbage":
        checkpoint.write_bytes(os.urandom(200))
    elif kind == "torch.save payload":
        torch.save({"epoch": 1, "x": _Payload(marker)}, checkpoint)
    else:
        with open(checkpoint, "wb") as f:
            pickle.dump({"x": _Payload(marker)}, f)
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *T, "--uniform", "--ratios", "0.25", "--save", "run",
                       *dirs(tmp_path))
    line = one_line_error(code, err, checkpoint)
    assert "weights_only=False" not in line and not marker.exists()
    assert not (tmp_path / "plots/vgg/run_25.pk").exists()


class _FullDisk:
    """Pickling writes part of the file, then the disk is full."""

    def __reduce__(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_7_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out" / "r.pk"
    with pytest.raises(UserError, match=f"cannot write {path}: No space left on device"):
        io.save_pickle({"a": np.zeros(1000), "b": _FullDisk()}, path)
    assert os.listdir(tmp_path / "out") == []
    # A temporary file left by a killed writer goes at the next write; a live writer's stays.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "out" / f".r.pk.{dead.pid}.abc123.tmp"
    live = tmp_path / "out" / f".r.pk.{os.getppid()}.def456.tmp"
    other = tmp_path / "out" / f".q.pk.{dead.pid}.abc123.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    io.save_pickle({"a": 1}, path)
    assert sorted(os.listdir(tmp_path / "out")) == sorted([live.name, other.name, "r.pk"])


def _plot_ratio_main():
    import plot_ratio
    return plot_ratio.main


def _list_architecture_main():
    import list_architecture
    return list_architecture.main


@pytest.mark.parametrize("script, ratio", [("ratio_swipe", "inf"), ("plot_ratio", "inf"), ("plot_ratio", "nan"),
                                           ("list_architecture", "inf"), ("list_architecture", "nan")])
def test_8_non_finite_ratios(tmp_path, monkeypatch, capsys, script, ratio):
    if script == "ratio_swipe":
        import ratio_swipe
        argv = [ratio_swipe.main, *T, "--uniform", "--save", "run"]
    elif script == "plot_ratio":
        argv = [_plot_ratio_main(), "--model", "vgg", "--dataset", "CIFAR10", "--no_latency", "--no_figs"]
    else:
        argv = [_list_architecture_main(), "--model", "vgg", "--dataset", "CIFAR10"]
    code, _, err = cli(monkeypatch, capsys, *argv, "--ratios", "0.25", ratio, *dirs(tmp_path))
    one_line_error(code, err, "--ratios must be positive and finite", ratio)
    assert all_paths(tmp_path) == []


def test_9_a_ratio_too_wide_to_build(tmp_path, monkeypatch, capsys):
    import ratio_swipe
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *T, "--uniform", "--ratios", "1e4", "--save", "run",
                       *dirs(tmp_path))
    one_line_error(code, err, "ratio 10000", f"{512 * 10000:,} units", "65,536")
    assert all_paths(tmp_path) == []


@pytest.mark.parametrize("which, value", [("alpha", np.nan), ("alpha", 1e308), ("beta", np.nan), ("beta", 1e308)])
def test_10_a_fit_of_nan_or_huge_values(tmp_path, monkeypatch, capsys, which, value):
    import ratio_swipe
    alpha, beta = np.full(8, 0.5), np.full(8, 0.4)
    (alpha if which == "alpha" else beta)[3] = value
    record = tmp_path / "bad.pk"
    io.save_fits(record, [(alpha, beta)])
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *T, "--prune_fname", record, "--descent_idx", "0",
                       "--ratios", "0.25", "--save", "run", *dirs(tmp_path))
    one_line_error(code, err, record, "not a usable fit")
    assert all_paths(tmp_path) == ["bad.pk"]


@pytest.mark.parametrize("key, value", [("test_acc", "95.1"), ("test_acc", [[1.0, 2.0], [3.0]]),
                                        ("latency_ms", "fast")])
def test_11_a_result_pickle_of_the_wrong_types(tmp_path, monkeypatch, capsys, key, value):
    path = tmp_path / "plots/vgg/u_0_25.pk"
    path.parent.mkdir(parents=True)
    result = {"ratio": 0.25, "train_acc": [1.0], "train_loss": [1.0], "test_acc": [50.0], "test_loss": [1.0]}
    io.save_pickle({**result, key: value}, path)
    code, _, err = cli(monkeypatch, capsys, _plot_ratio_main(), "--model", "vgg", "--dataset", "CIFAR10",
                       "--methods", "uniform", "--uniform_name", "u", "--seeds", "0", "--ratios", "0.25",
                       "--no_latency", "--no_figs", *dirs(tmp_path))
    one_line_error(code, err, path, key)


@pytest.mark.parametrize("script", ["ratio_swipe", "architecture_descent"])
def test_12_lr_nan_is_refused_at_parse_time(tmp_path, monkeypatch, capsys, script):
    if script == "ratio_swipe":
        import ratio_swipe
        argv = [ratio_swipe.main, *T, "--uniform", "--ratios", "0.25", *dirs(tmp_path)]
    else:
        argv = [search_main(), *SEARCH, "--record_dir", tmp_path / "rec"]
    code, _, err = cli(monkeypatch, capsys, *argv, "--save", "run", "--lr", "nan")
    one_line_error(code, err, "--lr must be positive and finite, got nan")
    assert all_paths(tmp_path) == []


def test_12_the_loss_check_quotes_the_loss_that_went_non_finite(tmp_path, monkeypatch):
    """Training finite, test loss NaN: the error quotes the test loss, not the finite training loss."""
    monkeypatch.setattr(run, "train_epoch", lambda *a, **k: {"loss": 1.25, "acc": 10.0, "acc_dataset": 10.0})
    monkeypatch.setattr(run, "evaluate", lambda *a, **k: {"loss": float("nan"), "acc": 10.0, "acc_dataset": 10.0})
    monkeypatch.setattr(run, "log", lambda message: None)
    net = build_model("vgg", [4] * 8, 10)
    with pytest.raises(UserError) as err:
        run.train_run(net, None, None, device=torch.device("cpu"), schedule="cifar", epochs=1, lr=0.1,
                      momentum=0.5, weight_decay=5e-4, checkpoint_path=str(tmp_path / "c.pt"),
                      best_path=str(tmp_path / "b.pt"), fingerprint={}, name="run")
    assert "test loss became nan" in str(err.value) and "1.25" not in str(err.value)


def test_7_a_full_data_folder_leaves_no_cache_temporary(tmp_path, monkeypatch):
    """The TinyImageNet cache is optional: a full disk (torch.save raises RuntimeError) decodes anyway and
    removes its temporary file."""
    from PIL import Image

    from utils import data
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.JPEG")

    def full_disk(obj, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(data.torch, "save", full_disk)
    images, labels = data._tiny_tensors(str(tmp_path), "train", [str(tmp_path / "a.JPEG")], np.zeros(1, np.int64))
    assert images.shape == (1, 3, 64, 64) and labels.tolist() == [0]
    assert sorted(os.listdir(tmp_path)) == ["a.JPEG"]
