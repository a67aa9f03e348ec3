"""Every command in README.md, docs/*.md and bench/README.md runs as written.

Each fenced code block is a shell script (a block tagged ```text holds output or a layout, not
commands). bash runs it as written in a scratch copy of the repository (the tracked files, linked; the
output folders its own), with only mechanical scaling:
- `python` on PATH is a wrapper that applies SCALE, a table of flags per script, to what would train for
  hours (--epochs 1, --device cpu, tiny searches: SEARCH, seeded when the command gives no seed, so that
  the test repeats), then runs the script in a process of its own,
  forked from a server that has imported torch once (seconds per command saved, nothing else changed);
- a `for` loop over a list of numbers (the seeds, the GPUs) runs its first value only;
- `./data` holds tiny CIFAR10 and CIFAR100 folders in the real on-disk format;
- $REF is the authors' published records and curves (../shared/reference): a block that reads them skips
  without them;
- `make demo` and `make test` are run by other tests (COVERED_BY), which the wrapper names.
A command whose script has no row in SCALE, or whose program is not python or make, fails
test_every_documented_command_is_covered, which lists it: a command added to the docs must get a row
here. The runs themselves are test_documented_commands_run (slow), one block at a time.
"""
import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REFERENCE, REPO
from test_latency_model import table_for_scripts
from utils import latency_model

DOCS = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(str(REPO / "docs" / "*.md"))),
        "bench/README.md"]
TRAIN = {"--epochs": "1", "--device": "cpu", "--batch-size": "16"}
# The search: a quarter of the network's budget, 40 units pruned after every minibatch from the first
# epoch on; 15 iterations of it take seconds (--epochs only bounds an iteration). A smaller budget
# leaves so few units that the MACs search cannot meet it within 0.5 % (docs/budgets.md).
SEARCH = {"--device": "cpu", "--batch-size": "16", "--warmup": "0", "--prune_every": "1",
          "--prune_per_step": "40", "--search_ratio": "0.25", "--epochs": "60"}
# script: {"set": flags whose value is replaced or added, "default": flags added when absent (None: a
# switch), "unless": {flag: flags whose presence keeps it from being added}}
SCALE = {
    "architecture_descent.py": {"set": SEARCH, "default": {"--seed": "0"}},  # a search that repeats
    "ratio_swipe.py": {"set": TRAIN, "default": {"--ratios": "0.25"},
                       "unless": {"--ratios": ("--target_params", "--target_macs", "--target_latency")}},
    "train_norm.py": {"set": TRAIN},
    "fine_tune.py": {"set": TRAIN},
    "plot_ratio.py": {"default": {"--no_latency": None}},
    "plot_ratio_warmup.py": {"default": {"--no_latency": None}},
    "plot_filters.py": {},
    "list_architecture.py": {},
    # A table's protocol is days of training: the documented command prints its plan (--dry-run checks
    # every flag and builds every job); tests/test_reproduce_e2e.py runs a tiny protocol end to end.
    "reproduce.py": {"default": {"--dry-run": None}, "unless": {"--dry-run": ("--status",)}},
    "bench/train_throughput.py": {"set": {"--device": "cpu", "--ratio": "0.0625", "--batch-size": "8",
                                          "--steps": "1", "--reps": "1", "--descent-steps": "0",
                                          "--threads": "1"}},
}
# Commands another test runs, at its own tiny scale.
COVERED_BY = {
    "make demo": ("tests/test_demo.py", '"make", "--no-print-directory", "demo"'),
    "make test": ("the suite itself", None),
    "python bench/gpu_check.py": ("tests/test_gpu_check.py", '"bench/gpu_check.py", *SMALL'),
}


# -- reading the documents ---------------------------------------------------------------------------

def blocks():
    """(document, line, text) of every fenced block that holds commands."""
    for doc in DOCS:
        lines = (REPO / doc).read_text(encoding="utf-8").splitlines()
        start = None
        for number, line in enumerate(lines, 1):
            if line.startswith("```") and start is None:
                start, tag = number, line[3:].strip()
            elif line.startswith("```"):
                if tag in ("", "sh", "bash", "shell"):
                    yield doc, start, "\n".join(lines[start:number - 1])
                start = None


