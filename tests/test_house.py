"""The repository's house rules: self-contained, one recipe table, a consistent command line, short functions."""
import ast
import importlib
import re
import subprocess
import sys

import pytest

from conftest import REPO
from utils.cli import add_common_args, make_parser
from utils.train import RECIPES

SCRIPTS = ("architecture_descent", "imagenet_architecture_descent", "ratio_swipe", "imagenet_ratio_swipe",
           "train_norm", "fine_tune", "plot_ratio", "plot_ratio_warmup", "plot_filters", "list_architecture",
           "fit_params", "val_format", "reproduce")
MAX_FUNCTION_LINES = 50


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.splitlines() if not name.startswith("tests/")]


def test_no_file_outside_tests_names_a_document_outside_the_repository():
    offenders = []
    for name in tracked_files():
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # figures
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r"ORIGINAL_BEHAVIOUR|\bSPEC\b|shared/", line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_function_outside_tests_is_longer_than_50_lines():
    long = []
    for name in tracked_files():
        if name.endswith(".py"):
            for node in ast.walk(ast.parse((REPO / name).read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def help_of(script, monkeypatch, capsys):
    """The script's --help text, run in this process (the scripts parse sys.argv or their argv)."""
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    return capsys.readouterr().out


def options(text):
    """{every spelling of an option: its help entry, on one line}."""
    entries = []
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            entries.append([line])
        elif not line.startswith(" "):  # a group's title, or the blank line before it
            entries.append([])
        elif entries:
            entries[-1].append(line)
    found = {}
    for entry in filter(None, entries):
        header = re.split(r"\s{2,}", entry[0].strip())[0]
        for flag in re.findall(r"(?:^|, )(--?[\w-]+)", header):
            found[flag] = " ".join(" ".join(entry).split())
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_both_spellings_a_default_for_every_option_and_the_choices(script, monkeypatch, capsys):
    found = options(help_of(script, monkeypatch, capsys))
    assert found, script
    for flag, entry in found.items():
        if flag in ("-h", "--help"):
            continue
        assert "(default" in entry or "(required" in entry, (script, flag, entry)
        body = flag[2:]
        for other in (body.replace("_", "-"), body.replace("-", "_")):
            assert f"--{other}" in found, (script, flag, "has no spelling", other)
    for flag, choices in (("--model", "{vgg,resnet18,mobilenetv2"), ("--dataset", "{")):  # ,torchvision:NAME}
        if flag in found:
            assert re.search(r"--(model|dataset) \{", found[flag]), (script, flag, found[flag])
            if script not in ("imagenet_architecture_descent", "imagenet_ratio_swipe"):
                assert choices in found[flag]


# script: (recipe, flags whose --help default is the recipe's value)
RECIPE_FLAGS = {
    "architecture_descent": ("search_cifar", ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup",
                                              "prune_every", "prune_per_step")),
    "imagenet_architecture_descent": ("search_tiny", ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                                      "warmup", "prune_every", "prune_per_step")),
    "ratio_swipe": ("scratch_cifar", ("epochs", "batch_size", "lr", "momentum", "weight_decay")),
    "imagenet_ratio_swipe": ("scratch_tiny", ("epochs", "batch_size", "lr", "momentum", "weight_decay")),
    "train_norm": ("scratch_cifar", ("batch_size", "lr", "momentum", "weight_decay")),
    "fine_tune": ("fine_tune", ("batch_size", "lr", "momentum", "weight_decay")),
}


@pytest.mark.parametrize("script", sorted(RECIPE_FLAGS))
def test_help_defaults_are_the_recipes(script, monkeypatch, capsys):
    recipe, keys = RECIPE_FLAGS[script]
    found = options(help_of(script, monkeypatch, capsys))
    for key in keys:
        entry = found["--" + key]
        assert f"(default: {RECIPES[recipe][key]})" in entry, (script, key, entry)
    epochs = found["--epochs"]
    if script == "train_norm":
        assert f"(default: {RECIPES['scratch_cifar']['epochs']}, or {RECIPES['scratch_tiny']['epochs']} on " \
               f"tinyimagenet)" in epochs
    if script == "fine_tune":
        assert f"(default: {RECIPES['fine_tune']['epochs']}, or {RECIPES['fine_tune']['tiny_epochs']} on " \
               f"tinyimagenet)" in epochs


def test_the_recipes_are_the_papers():
    assert {k: RECIPES["scratch_cifar"][k] for k in ("epochs", "lr", "momentum", "weight_decay", "milestones")} == \
        {"epochs": 300, "lr": 0.1, "momentum": 0.5, "weight_decay": 5e-4, "milestones": (100, 200, 250)}
    assert (RECIPES["scratch_tiny"]["epochs"], RECIPES["scratch_tiny"]["step"]) == (150, 50)
    assert (RECIPES["fine_tune"]["lr"], RECIPES["fine_tune"]["epochs"], RECIPES["fine_tune"]["tiny_epochs"]) == \
        (0.001, 40, 20)


