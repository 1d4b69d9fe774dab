"""The ``depthdata`` command line. Each command group of the library lives in its own module
here, listed in :data:`COMMAND_MODULES`; commands of the packages built on the library (the
flows' ``build``/``serve``/``demo``, ``student``) plug in as entry points of group
:data:`ENTRY_POINT_GROUP` (pyproject.toml). Either way a command module exposes
``register(subparsers)`` and imports what its commands need inside their handlers, so that
``depthdata --help`` stays fast.

The library never imports its plug-ins' packages: the dependencies point one way
(DEVELOPING.md, "Layers"). A plug-in that cannot be loaded is reported and left out; the other
commands still work.

User mistakes (:class:`~depthdata.errors.DepthdataError`) print one ``error:`` line and exit 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points

from depthdata import __version__
from depthdata.errors import DepthdataError

COMMAND_MODULES = [
    "depthdata.cli.catalog_cmd",
    "depthdata.cli.store_cmd",
    "depthdata.cli.sources_cmd",
    "depthdata.cli.teacher_cmd",
    "depthdata.cli.eda_cmd",
    "depthdata.cli.lidar_cmd",
    "depthdata.cli.stream_cmd",
]
ENTRY_POINT_GROUP = "depthdata.commands"

log = logging.getLogger(__name__)


def register_plugins(sub: argparse._SubParsersAction) -> None:
    """Add the commands of every ``depthdata.commands`` entry point (a ``register(subparsers)``).

    A broken or half-installed plug-in (say its package's dependencies are missing) must not
    take the library's own commands down with it, so its error becomes a warning.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001 - any failure of a plug-in is reported, not fatal
            log.warning("command plug-in %r (%s) could not be loaded and is left out: %s: %s",
                        ep.name, ep.value, type(exc).__name__, exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthdata",
        description="Build, check and use monocular-depth distillation datasets: sources → teacher "
        "pseudo-labels → synthetic LiDAR → sharded Zarr v3 store + Parquet manifest.",
    )
    parser.add_argument("--version", action="version", version=f"depthdata {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    register_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # one line per HTTP call to the local Prefect API drowns what the build says
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    try:
        return int(args.func(args) or 0)
    except DepthdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

