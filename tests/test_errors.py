"""The error tree drawn in ``depthdata/errors.py``'s docstring names exactly the exception classes."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from depthdata import errors

ROOT = Path(__file__).resolve().parents[1]
#: a tree line: its drawing, the class name, an optional ``[module]``, then what it is for
TREE_LINE = re.compile(r"^    ((?:[│ ]   )*(?:[├└]── )?)(\w+)\s+(?:\[([\w.]+)\] )?\S")


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Class name → (parent name or None, module) as drawn in the docstring."""
    lines = errors.__doc__.split("::", 1)[1].strip("\n").split("\n\n")[0].splitlines()
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[str] = []
    for line in lines:
        m = TREE_LINE.match(line)
        assert m, f"not a tree line: {line!r}"
        depth = len(m.group(1)) // 4
        stack[depth:] = [m.group(2)]
        tree[m.group(2)] = (stack[depth - 1] if depth else None, m.group(3) or "depthdata.errors")
    return tree


def defined_elsewhere(names: set[str]) -> dict[str, tuple[str, str]]:
    """Classes in the project's packages that derive from one of ``names`` (found without importing
    them: the flows pull in Prefect) → (base name, module), to a fixed point."""
    found: dict[str, tuple[str, str]] = {}
    known = set(names)
    classes = []
    for package in ("depthdata", "flows", "student"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if module == "depthdata.errors":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                             if isinstance(b, (ast.Name, ast.Attribute))]
                    classes.append((node.name, bases, module))
    grew = True
    while grew:
        grew = False
        for name, bases, module in classes:
            parent = next((b for b in bases if b in known), None)
            if parent and name not in found:
                found[name] = (parent, module)
                known.add(name)
                grew = True
    return found


def test_the_docstring_tree_names_exactly_the_exception_classes():
    tree = drawn_tree()
    here = {name: cls for name, cls in vars(errors).items()
            if inspect.isclass(cls) and issubclass(cls, errors.DepthdataError)}
    drawn_here = {name for name, (_, module) in tree.items() if module == "depthdata.errors"}
    assert drawn_here == set(here)
    for name, cls in here.items():
        parent = cls.__bases__[0].__name__
        assert tree[name][0] == (None if cls is errors.DepthdataError else parent), name
    elsewhere = defined_elsewhere(set(here))
    assert {name: tree[name] for name in tree if name not in here} == elsewhere
