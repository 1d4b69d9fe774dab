"""The Prefect tasks: one shard of one group of one stage, and the EDA report.

Task parameters are plain data (stage name, the catalog as a dict, group path, shard index):
arrays never travel between processes; each task reads and writes its own shard in the store.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import Task, exponential_backoff

from depthdata.catalog import Catalog, parse_catalog
from depthdata.stage import ShardResult
from flows import stages

#: retries of a shard task after a transient I/O error; delays 2, 4, 8 s (± 50 % jitter)
RETRIES = 3
RETRY_BACKOFF_S = 2.0

# Missing or forbidden files do not appear by waiting: retrying them only delays the report.
_PERMANENT_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_transient(error: BaseException | None) -> bool:
    """Whether ``error`` is worth a retry: an ``OSError`` (network, object store, disk) that is
    not a missing or forbidden path."""
    return isinstance(error, OSError) and not isinstance(error, _PERMANENT_OS_ERRORS)


def _retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(error if isinstance(error, BaseException) else None)


def catalog_payload(catalog: Catalog) -> dict[str, Any]:
    """The catalog as plain data for a task parameter (its folder included)."""
    return {"data": catalog.to_dict(), "base_dir": catalog.base_dir}


def catalog_from_payload(payload: dict[str, Any]) -> Catalog:
    return parse_catalog(payload["data"], base_dir=payload["base_dir"], check_roots=False)


@task(
    name="shard",
    task_run_name="{stage} {group_path} shard {shard}",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_on_transient,
    # The store's manifest parts are the record of what is done; Prefect's cache is not used.
    cache_policy=NONE,
)
def shard_task(stage: str, catalog: dict[str, Any], dataset: str, group_path: str, shard: int) -> ShardResult:
    """Run ``stage`` on one shard; the stage itself skips a shard that is already complete."""
    return stages.run_shard(stage, catalog_from_payload(catalog), dataset, group_path, shard)


@task(name="eda-report", retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
      retry_condition_fn=_retry_on_transient, cache_policy=NONE)
def eda_task(catalog: dict[str, Any], out_dir: str) -> list[str]:
    """Write the EDA report of the whole store into ``out_dir``; returns the files written."""
    from depthdata.eda import write_report

    cat = catalog_from_payload(catalog)
    written = write_report(cat.store_url, out_dir, storage_options=cat.store.storage_options, progress=False)
    return list(written.values())
