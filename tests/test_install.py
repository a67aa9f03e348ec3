"""Installation: the repository runs in place, and `pip install .` / `pip install -e .` install its
dependencies and none of its modules, so no generic top-level name (utils, model) lands in
site-packages. Built offline (no build isolation, no index) from a copy of the tracked files."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # pip and setuptools build two wheels

pytest.importorskip("setuptools")


def source_copy(tmp_path):
    """The tracked files, where a build may write its build/ and .egg-info without touching the checkout."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for name in files.splitlines():
        if not name.startswith("tests/") and (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    return src


def build(src, out, editable):
    """The wheel setuptools builds for `pip install .` (editable: `pip install -e .`)."""
    hook = "build_editable" if editable else "build_wheel"
    proc = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; "
                                                 f"print(build_meta.{hook}({str(out)!r}))"],
                          cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("editable", [False, True])
def test_pip_install_adds_the_dependencies_and_no_module(tmp_path, editable):
    wheel = build(source_copy(tmp_path), tmp_path / "wheel", editable)
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.split("/")[0] in ("utils", "model") or n.endswith(".py") and "/" not in n
                and not n.startswith("__editable__")], names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: torch" in metadata and "Requires-Dist: numpy" in metadata
    # Installed into a site folder, the wheel makes neither name importable from anywhere else.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True, timeout=300)
    probe = ("import importlib.util, site, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
             f"site.addsitedir({str(target)!r}); "
             "print([n for n in ('utils', 'model', 'ratio_swipe') if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert out.strip() == "[]"
