"""utils.run.RunSettings and utils.descent.SearchSettings: the engines' settings, built from a script's
flags by from_args. The fingerprints (a checkpoint's, and a result's "settings") and a search record's
"settings" are the very dicts the scripts stored when the engines read the argparse Namespace, so
existing results, checkpoints and search records keep matching."""
import dataclasses
import os
import textwrap

import pytest

import fine_tune
import ratio_swipe
from utils import descent, io, run, swipe
from utils.base import CIFAR_LIKE, UserError
from utils.cli import budget_flags, make_parser

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


# -- utils.descent.SearchSettings ---------------------------------------------------------------------

def search_args(*flags, tiny=False):
    """The parsed flags of an architecture_descent.py (tiny: imagenet_architecture_descent.py) command line."""
    recipe, datasets, model, dataset = (("search_tiny", ("tinyimagenet",), "mobilenetv2", "tinyimagenet") if tiny
                                        else ("search_cifar", CIFAR_LIKE, "vgg", "CIFAR10"))
    parser = descent.add_search_args(make_parser("test"), recipe, datasets=datasets, model=model, dataset=dataset)
    return parser.parse_args(list(flags))


SEARCH = {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.0005, "warmup": 10, "batch_size": 256, "prune_every": 50,
          "prune_per_step": 10, "prune_fraction": 0.95, "search_ratio": 1.0, "exact": False, "subset": None,
          "loader": "fast", "precision": "fp32", "bn_init": "uniform", "same_norm": False, "morph": False,
          "budget": "params"}


# The search records' "settings" the engine stored for these command lines when it read the Namespace
# (search_settings of the parsed flags, --morph defaults filled in), literally, key order included.
@pytest.mark.parametrize("flags, tiny, expected", [
    (["--model", "vgg", "--dataset", "synthetic", "--save", "s", "--seed", "3"], False,
     {"model": "vgg", "dataset": "synthetic", "seed": 3, **SEARCH}),
    (["--dataset", "CIFAR100", "--save", "s", "--budget", "macs", "--exact", "--deterministic", "--seed", "0",
      "--subset", "100", "--lr", "0.05", "--momentum", "0.9", "--weight_decay", "0.001", "--precision", "bf16",
      "--bn_init", "ones", "--same_norm", "--loader", "torchvision", "--warmup", "2", "--prune_every", "3",
      "--prune_per_step", "4", "--prune_fraction", "0.9", "--search_ratio", "0.5", "--batch-size", "64",
      "--iterations", "3", "--epochs", "5"], False,
     {"model": "vgg", "dataset": "CIFAR100", "seed": 0, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.001,
      "warmup": 2, "batch_size": 64, "prune_every": 3, "prune_per_step": 4, "prune_fraction": 0.9,
      "search_ratio": 0.5, "exact": True, "subset": 100, "loader": "torchvision", "precision": "bf16",
      "bn_init": "ones", "same_norm": True, "morph": False, "budget": "macs", "deterministic": True}),
    (["--model", "resnet18", "--dataset", "synthetic", "--save", "s", "--budget", "latency", "--latency_batch", "7",
      "--latency_clock", "cpu"], False,
     {"model": "resnet18", "dataset": "synthetic", "seed": None, **SEARCH, "budget": "latency", "latency_batch": 7,
      "latency_clock": "cpu"}),
    (["--model", "torchvision:resnet18", "--grouping", "authors", "--dataset", "synthetic", "--save", "s", "--seed",
      "2"], False,
     {"model": "torchvision:resnet18", "dataset": "synthetic", "seed": 2, **SEARCH, "grouping": "authors"}),
    (["--morph", "--dataset", "CIFAR10", "--save", "s", "--seed", "1"], False,
     {"model": "vgg", "dataset": "CIFAR10", "seed": 1, **SEARCH, "prune_fraction": 0.5, "morph": True}),
    (["--save", "t", "--model", "resnet18", "--budget", "params", "--seed", "4"], True,
     {"model": "resnet18", "dataset": "tinyimagenet", "seed": 4, **SEARCH, "batch_size": 100, "prune_every": 100}),
])
def test_a_search_command_line_gives_the_record_settings_it_always_gave(flags, tiny, expected):
    settings = descent.SearchSettings.from_args(search_args(*flags, tiny=tiny)).checked()
    stored = descent.search_settings(settings)
    assert stored == expected
    assert list(stored) == list(expected)  # the same order too: the pickles' bytes
    assert descent._other_settings("P", {"settings": expected}, settings) is None
    refusal = descent._other_settings("P", {"settings": {**expected, "lr": 9.0}}, settings)
    assert str(refusal) == (f"P is a search record of other settings (lr: 9.0 there, {expected['lr']!r} now); use "
                            f"another --save, or --overwrite to recompute it")
    assert str(descent._other_settings("P", {"param": []}, settings)) == (
        "P is a search record whose settings are unknown (it stores none: the authors' published records, or "
        "ours before records stored them); use another --save, or --overwrite to recompute it")


