"""``depthdata build``, ``depthdata serve`` and ``depthdata demo``: the Prefect flows in
``flows/`` run from the command line (``docs/building.md``).

A plug-in of the ``depthdata`` command (entry point group ``depthdata.commands`` in
pyproject.toml): the library's CLI finds it there and never imports ``flows`` itself. Prefect
and Dask are imported inside the commands, so ``depthdata --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

STAGES_HELP = "comma-separated stages to run, in pipeline order: ingest,teacher,lidar,eda (default: all)"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", metavar="DATASET",
                   help="build only this dataset of the catalog (repeat for several; default: every dataset)")
    p.add_argument("--stages", metavar="LIST", help=STAGES_HELP)
    p.add_argument("--store", metavar="URL",
                   help="store URL to build into, replacing the catalog's store.url (a local path, relative to "
                        "the current folder, or any fsspec URL such as s3://bucket/x.zarr)")
    p.add_argument("--report", metavar="DIR",
                   help="folder or fsspec URL of the EDA report (default: '<store name>-report' beside the store, "
                        "e.g. build/x-report for build/x.zarr, s3://bucket/x-report for s3://bucket/x.zarr; remote "
                        "URLs use the catalog's store.storage_options when they are on the store's file system). "
                        "Rewritten only when the store's committed version changed since it was written")
    p.add_argument("--dask-address", metavar="ADDR",
                   help="run shard tasks on an existing Dask cluster, e.g. tcp://host:8786 (default: a local "
                        "cluster started for the run)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the local cluster (default: one per CPU; 0 runs tasks one at a "
                        "time in this process)")
    p.add_argument("--teacher-gpu", type=float, default=0.0, metavar="N",
                   help="teacher tasks request N units of the Dask worker resource 'GPU' (start GPU workers with "
                        "`dask worker ADDR --resources GPU=1`); default 0 = no resource request")


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="build a catalog into a store through the Prefect flows",
                       description="Run the stages (ingest → teacher → lidar → eda) for every dataset of a catalog, "
                       "one Prefect task per shard on a Dask cluster. Re-running resumes: complete shards are "
                       "skipped. Exits 1 when any shard failed (the others are complete), 2 on a user error.")
    b.add_argument("catalog", help="catalog YAML file")
    _add_run_options(b)
    b.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    b.set_defaults(func=_build)

    s = sub.add_parser("serve", help="register a scheduled build deployment and serve it",
                       description="Register the build flow of a catalog as a Prefect deployment with a cron "
                       "schedule and serve it until interrupted (needs a Prefect server: `prefect server start`, "
                       "then PREFECT_API_URL=http://127.0.0.1:4200/api).")
    s.add_argument("catalog", help="catalog YAML file")
    s.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *" (every day at 03:00)')
    s.add_argument("--name", default=None, help="deployment name (default: build-<catalog file stem>)")
    s.add_argument("--timezone", default="UTC", help="time zone of the cron schedule (default UTC)")
    _add_run_options(s)
    s.set_defaults(func=_serve)

    d = sub.add_parser("demo", help="generate the demo data and build it end to end",
                       description="Write small copies of every source format, build them through the real "
                       "flows (ingest, teacher labels, synthetic LiDAR, EDA report), distil, prune and export an "
                       "INT8 student from the store, and print where every output is. Offline; without real "
                       "teacher weights it uses the demo teacher shipped with depthdata (trained on procedural "
                       "scenes, not Depth Anything V2) and says so.")
    d.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    d.add_argument("--seed", type=int, default=0, help="seed of the generated demo data (default 0)")
    d.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the local Dask cluster (default: one per CPU; 0 = this process)")
    d.add_argument("--student-steps", type=int, default=40, metavar="N",
                   help="training steps of the demo student (default 40; 0 skips the student stage)")
    d.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    d.set_defaults(func=_demo)


def _quiet_dask_logs() -> None:
    # Dask's scheduler and nannies log every connection at INFO; the build's own lines matter.
    import distributed  # noqa: F401 - its import configures its loggers; override them after

    noisy = ("distributed", "prefect.task_runner.dask", "httpx")
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(noisy) and logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed flow run's exception with its traceback; for a user's mistake
    (a ``DepthdataError``: bad catalog, a locked store, failed shards) the message says it all,
    and the command prints it as its ``error:`` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from depthdata.errors import DepthdataError

        if record.exc_info and isinstance(record.exc_info[1], DepthdataError):
            record.exc_info, record.exc_text = None, None
        return True


def _build(args: argparse.Namespace) -> int:
    from flows.local_server import start_early

    # The temporary Prefect server (when no PREFECT_API_URL is set) starts while this process
    # imports Prefect, Dask and the stages: the two take about as long (flows/local_server.py).
    server = start_early()
    try:
        return _run_build(args, server)
    finally:
        if server is not None:
            server.stop()  # unused when a user error stopped the command first; else already stopped


def _run_build(args: argparse.Namespace, server) -> int:
    from flows.build import BuildFailed, build, load_run_catalog, select_datasets
    from flows.progress import show_bars
    from flows.runner import check_runner_options, prefect_api
    from flows.stages import parse_stages

    _quiet_dask_logs()
    # the user's mistakes are found before a cluster starts (and the run's Prefect server is used)
    select_datasets(load_run_catalog(args.catalog, args.store), args.only)
    check_runner_options(args.dask_address, args.workers)
    # the cluster options are parameters of the run (the UI shows them), which choose its runner
    flow_obj = build
    params = {"catalog_path": args.catalog, "only": args.only,
              "stages": parse_stages(args.stages) if args.stages else None,
              "store_url": args.store, "report_dir": args.report, "teacher_gpu": args.teacher_gpu,
              "dask_address": args.dask_address, "workers": args.workers}
    quiet = _NoTracebackForUserErrors()
    logging.getLogger("prefect.flow_runs").addFilter(quiet)
    with prefect_api(server), show_bars(not args.no_progress and sys.stderr.isatty()):
        try:
            summary = flow_obj(**params)
        except BuildFailed as exc:
            print(exc.summary.to_text())
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            logging.getLogger("prefect.flow_runs").removeFilter(quiet)
    print(summary.to_text())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flows.deploy import serve_build

    _quiet_dask_logs()
    serve_build(args.catalog, cron=args.cron, name=args.name, timezone=args.timezone, only=args.only,
                stages=args.stages, store_url=args.store, report_dir=args.report,
                dask_address=args.dask_address, workers=args.workers, teacher_gpu=args.teacher_gpu)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    _quiet_dask_logs()
    return run_demo(args.out, seed=args.seed, workers=args.workers, student_steps=args.student_steps,
                    progress=not args.no_progress and sys.stderr.isatty())
