"""--plateau (ratio_swipe.py, beyond the paper): after the schedule's epochs, train on at its last LR
until the best test accuracy rose by less than the threshold over the last quarter of the epochs run.
The loop is driven by scripted test accuracies (an injected evaluate), the flags end to end."""
import pytest
import torch

from model import build_model
from conftest import run_script
from test_identity import cli
from utils import io, run
from utils.train import plateau_gain

SYNTH = ["--model", "vgg", "--dataset", "synthetic", "--device", "cpu", "--no_latency", "--subset", "32",
         "--test_subset", "16", "--batch-size", "16", "--uniform", "--ratios", "0.0625", "--seed", "0"]


def dirs(root):
    return ["--plots_dir", root / "plots", "--models_dir", root / "models", "--record_dir", root / "rec"]


def test_plateau_gain_is_the_rise_over_the_last_quarter():
    assert plateau_gain([10, 20, 30, 40]) == 10  # last 1 of 4
    assert plateau_gain([10, 20, 30, 40, 41]) == 11  # last 2 of 5: 41 against 30
    assert plateau_gain([50, 40, 45, 44]) == 0  # the best came first
    assert plateau_gain([84.05, 84.35]) == 0.3  # not 0.30000000000000004: 0.3 is not < 0.3
    assert plateau_gain([70.0]) is None


def scripted(monkeypatch, accuracies):
    """train_run's test accuracy at epoch e is accuracies[e - 1]; one SGD step per epoch is not taken."""
    lrs = []
    monkeypatch.setattr(run, "train_epoch", lambda net, loader, epoch, optimizer, *a, **k: (
        lrs.append(optimizer.param_groups[0]["lr"]) or {"loss": 1.0, "acc": 10.0, "acc_dataset": 10.0}))
    monkeypatch.setattr(run, "evaluate", lambda net, loader, device, epoch, **k: {
        "loss": 1.0, "acc": accuracies[epoch - 1], "acc_dataset": accuracies[epoch - 1]})
    monkeypatch.setattr(run, "log", lambda message: None)
    return lrs


def train(tmp_path, epochs, **plateau):
    net = build_model("vgg", [4] * 8, 10)
    curves, _ = run.train_run(net, None, None, device=torch.device("cpu"), schedule="cifar", epochs=epochs,
                              lr=0.1, momentum=0.9, weight_decay=5e-4, checkpoint_path=str(tmp_path / "c.pt"),
                              best_path=str(tmp_path / "b.pt"), fingerprint={}, name="run", scale_schedule=True,
                              **plateau)
    return curves


RISING = [10, 20, 30, 40, 41, 41.1, 41.1, 41.1, 41.2, 41.2, 41.2, 41.2]


def test_a_run_goes_on_at_the_last_lr_until_it_has_plateaued(tmp_path, monkeypatch):
    lrs = scripted(monkeypatch, RISING)
    curves = train(tmp_path, 4, plateau=0.3, plateau_max=12)
    # After 4: rise 10; 5: 11 (41 vs 30); 6: 1.1 (vs 40); 7: 0.1 (vs 41) < 0.3: stop.
    assert curves["test_acc"] == RISING[:7]
    scheduled = run.lr_curve("cifar", 0.1, 4, True)
    assert lrs == scheduled + [scheduled[-1]] * 3 == curves["lr"]


def test_without_plateau_the_run_is_its_epochs(tmp_path, monkeypatch):
    scripted(monkeypatch, RISING)
    assert len(train(tmp_path, 4)["test_acc"]) == 4


def test_plateau_max_caps_the_run(tmp_path, monkeypatch):
    scripted(monkeypatch, RISING)
    assert len(train(tmp_path, 4, plateau=0.3, plateau_max=5)["test_acc"]) == 5
    # A curve that keeps rising a point an epoch: it runs to the cap.
    scripted(monkeypatch, [float(a) for a in range(10, 30)])
    assert len(train(tmp_path / "b", 4, plateau=0.3, plateau_max=11)["test_acc"]) == 11


def test_a_resumed_run_past_its_epochs_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    scripted(monkeypatch, RISING)
    train(tmp_path, 4, plateau=0.3, plateau_max=6)  # "killed" at epoch 6, its checkpoint kept
    scripted(monkeypatch, RISING)
    assert train(tmp_path, 4, plateau=0.3, plateau_max=12)["test_acc"] == RISING[:7]
    # A checkpoint that had plateaued already trains no further epoch.
    lrs = scripted(monkeypatch, RISING)
    assert train(tmp_path, 4, plateau=0.3, plateau_max=12)["test_acc"] == RISING[:7] and lrs == []


def test_a_finished_plateau_result_is_between_epochs_and_plateau_max():
    settings = {"epochs": 4, "plateau": 0.3, "plateau_max": 8}
    assert [run.complete(settings, n) for n in (3, 4, 7, 8, 9)] == [False, True, True, True, False]
    assert run.complete({"epochs": 4}, 4) and not run.complete({"epochs": 4}, 5)


def test_swipe_with_plateau_end_to_end(tmp_path):
    run_script("ratio_swipe.py", *SYNTH, "--epochs", "2", "--plateau", "100", "--save", "run", *dirs(tmp_path))
    result = io.load_result(tmp_path / "plots/vgg/run_6.pk")
    # Any rise is under 100 points: the schedule's 2 epochs, and what was checked is stored.
    assert result["epochs_run"] == len(result["test_acc"]) == 2 and result["plateau_gain"] is not None
    assert result["settings"]["plateau"] == 100.0 and result["settings"]["plateau_max"] == 4
    again = run_script("ratio_swipe.py", *SYNTH, "--epochs", "2", "--plateau", "100", "--save", "run",
                       *dirs(tmp_path))
    assert "skipped (same settings)" in again.stdout
    # The same run name without --plateau is another run: refused, the result untouched.
    other = run_script("ratio_swipe.py", *SYNTH, "--epochs", "2", "--save", "run", *dirs(tmp_path), check=False)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "plateau: 100.0 there, None now" in other.stderr
    assert io.load_result(tmp_path / "plots/vgg/run_6.pk")["settings"]["plateau"] == 100.0


@pytest.mark.parametrize("flags, message", [
    (("--plateau", "0"), "--plateau must be positive and finite, got 0"),
    (("--plateau", "nan"), "--plateau must be positive and finite, got nan"),
    (("--plateau", "0.3", "--plateau_max", "1"), "--plateau_max 1 is below --epochs 2"),
    (("--plateau_max", "4"), "--plateau_max needs --plateau"),
])
def test_bad_plateau_flags_are_one_line(tmp_path, monkeypatch, capsys, flags, message):
    import ratio_swipe
    code, _, err = cli(monkeypatch, capsys, ratio_swipe.main, *SYNTH, "--epochs", "2", *flags, "--save", "run",
                       *dirs(tmp_path))
    assert code == 2 and err.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "plots").exists()
