"""The documents point at code that exists: every `file.py:name` in the README and docs/ names a
function, class or constant defined in that file (a rename must update the pointer)."""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTER = re.compile(r"`([\w/*.]+\.py):(\w+)(?:\.(\w+))?`")


def defined_names(path):
    """Top-level functions, classes and assignments of a module, and the methods of its classes."""
    tree = ast.parse(open(path).read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{m.name}" for m in node.body if isinstance(m, ast.FunctionDef)}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def pointers():
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    for doc in docs:
        for match in POINTER.finditer(open(doc).read()):
            yield os.path.relpath(doc, ROOT), match.group(1), ".".join(filter(None, match.group(2, 3)))


def test_there_are_pointers_to_check():
    assert len(list(pointers())) >= 20


@pytest.mark.parametrize("doc, pattern, name", sorted(set(pointers())))
def test_pointer_names_existing_code(doc, pattern, name):
    files = sorted(glob.glob(os.path.join(ROOT, pattern)))
    if "*" in pattern:  # `model/*.py:name`: every network file (the ones with a width table)
        files = [path for path in files if "DEFAULT_WIDTHS" in defined_names(path)]
    assert files, f"{doc}: {pattern} matches no file"
    for path in files:
        assert name in defined_names(path), f"{doc}: {os.path.relpath(path, ROOT)} defines no {name}"