def commands(text):
    """The simple commands of a block, as word lists: continuation lines joined, comments, loop
    keywords and leading VAR=value assignments left out."""
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        for part in re.split(r"&&|\|\||[;&|]", re.sub(r"(^|\s)#.*$", "", line)):
            words = part.split()
            while words and (words[0] in ("do", "then", "else") or re.match(r"^[A-Za-z_]\w*=", words[0])):
                words.pop(0)
            if words and words[0] not in ("for", "done", "fi", "wait"):
                yield words


def coverage(words):
    """What runs a documented command: "scaled", "covered", or None (not covered)."""
    line = " ".join(words[:2])
    if line in COVERED_BY:
        return "covered"
    if words[0] == "python" and len(words) > 1 and words[1] in SCALE:
        return "scaled"
    return None


def test_there_are_commands_to_check():
    found = [words for _, _, text in blocks() for words in commands(text)]
    assert len(found) >= 20 and sum(w[0] == "python" for w in found) >= 15


def test_a_command_nobody_covers_is_caught():
    block = "python ratio_swipe.py --uniform\npython made_up_script.py --table 1 \\\n    --seeds 0\ngit clone x  # data"
    assert [coverage(words) for words in commands(block)] == ["scaled", None, None]


def test_every_documented_command_is_covered():
    uncovered = [f"{doc}:{line}: {' '.join(words)}" for doc, line, text in blocks() for words in commands(text)
                 if coverage(words) is None]
    assert uncovered == [], "commands with no row in SCALE or COVERED_BY:\n" + "\n".join(uncovered)


@pytest.mark.parametrize("command", sorted(COVERED_BY))
def test_the_covering_test_runs_the_command(command):
    path, call = COVERED_BY[command]
    if call is not None:
        assert call in (REPO / path).read_text(), (command, path)


# -- running them ------------------------------------------------------------------------------------

# The fork server: imports torch and the project once; each command forks from it, takes the wrapper's
# stdin/stdout/stderr, environment, folder and argv, and runs its script as `python script` would
# (runpy, __main__), so a command costs its own work and not a second of imports.
SERVER = r"""
import json, os, runpy, signal, socket, sys
sys.path.insert(0, sys.argv[2])
import torch, torchvision, matplotlib  # noqa: F401 (the imports every command would repeat)
matplotlib.use("Agg")
from utils import descent, report, run, swipe  # noqa: F401
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(16)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the finished commands
while True:
    conn, _ = server.accept()
    if os.fork():
        conn.close()
        continue
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a command waits for its own children (DataLoader workers)
    server.close()
    request, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(request)
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    script = os.path.realpath(request["argv"][0])
    sys.argv, sys.path[0] = request["argv"], os.path.dirname(script)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(str(code).encode())
    os._exit(0)
"""

WRAPPER = r"""
import json, os, socket, sys

scale, covered = json.loads(os.environ["DOC_SCALE"]), json.loads(os.environ["DOC_COVERED"])
args = sys.argv[1:]


def spelled(flag, present):
    # The spelling of `flag` among `present` (--a_b and --a-b are one flag), or None.
    body = flag[2:].replace("-", "_")
    return next((p for p in present if p.startswith("--") and p[2:].replace("-", "_") == body), None)


def scaled(rule, argv):
    argv = list(argv)
    for flag, value in rule.get("set", {}).items():
        given = spelled(flag, argv)
        if given:
            argv[argv.index(given) + 1] = value
        else:
            argv += [flag, value]
    for flag, value in rule.get("default", {}).items():
        if spelled(flag, argv) or any(spelled(u, argv) for u in rule.get("unless", {}).get(flag, ())):
            continue
        argv += [flag] if value is None else [flag, value]
    return argv


def record(entry):
    with open(os.environ["DOC_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def run(argv):
    # Ask the fork server to run `python argv` here, on our stdin/stdout/stderr; its exit status.
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(os.environ["DOC_SERVER"])
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
        return int(conn.recv(16) or b"1")


script = args[0] if args else ""
if f"python {script}" in covered:
    record({"script": script, "rc": 0, "covered_by": covered[f"python {script}"]})
    sys.exit(0)
if script not in scale:
    record({"script": script, "rc": 97, "uncovered": args})
    print(f"not covered by tests/test_doc_commands.py: python {' '.join(args)}", file=sys.stderr)
    sys.exit(97)
argv = [script, *scaled(scale[script], args[1:])]
rc = run(argv)
record({"script": script, "written": args, "run": argv, "rc": rc})
sys.exit(rc)
"""

