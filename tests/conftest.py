"""Shared test helpers: the repository root, the authors' reference data, running scripts."""
import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers: one thread each, or their
    os.environ["OMP_NUM_THREADS"] = "1"  # OpenMP pools contend (one test ran 9x slower); before torch loads
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"

sys.path.insert(0, str(REPO))


# The longest files (make test --durations: the protocol end to end, locally and on SLURM; every
# documented command), started first.
LONGEST = ("test_reproduce_e2e.py", "test_doc_commands.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the others with end-to-end runs (marked slow): with two workers
    (make test) the quick files then fill both workers' tails, instead of one worker finishing a long
    file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path.name not in LONGEST, item.path not in slow_files))  # stable


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


def write_idx(path, array):
    """An IDX file (uint8) as Fashion-MNIST ships it; gzipped when the name ends in .gz."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder, n_train=20, n_test=9, gz=True):
    """The four Fashion-MNIST IDX files with random images and cycling labels; returns the arrays."""
    rng = np.random.default_rng(2)
    os.makedirs(folder, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(1, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(1, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10}
    for name, array in arrays.items():
        write_idx(os.path.join(folder, name + (".gz" if gz else "")), array)
    return arrays


def load_bench(name):
    """bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
