"""The version floors are real: requirements.txt and pyproject.toml agree, admit the tested torch 2.14.1 +
torchvision 0.29.1, and are no lower than the oldest release of every API the code uses (checked
statically, since old releases cannot be installed here)."""
import ast
import re

import pytest

from conftest import REPO

SOURCES = sorted(p for p in REPO.rglob("*.py")
                 if not {"tests", ".venv", "data", "demo_runs"} & set(p.relative_to(REPO).parts))
# API -> (package, the first release that has it). Cited from the upstream releases:
# torchvision 0.18.0 added allow_empty to datasets.folder.make_dataset (0.17.2 has none) and pins torch
# 2.3.0; torch.load(weights_only=...) arrived in torch 1.13.
API_FLOORS = {
    r"allow_empty\s*=": ("torchvision", (0, 18)),
    r"weights_only\s*=": ("torch", (1, 13)),
}


def version(text):
    return tuple(int(part) for part in text.split("."))


def floors_of(lines):
    """{package: (floor, upper or None)} from requirement strings like 'torch>=2.3,<2.15'."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_-]+)\s*>=\s*([\d.]+)(?:\s*,\s*<\s*([\d.]+))?", line)
        if match:
            found[match[1]] = (version(match[2]), match[3] and version(match[3]))
    return found


def requirements():
    return floors_of((REPO / "requirements.txt").read_text().splitlines())


def test_requirements_and_pyproject_agree():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert floors_of(project["project"]["dependencies"]) == requirements()
    assert project["project"]["requires-python"] == ">=3.9"
    assert project["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert "pytest" not in requirements()  # a test-only dependency lives in its own file and extra
    assert any(d.startswith("pytest") for d in project["project"]["optional-dependencies"]["test"])
    test_file = (REPO / "requirements-test.txt").read_text()
    assert "-r requirements.txt" in test_file and "pytest>=" in test_file
    assert "requirements-test.txt" in (REPO / "Makefile").read_text()


def test_ranges_admit_the_tested_pair():
    req = requirements()
    for package, tested in (("torch", (2, 14, 1)), ("torchvision", (0, 29, 1))):
        floor, upper = req[package]
        assert floor <= tested and (upper is None or tested < upper), package


def test_floors_cover_the_apis_used():
    req = requirements()
    sources = {p: p.read_text() for p in SOURCES}
    for pattern, (package, first) in API_FLOORS.items():
        if any(re.search(pattern, text) for text in sources.values()):
            assert req[package][0] >= first, f"{pattern} needs {package} >= {first}"
    assert req["torch"][0] >= (2, 3)  # torchvision 0.18.0, the floor of allow_empty, is built for torch 2.3


def _guarded(tree, node):
    """Whether `node` sits in a try whose handlers catch ImportError (a fallback import)."""
    for parent in ast.walk(tree):
        if isinstance(parent, ast.Try) and any(node is n for stmt in parent.body for n in ast.walk(stmt)):
            names = {ast.unparse(h.type) for h in parent.handlers if h.type is not None}
            if names & {"ImportError", "ModuleNotFoundError", "(ImportError, ModuleNotFoundError)"}:
                return True
    return False


def test_numpy_core_is_imported_with_a_fallback_below_numpy_2():
    """numpy._core exists (with `numeric`) from numpy 2.0. Below that floor an import of it must sit in
    a try/except ImportError with a fallback. (numpy.dtypes, 1.25, is imported only for a pickle that
    names it; on older numpy that pickle is refused in one line by load_pickle's ImportError handler.)"""
    if requirements()["numpy"][0] >= (2, 0):
        return
    unguarded = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n == "numpy._core" or n.startswith("numpy._core.") for n in names) and \
                    not _guarded(tree, node):
                unguarded.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unguarded, unguarded


def test_sources_parse_as_the_oldest_python():
    for path in SOURCES:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
