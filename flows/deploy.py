"""Scheduled builds: the build flow of one catalog served as a Prefect deployment on a cron.

``flow.serve`` registers the deployment with the Prefect API (``prefect server start``, or
Prefect Cloud) and then runs each scheduled flow run in a fresh process until interrupted.

Everything that shapes a run is visible on the deployment in the UI: the build's options and
the cluster (``dask_address``, ``workers``) are its parameters, which a "custom run" can
change; its entrypoint is the module path ``flows.build.build``, found wherever depthdata is
installed, not a file path relative to the folder ``serve`` was started in.
"""

from __future__ import annotations

from pathlib import Path

from prefect.schedules import Cron

from depthdata.errors import DepthdataError
from flows.build import absolute_location, build, load_run_catalog, select_datasets, store_name
from flows.runner import check_runner_options
from flows.stages import parse_stages


def deployment_parameters(catalog: str, only: list[str] | None = None, stages: str | None = None,
                          store_url: str | None = None, report_dir: str | None = None,
                          teacher_gpu: float = 0.0, dask_address: str | None = None,
                          workers: int | None = None) -> dict:
    """Checked parameters of the build flow, with paths made absolute (runs start elsewhere)."""
    cat = load_run_catalog(catalog, store_url)
    select_datasets(cat, only)
    check_runner_options(dask_address, workers)
    return {
        "catalog_path": str(Path(catalog).resolve()),
        "only": only,
        "stages": parse_stages(stages) if stages else None,
        "store_url": cat.store_url if store_url else None,
        "report_dir": absolute_location(report_dir) if report_dir else None,
        "teacher_gpu": teacher_gpu,
        "dask_address": dask_address,
        "workers": workers,
    }


def serve_build(catalog: str, cron: str, name: str | None = None, timezone: str = "UTC",
                only: list[str] | None = None, stages: str | None = None, store_url: str | None = None,
                report_dir: str | None = None, dask_address: str | None = None, workers: int | None = None,
                teacher_gpu: float = 0.0) -> None:
    """Register ``build`` of ``catalog`` on the ``cron`` schedule and serve it (blocks)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.types.entrypoint import EntrypointType

    # refuses bad options now, not at 3 a.m. (and before asking for a server: a bad catalog is
    # the first thing to fix)
    params = deployment_parameters(catalog, only, stages, store_url, report_dir, teacher_gpu, dask_address, workers)
    if not PREFECT_API_URL.value():
        raise DepthdataError("serve needs a lasting Prefect server to register the deployment with: run "
                             "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as exc:
        raise DepthdataError(f"--cron {cron!r}: {exc}") from None
    store = store_name(load_run_catalog(catalog, store_url).store_url)
    build.serve(name=name or f"build-{Path(catalog).stem}", schedules=[schedule], parameters=params,
                description=f"depthdata build of {params['catalog_path']}",
                tags=["depthdata", f"catalog:{Path(catalog).stem}", f"store:{store}"],
                entrypoint_type=EntrypointType.MODULE_PATH)