def test_fine_tune_hides_the_flags_it_ignores(monkeypatch, capsys):
    found = options(help_of("fine_tune", monkeypatch, capsys))
    for flag in ("--descent_idx", "--scale_schedule", "--same_norm", "--figs_dir", "--record_dir"):
        assert flag not in found


def test_a_search_shows_only_its_record_folder_and_same_norm(monkeypatch, capsys):
    found = options(help_of("architecture_descent", monkeypatch, capsys))
    assert "--record_dir" in found and "--same_norm" in found
    assert not {"--plots_dir", "--models_dir", "--figs_dir"} & set(found)


def test_both_spellings_parse_to_one_setting():
    parser = make_parser("test")
    parser.add_argument("--prune_every", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    assert parser.parse_args(["--prune-every", "3", "--batch_size", "4"]).prune_every == 3
    assert parser.parse_args(["--prune_every", "5", "--batch-size", "6"]).batch_size == 6


def test_out_dir_sets_the_four_folders_and_a_separate_flag_wins():
    parser = add_common_args(make_parser("test"))
    args = parser.parse_args([])
    assert (args.record_dir, args.plots_dir, args.models_dir, args.figs_dir) == \
        ("prune_record", "saved_plots", "saved_models", "savefigs")
    args = parser.parse_args(["--out_dir", "runs", "--plots-dir", "elsewhere"])
    assert (args.record_dir, args.plots_dir, args.models_dir, args.figs_dir) == \
        ("runs/prune_record", "elsewhere", "runs/saved_models", "runs/savefigs")


def test_a_bad_count_is_one_error_line(capsys):
    parser = make_parser("test")
    from utils.base import positive_int
    parser.add_argument("--epochs", type=positive_int, default=1)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--epochs", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: argument --epochs: must be at least 1, got 0"]


def test_the_width_rule_is_explicit_and_checked():
    from model import MODELS
    spec = MODELS["vgg"]
    alpha, beta = [float(w) for w in spec.DEFAULT_WIDTHS], [0.01] * len(spec.DEFAULT_WIDTHS)
    pruned = [w // 2 for w in spec.DEFAULT_WIDTHS]
    assert spec.prepare_filters(0.5, method="uniform", alpha=alpha, beta=beta) == spec.prepare_filters(0.5)
    assert spec.prepare_filters(0.5, method="morph", pruned_widths=pruned) == \
        spec.prepare_filters(0.5, pruned_widths=pruned)
    with pytest.raises(ValueError, match="needs its pruned widths"):
        spec.prepare_filters(0.5, method="morph")
    with pytest.raises(ValueError, match="unknown width rule"):
        spec.prepare_filters(0.5, method="slim")


def test_the_ground_layer_imports_nothing_of_ours_and_the_engine_no_flags():
    """utils/base.py (errors, log, checks) is the ground: it imports no module of this project. The flag
    layer, utils/cli.py, is imported only by what builds parsers (scripts, and the engines' script
    mains in descent, swipe and report), never by the engine's lower modules."""
    ours = {"utils", "model"}

    def imports(path):
        tree = ast.parse((REPO / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                yield node.module
            elif isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)

    assert [m for m in imports("utils/base.py") if m.split(".")[0] in ours] == []
    parser_builders = {"utils/cli.py", "utils/descent.py", "utils/swipe.py", "utils/report.py"}
    lower = [f"utils/{p.name}" for p in sorted((REPO / "utils").glob("*.py"))]
    offenders = [p for p in lower if p not in parser_builders and "utils.cli" in set(imports(p))]
    assert offenders == []


@pytest.mark.parametrize("script,message", [
    ("ratio_swipe", "RESUMES_EPOCH"), ("imagenet_ratio_swipe", "RESUMES_EPOCH"), ("train_norm", "RESUMES_EPOCH"),
    ("fine_tune", "RESUMES_EPOCH"), ("architecture_descent", "RESUMES_ITERATION"),
    ("imagenet_architecture_descent", "RESUMES_ITERATION")])
def test_ctrl_c_in_a_script_that_resumes_says_so(script, message, capsys):
    """Every script that resumes hands run_main the line Ctrl-C prints; run_main prints it, exit 130."""
    from utils import base
    assert f"run_main(main, {message})" in (REPO / f"{script}.py").read_text()

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        base.run_main(interrupted, getattr(base, message))
    assert stop.value.code == 130
    assert capsys.readouterr().err == getattr(base, message) + "\n"
    assert "run the same command again to resume" in getattr(base, message)
