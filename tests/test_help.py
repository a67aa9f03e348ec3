"""--help you can read: every flag of every script in a group, each default printed once, and no flag
the script ignores. A flag a script accepts but ignores (an output folder it never writes, a flag of the
authors' command lines) is hidden and dropped from the parsed flags; each script is run on tiny data
with every such flag given, and its shown flags are checked against what it reads."""
import argparse
import importlib
import re
import sys

import numpy as np
import pytest

from test_house import SCRIPTS, help_of, options
from model import get_spec
from utils import cli, io, latency_model

TINY = ["--device", "cpu", "--seed", "0"]


def sections(text):
    """{section title: [option lines]} of a --help text."""
    found, title = {}, None
    for line in ("options:" + text.split("\noptions:", 1)[1]).splitlines():
        if line and not line.startswith(" "):
            title = line.rstrip(":")
            found[title] = []
        elif title and line.startswith("  -"):
            found[title].append(line.split()[0].rstrip(","))
    return found


REPRODUCE_GROUPS = ("the plan", "passed to the jobs (default: each script's own)", "running it",
                    "slurm (--executor slurm)")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_has_groups_and_every_flag_sits_in_one(script, monkeypatch, capsys):
    text = help_of(script, monkeypatch, capsys)
    groups = sections(text)
    assert groups.pop("options") == ["-h"], groups  # nothing left outside a group
    # reproduce.py runs the other scripts: its groups are the plan, the flags it passes on, and how it runs
    titles = REPRODUCE_GROUPS if script == "reproduce" else tuple(cli.GROUPS)
    assert list(groups) == [g for g in titles if g in groups], list(groups)  # known titles, in order
    assert all(groups.values())


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_default_is_printed_once(script, monkeypatch, capsys):
    """One "(default ...)" (or "(required)") per flag, and no other default in its text: the formatter adds
    the value unless the help gives it in words, and a help must not do both. "default network" and
    "default widths" name the paper's full-width network, not a flag's default."""
    for flag, entry in options(help_of(script, monkeypatch, capsys)).items():
        if flag in ("-h", "--help"):
            continue
        assert entry.count("(default") + entry.count("(required") == 1, (script, entry)
        rest = re.sub(r"\((default|required)[^)]*\)", "", entry).replace("default network", "")
        assert not re.search(r"\bdefaults?\b", rest.replace("default widths", ""), re.I), (script, entry)


def parser_of(script, monkeypatch):
    """The Parser a script builds, caught as it parses --help."""
    caught = []
    parse = cli.Parser.parse_known_args

    def catch(self, args=None, namespace=None):
        caught.append(self)
        return parse(self, args, namespace)

    monkeypatch.setattr(cli.Parser, "parse_known_args", catch)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit):
        importlib.import_module(script).main()
    monkeypatch.setattr(cli.Parser, "parse_known_args", parse)
    return caught[0]


def hidden_flags(parser):
    """{dest: an option string} of the flags --help does not show and that are no alias of a shown one."""
    shown = {a.dest for a in parser._actions if a.help is not argparse.SUPPRESS}
    return {a.dest: a.option_strings[0] for a in parser._actions
            if a.help is argparse.SUPPRESS and a.dest not in shown}


def shown_flags(parser):
    return {a.dest for a in parser._actions if a.help is not argparse.SUPPRESS and a.option_strings} - {"help"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_hidden_flag_is_an_alias_or_ignored(script, monkeypatch):
    """Every hidden flag is either another spelling of a shown one (--data, fine_tune's --prune_fname,
    plot_filters' --iterations) or ignored: parsed, then dropped, so no code can read it."""
    parser = parser_of(script, monkeypatch)
    hidden = hidden_flags(parser)
    assert set(hidden) == parser.ignored
    required = [x for a in parser._actions if a.required for x in (a.option_strings[0], "x")]
    args = parser.parse_args([*required, *hidden_argv(parser, "elsewhere")])
    assert not set(hidden) & set(vars(args))
    assert set(vars(args)) >= shown_flags(parser)


# -- what each script reads --------------------------------------------------------------------------

@pytest.fixture
def reads(monkeypatch):
    """The flags read from the parsed namespaces (and their copies) while the fixture is active."""
    seen = set()

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if not name.startswith("_") and object.__getattribute__(self, "__dict__").get("_parsed"):
            seen.add(name)
        return value

    parse = cli.Parser.parse_known_args

    def parse_and_mark(self, args=None, namespace=None):
        namespace, extra = parse(self, args, namespace)
        namespace._parsed = True  # copies made with vars(args) carry it
        return namespace, extra

    monkeypatch.setattr(argparse.Namespace, "__getattribute__", getattribute)
    monkeypatch.setattr(cli.Parser, "parse_known_args", parse_and_mark)
    return seen


def run_in_process(script, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *map(str, argv)])
    importlib.import_module(script).main()


