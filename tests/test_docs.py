"""The documentation: generated reference pages match the code, the site builds with
``mkdocs build --strict`` (no dead links, no missing references), and the README and the pages
cite only files that exist."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("depthdata_docs_gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(gen):
    return gen.generate()


def test_reference_pages_match_the_code(gen, pages):
    stale = gen.stale(pages)
    diffs = []
    for name in stale:
        path = gen.OUT / name
        old = path.read_text().splitlines() if path.is_file() else []
        diffs += list(difflib.unified_diff(old, pages[name].splitlines(), f"committed {name}", f"generated {name}",
                                           lineterm="", n=1))[:40]
    assert not stale, ("docs/reference/ is out of date with the code: run `make docs` and commit the result.\n"
                       + "\n".join(diffs))
    assert sorted(p.name for p in gen.OUT.glob("*.md")) == sorted(pages), \
        "docs/reference/ holds pages the generator does not write: remove them or run `make docs`"


def test_generated_pages_come_from_the_code_objects(pages):
    from depthdata.cli import build_parser
    from depthdata.pipeline import STAGES
    from depthdata.store import FIELDS

    for f in FIELDS.values():
        assert f"| `{f.name}` | `{f.stage}` | `{f.dtype}` |" in pages["fields.md"]
    for stage in STAGES.values():
        assert f"## Stage `{stage.name}`" in pages["manifest.md"]
        for c in stage.columns:
            assert f"| `{c.name}` | `{c.dtype}` |" in pages["manifest.md"]
    assert "`lidar.custom_beam_models.<name>.channels`" in pages["settings.md"]
    assert "### `kind: nyuv2`" in pages["settings.md"]
    assert "`flows.build.BuildFailed`" in pages["errors.md"]
    # every command of the parser, however deep, has a section
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"`depthdata {name}`" in pages["cli.md"]
    assert "### `depthdata teacher run`" in pages["cli.md"]
    assert "label" not in re.findall(r"stages to run[^|]*", pages["cli.md"])[0]


def test_drift_fails(gen, monkeypatch, tmp_path):
    """A change in the code (a field's meaning) makes the committed page stale."""
    from depthdata.store import fields

    changed = dataclasses.replace(fields.FIELDS["sparse"], doc="synthetic LiDAR depth in furlongs")
    monkeypatch.setitem(fields.FIELDS, "sparse", changed)
    assert "fields.md" in gen.stale(gen.generate())


def test_cli_page_follows_commands_added_later(gen, monkeypatch):
    """A command a plug-in registers (however it gets into the parser) shows up without changes here."""
    import depthdata.cli as cli

    original = cli.build_parser

    def with_plugin():
        parser = original()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        p = sub.add_parser("plugged", help="a plug-in command", description="A command from a plug-in.")
        psub = p.add_subparsers(dest="plugged_command", metavar="ACTION")
        deep = psub.add_parser("deeper", help="nested")
        deep.add_argument("--knob", type=int, default=3, help="a knob (default %(default)s)")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_plugin)
    text = gen.page_cli()
    assert "## `depthdata plugged`" in text and "### `depthdata plugged deeper`" in text
    assert "| `--knob KNOB` | a knob (default 3) |" in text


def test_benchmark_results_md_matches_the_results():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.run_all import render
    finally:
        sys.path.remove(str(ROOT))
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == render(), \
        "benchmarks/RESULTS.md is out of date with benchmarks/results/*.json: run `make docs`"


def test_mkdocs_build_strict(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("DEPTHDATA_DOCS_REQUIRED"):
            raise
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [proc.stderr[-3000:]])
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()
    assert "class=\"doc doc-heading\"" in (tmp_path / "site" / "api" / "store" / "index.html").read_text()


# -- README and hand-written pages -----------------------------------------------------------------

HAND_WRITTEN = [ROOT / "README.md", ROOT / "DEVELOPING.md", ROOT / "benchmarks" / "NOTES.md",
                *sorted(p for p in DOCS.glob("*.md"))]
PATH_RE = re.compile(r"`((?:depthdata|flows|student|benchmarks|tests|docs|\.ci)/[\w./\-]*)`")
LINK_RE = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("path", HAND_WRITTEN, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_files_and_links_exist(path):
    text = path.read_text()
    missing = []
    for m in PATH_RE.finditer(text):
        cited = m.group(1).split(":")[0]
        if "<" in cited or "*" in cited:
            continue
        if not (ROOT / cited).exists():
            missing.append(cited)
    for m in LINK_RE.finditer(text):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).resolve().exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} cites files that do not exist: {missing}"
    assert "FORMATS.md" not in text, "FORMATS.md is not part of the repository; cite the docs page instead"
