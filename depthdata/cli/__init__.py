"""The ``depthdata`` command line. Each command group lives in its own module here and plugs
in by being listed in :data:`COMMAND_MODULES` (a module exposes ``register(subparsers)``).

User mistakes (:class:`~depthdata.errors.DepthdataError`) print one ``error:`` line and exit 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from depthdata import __version__
from depthdata.errors import DepthdataError

COMMAND_MODULES = [
    "depthdata.cli.catalog_cmd",
    "depthdata.cli.store_cmd",
    "depthdata.cli.sources_cmd",
    "depthdata.cli.teacher_cmd",
    "depthdata.cli.eda_cmd",
    "depthdata.cli.build_cmd",
    "depthdata.cli.lidar_cmd",
    "depthdata.cli.stream_cmd",
    "depthdata.cli.student_cmd",
]


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

