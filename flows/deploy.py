"""Scheduled builds: the build flow of one catalog served as a Prefect deployment on a cron.

``flow.serve`` registers the deployment with the Prefect API (``prefect server start``, or
Prefect Cloud) and then runs each scheduled flow run in a fresh process until interrupted.
The served flow carries its task runner; in case a run's process imports ``flows.build``
anew instead, the Dask settings also travel as environment variables
(:data:`flows.runner.ENV_ADDRESS`, :data:`flows.runner.ENV_WORKERS`).
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.schedules import Cron

from depthdata.errors import DepthdataError
from flows.build import absolute_location, build, load_run_catalog, select_datasets
from flows.runner import ENV_ADDRESS, ENV_WORKERS, make_task_runner
from flows.stages import parse_stages


def deployment_parameters(catalog: str, only: list[str] | None = None, stages: str | None = None,
                          store_url: str | None = None, report_dir: str | None = None,
                          teacher_gpu: float = 0.0) -> dict:
    """Checked parameters of the build flow, with paths made absolute (runs start elsewhere)."""
    cat = load_run_catalog(catalog, store_url)
    select_datasets(cat, only)
    return {
        "catalog_path": str(Path(catalog).resolve()),
        "only": only,
        "stages": parse_stages(stages) if stages else None,
        "store_url": cat.store_url if store_url else None,
        "report_dir": absolute_location(report_dir) if report_dir else None,
        "teacher_gpu": teacher_gpu,
    }


def serve_build(catalog: str, cron: str, name: str | None = None, timezone: str = "UTC",
                only: list[str] | None = None, stages: str | None = None, store_url: str | None = None,
                report_dir: str | None = None, dask_address: str | None = None, workers: int | None = None,
                teacher_gpu: float = 0.0) -> None:
    """Register ``build`` of ``catalog`` on the ``cron`` schedule and serve it (blocks)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise DepthdataError("serve needs a lasting Prefect server to register the deployment with: run "
                             "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    params = deployment_parameters(catalog, only, stages, store_url, report_dir, teacher_gpu)
    runner = make_task_runner(dask_address, workers)  # refuses bad Dask settings now, not at 3 a.m.
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise DepthdataError(f"--cron {cron!r}: {exc}") from None
    if dask_address:
        os.environ[ENV_ADDRESS] = dask_address
    if workers is not None:
        os.environ[ENV_WORKERS] = str(workers)
    build.with_options(task_runner=runner).serve(name=name or f"build-{Path(catalog).stem}", schedules=[schedule], parameters=params,
                description=f"depthdata build of {params['catalog_path']}", tags=["depthdata"])
