"""The import graph: one-way dependencies (depthdata <- student <- flows), no cycles, and light
imports where a user waits for them (``depthdata --help``, ``import depthdata.stream``)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("depthdata", "flows", "student")


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter started in the repository root (this checkout's packages)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept():
    # lint-imports reads [tool.importlinter] in pyproject.toml; it names each broken contract
    # and the import chain that breaks it.
    proc = run_python("""
        import sys
        from importlinter.cli import lint_imports_command
        sys.argv = ["lint-imports", "--no-cache", "--no-logo"]
        lint_imports_command()
    """)
    report = proc.stdout.partition("Broken contracts")[2] or proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "0 broken" in proc.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan,
    iterative: the graph is deep enough for Python's recursion limit to matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def describe_cycle(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle through the component's first module, each import with its line."""
    first = component[0]
    members = set(component)
    nxt = min(m for m in graph.find_modules_directly_imported_by(first) if m in members)
    chain = (first,) + graph.find_shortest_chain(importer=nxt, imported=first)
    steps = [chain[0]]
    for importer, imported in zip(chain, chain[1:]):
        lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
        steps.append(f"{imported} (imported at {importer}:{lines[0] if lines else '?'})")
    return " -> ".join(steps)


def test_no_import_cycles():
    # Imports inside functions and under TYPE_CHECKING count: they hide a cycle, not remove it.
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = [describe_cycle(graph, c) for c in strongly_connected(graph)]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` (top-level packages or modules) ``code`` loads in a fresh interpreter."""
    proc = run_python(textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps([m for m in {list(watched)!r} if m in sys.modules]))
    """))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


HEAVY = ("prefect", "distributed", "open3d", "transformers")


def test_importing_the_stream_loads_no_orchestration_or_model_libraries():
    assert loaded_after("import depthdata.stream", HEAVY + ("flows", "student")) == []
    trainer = "from depthdata.stream import CacheConfig, Compose, RandomHFlip, ResumableLoader, ShardDataset"
    assert loaded_after(trainer, HEAVY + ("flows", "student")) == []


def test_help_loads_neither_torch_nor_prefect():
    # ``python -m depthdata --help``, plug-ins included; the help goes to stdout before the list
    help_run = """
        import contextlib, io, runpy, sys
        sys.argv = ["depthdata", "--help"]
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            runpy.run_module("depthdata", run_name="__main__")
        assert "build" in out.getvalue() and "student" in out.getvalue(), out.getvalue()
    """
    assert loaded_after(help_run, HEAVY + ("torch", "dask", "zarr")) == []


def test_importing_the_flows_changes_neither_the_environment_nor_dask_config():
    proc = run_python("""
        import copy, os
        import dask
        env, config = dict(os.environ), copy.deepcopy(dask.config.config)
        import flows.build, flows.cli, flows.demo, flows.deploy, flows.runner, flows.student  # noqa: F401
        changed_env = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
        assert not changed_env, changed_env
        assert dask.config.config == config, "dask config changed on import"
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