def hidden_argv(parser, folder):
    """Every ignored flag of a parser, each given a value (`folder` for a folder, else 1)."""
    argv = []
    for dest, flag in sorted(hidden_flags(parser).items()):
        action = next(a for a in parser._actions if a.dest == dest)
        value = str(folder) if dest.endswith("_dir") else action.choices[-1] if action.choices else "1"
        argv += [flag] if action.nargs == 0 else [flag, value]
    return argv


def with_hidden(script, monkeypatch, argv, root):
    """argv plus every ignored flag of the script, each given a value (a folder under root, or 1)."""
    return [*argv, *hidden_argv(parser_of(script, monkeypatch), root / "ignored")]


def write_search(root, name, model, iterations=1, rows=8):
    """A search record of `model`: CSVs and fits, alpha * tau^0.5 through the default widths."""
    spec = get_spec(model)
    default = np.array(spec.DEFAULT_WIDTHS, dtype=np.float64)
    tau = spec.formula_params(default, 10)
    fits = [(default / tau ** 0.5, np.full(len(default), 0.5)) for _ in range(iterations)]
    io.save_fits(root / f"{name}.pk", fits)
    for k in range(iterations):
        io.write_prune_csv(root / f"{name}_{k}.csv", [(default * (1 - 0.1 * r)).astype(int) for r in range(rows)])


def fake_latency_tables(record_dir):
    """The latency tables --budget latency looks for (VGG11 on 32x32 synthetic, ResNet18 on 64x64
    TinyImageNet), timed by a fake device, so the latency path runs without timing anything."""
    from test_latency_model import table_for_scripts
    for target in (latency_model.Target("vgg", 10, 32, gates=True), latency_model.Target("resnet18", 200, 64)):
        table_for_scripts(record_dir, target)


def tiny_imagenet(root):
    from test_swipe import write_tiny
    write_tiny(root)
    return root


def invocations(tmp):
    """Per script, the commands (argv lists) that together read every flag it shows."""
    rec, out = tmp / "rec", ["--out_dir", tmp / "out"]
    synth = ["--dataset", "synthetic", "--subset", "16", *TINY, *out]
    swipe = [*synth, "--model", "vgg", "--test_subset", "8", "--batch-size", "8", "--epochs", "1", "--no_latency"]
    search = [*synth, "--batch-size", "8", "--warmup", "0", "--iterations", "1", "--prune_every", "1",
              "--prune_per_step", "300", "--search_ratio", "0.25", "--record_dir", rec, "--save", "search"]
    tiny = ["--data_dir", tmp / "tiny", "--device", "cpu", "--seed", "0", "--batch-size", "4", *out]
    plots = ["--model", "vgg", "--dataset", "synthetic", "--ratios", "0.0625", "--seeds", "0", *out]
    tsearch = [*tiny, "--model", "resnet18", "--subset", "8", "--warmup", "0", "--iterations", "1", "--prune_every",
               "1", "--prune_per_step", "500", "--search_ratio", "0.125", "--record_dir", rec, "--save", "tsearch"]
    latency = ["--budget", "latency", "--latency_batch", "100", "--latency_clock", "wall", "--device", "cpu"]
    lsearch, ltsearch = [*search[:-1], "lsearch", *latency], [*tsearch[:-1], "ltsearch", *latency]
    return {  # the second run finds the record, and reads --overwrite; the third searches under a latency budget
        "architecture_descent": [search, search, lsearch],
        "imagenet_architecture_descent": [tsearch, tsearch, ltsearch],
        "ratio_swipe": [[*swipe, "--prune_fname", "vgg_rec", "--record_dir", rec, "--descent_idx", "0",
                         "--ratios", "0.0625", "--save", "ns"],
                        [*swipe, "--uniform", "--ratios", "0.0625", "--save", "vgg_uni_s_0"],
                        [*swipe, "--prune_fname", "lsearch", "--record_dir", rec, "--descent_idx", "0",
                         "--ratios", "0.0625", "--save", "lns", *latency]],
        "imagenet_ratio_swipe": [[*tiny, "--model", "resnet18", "--prune_fname", "rn_rec", "--record_dir", rec,
                                  "--descent_idx", "0", "--ratios", "0.5", "--epochs", "1", "--no_latency",
                                  "--save", "tiny"],
                                 [*tiny, "--model", "resnet18", "--prune_fname", "ltsearch", "--record_dir", rec,
                                  "--descent_idx", "0", "--ratios", "0.5", "--epochs", "1", "--no_latency",
                                  "--save", "ltiny", *latency]],
        "train_norm": [[*swipe, "--save", "norm"]],
        "fine_tune": [[*swipe, "--resume", "norm", "--save", "ft"]],
        "plot_ratio": [[*plots, "--uniform_name", "vgg_uni_s", "--methods", "uniform", "neuralscale_it1",
                        "neuralscale_macs", "morphnet", "--prune_fname", "vgg_rec", "--record_dir", rec,
                        "--json"]],
        "plot_ratio_warmup": [[*plots, "--uniform_name", "vgg_uni_s", "--record_dir", rec, "--pretrain", "10",
                               "--descent_idx", "0", "--json"]],
        "plot_filters": [["--prune_fname", "vgg_rec", "--record_dir", rec, "--descent_idx", "0", *out]],
        "list_architecture": [["--prune_fname", "vgg_rec", "--record_dir", rec, "--ratios", "0.5", "--plot",
                               *out],
                              ["--prune_fname", "lsearch", "--record_dir", rec, "--ratios", "0.5", "--precision",
                               "fp32", *latency, *out]],
        "fit_params": [["--prune_fname", "vgg_rec", "--record_dir", rec, "--iterations", "1", "--save", "refit"],
                       ["--prune_fname", "vgg_rec", "--record_dir", rec, "--iterations", "1", "--save", "refit",
                        "--budget", "macs", "--overwrite"],  # another fit over the first: reads --overwrite
                       ["--prune_fname", "lsearch", "--record_dir", rec, "--save", "lrefit", "--precision", "fp32",
                        *latency]],
        "val_format": [["--data_dir", tmp / "val_tree", "--val_per_class", "2"]],
    }