MAKE = r"""#!/bin/sh
# make TARGET: run by the test COVERED_BY names
echo "{\"script\": \"make $1\", \"rc\": 0, \"covered_by\": true}" >> "$DOC_LOG"
"""


def write_cifar_folders(data_dir):
    from test_data import write_cifar
    for dataset in ("CIFAR10", "CIFAR100"):
        write_cifar(str(data_dir), dataset, n_train=64, n_test=32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A scratch copy of the repository: the tracked files linked, the output folders its own, tiny
    data, and the python and make wrappers on PATH."""
    root = tmp_path_factory.mktemp("docs")
    work, bin_dir = root / "work", root / "bin"
    work.mkdir()
    bin_dir.mkdir()
    for name in sorted({p.split("/")[0] for p in tracked()}):
        if name not in ("saved_plots", "tests"):  # saved_plots/ is written to: a folder of its own
            os.symlink(REPO / name, work / name)
    (work / "saved_plots").mkdir()
    write_cifar_folders(work / "data")
    # The latency table docs/latency.md's commands look for (VGG11, CIFAR's 10 classes at 32x32, fp32,
    # batch 100, one thread), timed by a fake device: they reuse it and time nothing.
    table_for_scripts(work / "prune_record", latency_model.Target("vgg", 10, 32, gates=True, threads=1))
    (bin_dir / "python").write_text(f"#!{sys.executable} -S\n{WRAPPER}")
    (bin_dir / "make").write_text(MAKE)
    for tool in ("python", "make"):
        os.chmod(bin_dir / tool, 0o755)
    socket_path = root / "server.sock"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(socket_path), str(REPO)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not socket_path.exists():
            assert server.poll() is None and time.monotonic() < deadline, "the fork server did not start"
            time.sleep(0.05)
        yield work, bin_dir, socket_path
    finally:
        server.kill()
        server.wait()


def tracked():
    try:
        return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


def first_values_only(text):
    """for s in 0 1 2 3 4; do  ->  for s in 0; do"""
    return re.sub(r"\bfor (\w+) in (\d+)(?: \d+)*;", r"for \1 in \2;", text)


def run_block(workspace, text, log):
    work, bin_dir, socket_path = workspace
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DOC_SERVER": str(socket_path),
           "DOC_SCALE": json.dumps(SCALE), "DOC_COVERED": json.dumps({k: v[0] for k, v in COVERED_BY.items()}),
           "DOC_LOG": str(log), "REF": str(REFERENCE), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", first_values_only(text)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("doc,line,text", list(blocks()), ids=[f"{d}:{n}" for d, n, _ in blocks()])
def test_documented_commands_run(workspace, tmp_path, doc, line, text):
    if "$REF" in text and not (REFERENCE / "prune_record").is_dir():
        pytest.skip(f"{doc}:{line} reads the authors' published files, not at {REFERENCE}")
    log = tmp_path / "commands.jsonl"
    proc = run_block(workspace, text, log)
    ran = [json.loads(entry) for entry in log.read_text().splitlines()] if log.exists() else []
    failed = [entry for entry in ran if entry["rc"] != 0]
    assert proc.returncode == 0 and not failed, f"{doc}:{line}\n{failed}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    expected = {" ".join(w[:2]) if w[0] == "make" else w[1] for w in commands(text)}
    assert expected <= {entry["script"] for entry in ran}, (expected, ran)


@pytest.mark.slow
def test_an_uncovered_command_fails_its_block(workspace, tmp_path):
    log = tmp_path / "commands.jsonl"
    proc = run_block(workspace, "python list_architecture.py --model vgg\npython made_up_script.py --table 1", log)
    assert proc.returncode == 97 and "not covered by tests/test_doc_commands.py: python made_up_script.py" in proc.stderr
    assert [json.loads(line)["rc"] for line in log.read_text().splitlines()] == [0, 97]
