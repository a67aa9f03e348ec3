"""utils.run.RunSettings: the engine's settings, built from a script's flags by RunSettings.from_args.
The fingerprints (a checkpoint's, and a result's "settings") are the very dicts the scripts stored when
the engine read the argparse Namespace, so existing results and checkpoints keep matching."""
import dataclasses
import os
import textwrap

import pytest

import fine_tune
import ratio_swipe
from utils import io, run, swipe
from utils.base import CIFAR_LIKE
from utils.cli import budget_flags

SGD = {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.0005, "batch_size": 128}
DEFAULTS = {"subset": None, "test_subset": None, "loader": "fast", "precision": "fp32", "bn_init": "uniform",
            "test_order": "shuffled", "scale_schedule": False}
MORE = {"method": "uniform", "ratio": 0.25, "widths": [1, 2], "schedule": "cifar"}


def swipe_settings(*flags):
    """The RunSettings of a ratio_swipe.py command line, as utils.swipe.run_swipe builds them."""
    args = swipe.parse_swipe_args(["--save", "s", *flags], "scratch_cifar", description=ratio_swipe.__doc__,
                                  datasets=CIFAR_LIKE, dataset="CIFAR10", ratios=swipe.CIFAR_RATIOS)
    budget_flags(args, args.default_ratios)
    return args, run.RunSettings.from_args(args)


# The fingerprints the engine built from these command lines' Namespace before RunSettings.
@pytest.mark.parametrize("flags, expected", [
    (["--model", "vgg", "--dataset", "synthetic", "--seed", "3"],
     {"model": "vgg", "dataset": "synthetic", "seed": 3, **SGD, "test_batch_size": 128, **DEFAULTS, **MORE}),
    (["--model", "resnet18", "--dataset", "CIFAR100", "--deterministic", "--plateau", "0.3", "--scale_schedule",
      "--test-batch-size", "64", "--subset", "100", "--test_subset", "50", "--lr", "1", "--precision", "bf16",
      "--bn_init", "ones", "--test_order", "fixed", "--loader", "torchvision", "--epochs", "4"],
     {"model": "resnet18", "dataset": "CIFAR100", "seed": None, **SGD, "lr": 1.0, "test_batch_size": 64,
      "subset": 100, "test_subset": 50, "loader": "torchvision", "precision": "bf16", "bn_init": "ones",
      "test_order": "fixed", "scale_schedule": True, "deterministic": True, "plateau": 0.3, "plateau_max": 8,
      **MORE}),
    (["--model", "vgg", "--dataset", "synthetic", "--plateau", "1", "--plateau_max", "9", "--epochs", "3"],
     {"model": "vgg", "dataset": "synthetic", "seed": None, **SGD, "test_batch_size": 128, **DEFAULTS,
      "plateau": 1.0, "plateau_max": 9, **MORE}),
    (["--model", "vgg", "--dataset", "synthetic", "--target_latency", "5ms", "--latency"],
     {"model": "vgg", "dataset": "synthetic", "seed": None, **SGD, "test_batch_size": 128, **DEFAULTS, **MORE}),
])
def test_a_swipe_command_line_gives_the_fingerprint_it_always_gave(flags, expected):
    _, settings = swipe_settings(*flags)
    fingerprint = run.fingerprint_of(settings, method="uniform", ratio=0.25, widths=[1, 2], schedule="cifar")
    assert fingerprint == expected
    assert list(fingerprint) == list(expected)  # the same order too: the pickles' bytes
    plateau = expected.get("plateau")
    assert run.run_options(settings) == {"precision": expected["precision"], "overwrite": False,
                                         "scale_schedule": expected["scale_schedule"], "plateau": plateau,
                                         "plateau_max": expected.get("plateau_max")}


def test_fine_tune_flags_give_the_fingerprint_they_always_gave():
    """fine_tune.py has no --scale_schedule, --plateau or latency budget: their defaults."""
    args = fine_tune.parse_args(["--model", "vgg", "--dataset", "synthetic", "--save", "f", "--seed", "5",
                                 "--resume", "n", "--overwrite"])
    settings = run.RunSettings.from_args(args)
    assert run.fingerprint_of(settings, method="l1", ratio=0.75, schedule="constant") == {
        "model": "vgg", "dataset": "synthetic", "seed": 5, **SGD, "lr": 0.001, "test_batch_size": 128,
        **DEFAULTS, "method": "l1", "ratio": 0.75, "schedule": "constant"}
    assert settings.overwrite and settings.budget == "params" and run.latency_protocol(settings, "cpu") == {}


def test_from_args_reads_every_setting_from_its_flag():
    args, settings = swipe_settings("--model", "vgg", "--dataset", "synthetic", "--plateau", "1", "--epochs", "3",
                                    "--target_latency", "5ms", "--latency_batch", "7", "--data_dir", "d",
                                    "--download", "never", "--out_dir", "o")
    derived = {"plateau_max": 6}  # twice --epochs
    for field in dataclasses.fields(run.RunSettings):
        assert getattr(settings, field.name) == derived.get(field.name, getattr(args, field.name)), field.name
    assert settings.budget == "latency" and settings.plots_dir == os.path.join("o", "saved_plots")
    assert run.latency_protocol(settings, "cpu") == {"batch": 7, "precision": "fp32", "clock": "wall"}


def test_with_seed_gives_new_settings_and_continues_a_stored_seed(tmp_path, capsys):
    settings = run.RunSettings(model="vgg", dataset="synthetic", plots_dir=str(tmp_path / "p"),
                               models_dir=str(tmp_path / "m"))
    seeded = run.with_seed(settings, "s")
    assert settings.seed is None and isinstance(seeded.seed, int)
    assert dataclasses.replace(seeded, seed=None) == settings
    assert run.with_seed(seeded, "s") is seeded
    with pytest.raises(dataclasses.FrozenInstanceError):
        seeded.seed = 1
    io.save_result(tmp_path / "p/vgg/s_25.pk", {"ratio": 0.25, "seed": 1234, "train_acc": [1.0], "train_loss": [1.0],
                                                  "test_acc": [1.0], "test_loss": [1.0]})
    assert run.with_seed(settings, "s").seed == 1234


def test_plateau_needs_plateau_max():
    with pytest.raises(ValueError, match="plateau needs plateau_max"):
        run.RunSettings(model="vgg", dataset="synthetic", plateau=0.3)
    assert run.RunSettings(model="vgg", dataset="synthetic", plateau=0.3, plateau_max=8).plateau_max == 8


def test_the_docstring_example_trains_one_network(tmp_path, monkeypatch, capsys):
    """utils/run.py's example, run as written: one epoch of VGG at ratio 0.25 on synthetic data; its
    result holds the settings ratio_swipe.py would store for the same run."""
    example = run.__doc__.split("is its result):\n\n")[1].split("\n\nRun again")[0]
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(example), {})
    result = io.load_result(tmp_path / "out/plots/vgg/mine_25.pk")
    assert len(result["test_acc"]) == 1 and result["seed"] == 0
    assert (tmp_path / "out/models/vgg/mine_25_best_model.pt").exists()
    _, settings = swipe_settings("--model", "vgg", "--dataset", "synthetic", "--seed", "0", "--subset", "64",
                                 "--test_subset", "64", "--batch-size", "32", "--epochs", "1")
    widths = [16, 32, 64, 64, 128, 128, 128, 128]
    assert result["settings"] == {**run.fingerprint_of(settings, method="uniform", ratio=0.25, widths=widths,
                                                       schedule="cifar"), "epochs": 1}
