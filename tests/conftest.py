"""Shared test helpers: the repository root, the authors' reference data, running scripts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"

sys.path.insert(0, str(REPO))


@pytest.fixture
def reference():
    """../shared/reference (the authors' published records and curves), or skip."""
    if not (REFERENCE / "prune_record").is_dir():
        pytest.skip(f"the authors' reference data is not at {REFERENCE}")
    return REFERENCE


def run_script(*args, check=True, timeout=300, env=None, cwd=REPO):
    """Run `python <script> <args>` from the repository root; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def assert_one_line_error(proc):
    """A user mistake: exit status 2, a single `error: ...` line on stderr, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