# Shown flags no script reads from the parsed flags, and why they are still shown.
NOT_ON_THIS_PATH = {
    "out_dir": "read by the parser itself, which puts the four folders under it",
}


@pytest.mark.slow
def test_a_script_reads_every_flag_it_shows_and_runs_with_every_hidden_one_given(tmp_path, monkeypatch, reads):
    from test_val_format import make_tree
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "rec").mkdir()
    write_search(tmp_path / "rec", "vgg_rec", "vgg")
    write_search(tmp_path / "rec", "rn_rec", "resnet18")
    write_search(tmp_path / "rec", "vgg_10_eff_synthetic", "vgg")  # plot_ratio_warmup's P = 10
    tiny_imagenet(tmp_path / "tiny")
    make_tree(str(tmp_path / "val_tree"), official_test=False)
    fake_latency_tables(tmp_path / "rec")
    unread = {}
    for script, commands in invocations(tmp_path).items():
        parser = parser_of(script, monkeypatch)
        reads.clear()
        for argv in commands:
            run_in_process(script, with_hidden(script, monkeypatch, argv, tmp_path), monkeypatch)
        missing = shown_flags(parser) - reads - set(NOT_ON_THIS_PATH)
        if missing:
            unread[script] = sorted(missing)
    assert unread == {}, repr(unread)
    assert not (tmp_path / "ignored").exists()  # the folders a script ignores stay untouched


@pytest.mark.parametrize("script,alias,flag,value,dest,parsed", [
    ("plot_filters", "--iterations", "--descent_idx", ["3", "5"], "descent_idx", [3, 5]),
    ("fine_tune", "--prune_fname", "--resume", ["norm"], "resume", "norm"),
    ("train_norm", "--data", "--data_dir", ["/somewhere"], "data_dir", "/somewhere"),
])
def test_the_authors_spellings_are_aliases(script, alias, flag, value, dest, parsed, monkeypatch):
    """--iterations is a count in every script but plot_filters.py, where it listed search iterations:
    that is --descent_idx now, as everywhere else, and the old spelling still parses to it."""
    parser = parser_of(script, monkeypatch)
    required = ["--prune_fname", "x"] if script == "plot_filters" else []
    assert getattr(parser.parse_args([*required, alias, *value]), dest) == parsed
    assert getattr(parser.parse_args([*required, flag, *value]), dest) == parsed
    assert f"{alias} " not in parser.format_help() and f"{flag} " in parser.format_help()
