"""A run is identified by its settings (issue 13): a finished result, a checkpoint or a search record of
other settings is refused in one line unless --overwrite replaces it; the same settings skip as before;
result names never collide and the stored ratio is checked when a file is read."""
import sys

import pytest

from utils import io, run, swipe
from utils.base import UserError, run_main

pytestmark = pytest.mark.slow  # scripts run end to end: `make test-fast` leaves them out

# "T" of the issue: tiny synthetic runs on the CPU.
T = ["--dataset", "synthetic", "--subset", "64", "--test_subset", "64", "--epochs", "1", "--device", "cpu",
     "--no_latency", "--batch-size", "32", "--model", "vgg"]


def dirs(root):
    return ["--plots_dir", root / "plots", "--models_dir", root / "models", "--record_dir", root / "rec",
            "--figs_dir", root / "figs"]


def cli(monkeypatch, capsys, main, *argv):
    """Run a script's main() in this process as its command line would: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["script", *map(str, argv)])
    try:
        run_main(main)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_swipe_refuses_other_settings_and_overwrite_replaces(tmp_path, monkeypatch, capsys):
    import ratio_swipe
    base = [*T, "--uniform", "--ratios", "0.25", "--save", "run", "--keep_checkpoints", "all", *dirs(tmp_path)]
    path = tmp_path / "plots/vgg/run_25.pk"
    assert cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "0")[0] == 0
    before = path.read_bytes()
    assert io.load_result(path)["settings"]["seed"] == 0

    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "1")
    line = one_line_error(code, err, path, "seed: 0 there, 1 now", "--overwrite", "--save")
    assert "epochs" not in line
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "0", "--epochs", "2")
    one_line_error(code, err, path, "epochs: 1 there, 2 now")
    assert path.read_bytes() == before

    code, out, _ = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "0")
    assert code == 0 and "exists, skipped" in out and path.read_bytes() == before

    code, out, _ = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "1", "--overwrite")
    assert code == 0 and "replacing a result of other settings (seed: 0 there, 1 now)" in out
    assert io.load_result(path)["seed"] == 1 and io.load_result(path)["settings"]["seed"] == 1

    # The checkpoint now belongs to seed 1: without its result, seed 0 is refused there too.
    path.unlink()
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "0")
    one_line_error(code, err, tmp_path / "models/vgg/run_25_checkpoint.pt", "seed: 1 there, 0 now")
    assert not path.exists()
    code, out, _ = cli(monkeypatch, capsys, ratio_swipe.main, *base, "--seed", "0", "--overwrite")
    assert code == 0 and "starting over" in out and io.load_result(path)["seed"] == 0


def test_train_norm_and_fine_tune_refuse_other_settings(tmp_path, monkeypatch, capsys):
    import fine_tune
    import train_norm
    norm = [*T, "--subset", "32", "--test_subset", "32", "--save", "norm", *dirs(tmp_path)]
    assert cli(monkeypatch, capsys, train_norm.main, *norm)[0] == 0
    path = tmp_path / "plots/vgg/norm_100.pk"
    before = path.read_bytes()
    code, _, err = cli(monkeypatch, capsys, train_norm.main, *norm, "--lr", "0.05")
    one_line_error(code, err, path, "lr: 0.1 there, 0.05 now")
    assert path.read_bytes() == before

    ft = [*T, "--subset", "32", "--test_subset", "32", "--resume", "norm", "--save", "ft", *dirs(tmp_path)]
    assert cli(monkeypatch, capsys, fine_tune.main, *ft)[0] == 0
    result = tmp_path / "plots/vgg/ft_75.pk"
    before = result.read_bytes()
    code, out, _ = cli(monkeypatch, capsys, fine_tune.main, *ft)
    assert code == 0 and "nothing to do" in out and result.read_bytes() == before
    code, _, err = cli(monkeypatch, capsys, fine_tune.main, *ft, "--epochs", "2")
    one_line_error(code, err, result, "epochs: 1 there, 2 now")
    assert result.read_bytes() == before
    assert cli(monkeypatch, capsys, fine_tune.main, *ft, "--epochs", "2", "--overwrite")[0] == 0
    assert len(io.load_result(result)["test_acc"]) == 2


def test_finished_compares_settings(tmp_path, monkeypatch):
    """Old results (no "settings") are compared on the keys they hold, and refused even when those match
    (issue 19: the rest is unknown); a seed the user did not give (None) matches any stored seed;
    --overwrite takes over an unreadable file."""
    monkeypatch.setattr(swipe, "log", lambda message: None)
    path = tmp_path / "r_25.pk"
    curves = {"train_acc": [1.0] * 5, "train_loss": [2.0] * 5, "test_acc": [3.0] * 5, "test_loss": [4.0] * 5}
    io.save_result(path, {"ratio": 0.25, **curves, "seed": 3, "epochs": 5})
    with pytest.raises(UserError, match="settings are unknown: it stores none, so lr cannot be checked"):
        run.finished(path, {"seed": 3, "epochs": 5, "lr": 0.1, "ratio": 0.25}, False)
    with pytest.raises(UserError, match="epochs: 5 there, 6 now"):
        run.finished(path, {"seed": 3, "epochs": 6, "ratio": 0.25}, False)
    assert not run.finished(path, {"seed": 3, "epochs": 6, "ratio": 0.25}, True)
    io.save_result(path, {"ratio": 0.25, **curves, "settings": {"seed": 3, "lr": 0.1, "epochs": 5}})
    assert run.finished(path, {"seed": None, "lr": 0.1, "epochs": 5, "ratio": 0.25}, False)
    with pytest.raises(UserError, match="seed: 3 there, 4 now"):
        run.finished(path, {"seed": 4, "lr": 0.1, "epochs": 5, "ratio": 0.25}, False)
    with pytest.raises(UserError, match="ratio: 0.25 there, 0.255 now"):
        run.finished(path, {"seed": 3, "lr": 0.1, "epochs": 5, "ratio": 0.255}, False)
    path.write_bytes(b"garbage")
    assert not run.finished(path, {"seed": 3}, True)
    with pytest.raises(UserError):
        run.finished(path, {"seed": 3}, False)


def test_colliding_ratio_names_are_refused(tmp_path, monkeypatch, capsys):
    import ratio_swipe
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *T, "--uniform", "--ratios", "0.25", "0.12",
                       "0.125", "--save", "run", *dirs(tmp_path))
    one_line_error(code, err, "0.12 and 0.125", tmp_path / "plots/vgg/run_12.pk")
    assert files_under(tmp_path) == []
    # A repeated ratio is the same file and counts once.
    assert io.distinct_ratios([0.25, 0.5, 0.25], str) == [0.25, 0.5]


def test_truncated_ratio_is_checked_when_reading(tmp_path, monkeypatch, capsys):
    """0.285 and 0.29 are both _28: the ratio stored in the pickle decides."""
    import plot_ratio
    path = tmp_path / "plots/vgg/u_0_28.pk"
    path.parent.mkdir(parents=True)
    io.save_result(path, {"ratio": 0.285, "train_acc": [1.0], "train_loss": [1.0], "test_acc": [50.0],
                          "test_loss": [1.0]})
    assert io.load_result(path, 0.285)["ratio"] == 0.285
    with pytest.raises(UserError, match="holds ratio 0.285, not 0.29"):
        io.load_result(path, 0.29)
    table = ["--model", "vgg", "--dataset", "CIFAR10", "--methods", "uniform", "--uniform_name", "u",
             "--seeds", "0", "--no_latency", "--no_figs", *dirs(tmp_path)]
    code, _, err = cli(monkeypatch, capsys, plot_ratio.main, *table, "--ratios", "0.29")
    one_line_error(code, err, path, "holds ratio 0.285, not 0.29")
    code, out, _ = cli(monkeypatch, capsys, plot_ratio.main, *table, "--ratios", "0.285")
    assert code == 0 and "50.00" in out


def test_imagenet_ratio_swipe_refuses_other_settings(tmp_path, monkeypatch, capsys):
    """The same check in imagenet_ratio_swipe.py, before any data is read; --overwrite gets past it."""
    import imagenet_ratio_swipe
    path = tmp_path / "plots/resnet18/tiny_25.pk"
    path.parent.mkdir(parents=True)
    io.save_result(path, {"ratio": 0.25, "train_acc": [1.0], "train_loss": [1.0], "test_acc": [2.0],
                          "test_loss": [1.0], "seed": 0, "model": "resnet18"})  # written before settings
    before = path.read_bytes()
    argv = ["--model", "resnet18", "--data_dir", tmp_path / "no_data", "--device", "cpu", "--no_latency",
            "--uniform", "--ratios", "0.25", "--epochs", "1", "--save", "tiny", "--seed", "1", *dirs(tmp_path)]
    code, _, err = cli(monkeypatch, capsys, imagenet_ratio_swipe.main, *argv)
    one_line_error(code, err, path, "seed: 0 there, 1 now")
    code, out, err = cli(monkeypatch, capsys, imagenet_ratio_swipe.main, *argv, "--overwrite")
    assert "replacing a result of other settings" in out
    one_line_error(code, err, "tinyimagenet")  # past the check, the data set is missing
    assert path.read_bytes() == before