def test_search_from_args_reads_every_setting_from_its_flag():
    args = search_args("--model", "resnet18", "--dataset", "synthetic", "--save", "s", "--out_dir", "o",
                       "--iterations", "4", "--epochs", "6", "--device", "cpu", "--overwrite", "--data_dir", "d",
                       "--download", "never")
    settings = descent.SearchSettings.from_args(args)
    for field in dataclasses.fields(descent.SearchSettings):
        assert getattr(settings, field.name) == getattr(args, field.name), field.name
    assert settings.record_dir == os.path.join("o", "prune_record") and settings.prune_fraction is None
    assert settings.checked().prune_fraction == descent.DEFAULT_FRACTION and settings.checked().iterations == 4


@pytest.mark.parametrize("flags, tiny", [(["--model", "vgg", "--dataset", "CIFAR10"], False),
                                         (["--model", "mobilenetv2", "--dataset", "tinyimagenet"], True)])
def test_search_settings_default_to_the_flags_defaults(flags, tiny):
    """SearchSettings' defaults are architecture_descent.py's flags' (but --device: cpu, not cuda when there
    is one); imagenet_architecture_descent.py differs in batch size and pruning window."""
    args = search_args(*flags, "--save", "s", "--device", "cpu", tiny=tiny)
    differ = {"batch_size": 100, "prune_every": 100} if tiny else {}
    defaults = descent.SearchSettings(model=args.model, dataset=args.dataset, save="s", **differ)
    assert defaults == descent.SearchSettings.from_args(args)


def test_checked_fills_in_the_morph_defaults_and_refuses_bad_settings():
    settings = descent.SearchSettings(model="vgg", dataset="synthetic", save="s", morph=True)
    checked = settings.checked()
    assert (checked.iterations, checked.prune_fraction) == (descent.MORPH_ITERATIONS, descent.MORPH_FRACTION)
    assert (settings.iterations, settings.prune_fraction) == (None, None)  # a copy
    assert dataclasses.replace(checked, iterations=None, prune_fraction=None) == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.seed = 1
    for change, message in (({"iterations": 3}, "--morph runs a single iteration; leave out --iterations"),
                            ({"morph": False, "iterations": 0}, "--iterations must be at least 1, got 0"),
                            ({"warmup": -1}, "--warmup must be non-negative, got -1"),
                            ({"prune_fraction": 1.0}, "--prune_fraction must be between 0 and 1, got 1.0"),
                            ({"save": None}, "--save NAME is required: the run's name, the stem of its files "
                                             "(e.g. --save vgg_morph_synthetic)")):
        with pytest.raises(UserError) as refused:
            dataclasses.replace(settings, **change).checked()
        assert str(refused.value) == message


def test_the_docstring_example_runs_a_search(tmp_path, monkeypatch, capsys):
    """utils/descent.py's example, run as written: two iterations of VGG on synthetic data; its records
    hold the settings architecture_descent.py would store for the same search."""
    example = descent.__doc__.split("is its record):\n\n")[1].split("\n\nRun again")[0]
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(example), {})
    record = io.load_pickle(tmp_path / "out/records/demo.pk")
    assert len(record["param"]) == 2 and (tmp_path / "out/records/demo_param1.pk").exists()
    args = search_args("--model", "vgg", "--dataset", "synthetic", "--save", "demo", "--seed", "0", "--subset", "64",
                       "--batch-size", "32", "--warmup", "0", "--iterations", "2", "--prune_every", "1",
                       "--prune_per_step", "100", "--search_ratio", "0.25")
    assert record["settings"] == descent.search_settings(descent.SearchSettings.from_args(args).checked())
