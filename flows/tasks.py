"""The Prefect tasks: a batch of shards of one group for one stage, and the EDA report.

Task parameters are plain data (stage name, the catalog as a dict, group path, shard indices):
arrays never travel between processes; each task reads and writes its own shards in the store.

A task takes several shards when a stage has many (see ``flows.build.MAX_TASKS_PER_STAGE``):
Prefect costs ~0.1 s of CPU per task run across the flow process, the worker and the API
server (``benchmarks/NOTES.md``), which would dominate shards of a few tiny images, and a
Prefect UI of ten thousand task runs per stage is unreadable. Each shard still succeeds, fails
or is retried on its own, and reports its own outcome.

Each task ends in a state whose message says what it did (``4 samples written in 1 shard;
1 quarantined: ...``), which the UI shows on the task run; a task with a failed shard ends
``Failed`` (red) with its shards' outcomes still as its result. Every task first routes the
library's log records to its run (:func:`flows.logs.route_library_logs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed, State
from prefect.tasks import Task, exponential_backoff

from depthdata.catalog import Catalog, parse_catalog
from depthdata.stage import ShardResult
from depthdata.store.faults import is_transient, with_retries
from flows import stages
from flows.logs import no_collection, route_library_logs

#: retries of a shard after a transient I/O error; delays 2, 4, 8 s (± 50 % jitter)
RETRIES = 3
RETRY_BACKOFF_S = 2.0
T = TypeVar("T")
#: longest task-run state message; the UI shows it whole on the task run's page
MAX_MESSAGE = 500


def _retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(error if isinstance(error, BaseException) else None)


def catalog_payload(catalog: Catalog) -> dict[str, Any]:
    """The catalog as plain data for a task parameter (its folder included)."""
    return {"data": catalog.to_dict(), "base_dir": catalog.base_dir}


def catalog_from_payload(payload: dict[str, Any]) -> Catalog:
    return parse_catalog(payload["data"], base_dir=payload["base_dir"], check_roots=False)


@dataclass
class ShardOutcome:
    """One shard of a task: its result, or why it failed (after its retries)."""

    shard: int
    result: ShardResult | None = None
    error: str = ""


def run_shards(stage: str, catalog: Catalog, dataset: str, group_path: str, shards: list[int],
               sleep: Any = time.sleep) -> list[ShardOutcome]:
    """Run ``stage`` on each of ``shards`` in turn. A transient I/O error retries that shard
    (:data:`RETRIES` times, exponential backoff); any other error fails that shard only."""
    outcomes = []
    for k in shards:
        started = datetime.now(timezone.utc)
        attempts = []

        def attempt(k: int = k) -> ShardResult:
            attempts.append(k)
            return stages.run_shard(stage, catalog, dataset, group_path, k)

        try:
            result = with_retries(attempt, f"{stage} {group_path} shard {k}", RETRIES, RETRY_BACKOFF_S, sleep)
            if result.skipped and len(attempts) > 1:
                # An attempt can write every object and lose only a reply (a connection reset
                # after the manifest part's PUT landed): its retry then finds the shard complete.
                # That is this task's work, not a shard done before it: report what it wrote.
                result = stages.written_since(stage, catalog, group_path, k, started) or result
            outcomes.append(ShardOutcome(k, result))
        except Exception as exc:  # noqa: BLE001 - a failed shard is reported, the others go on
            outcomes.append(ShardOutcome(k, error=f"{type(exc).__name__}: {exc}"))
    return outcomes


@task(
    name="shards",
    task_run_name="{stage} {group_path} {label}",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_on_transient,
    # The store's manifest parts are the record of what is done; Prefect's cache is not used.
    cache_policy=NONE,
)
def shards_task(stage: str, catalog: dict[str, Any], dataset: str, group_path: str, shards: list[int],
                label: str) -> State:
    """Run ``stage`` on ``shards`` of one group (``label`` names them in the UI); each stage
    skips a shard that is already complete. The result is the list of :class:`ShardOutcome`, in
    a ``Completed`` state, or ``Failed`` when a shard failed, with :func:`outcome_message`."""
    route_library_logs()
    with no_collection():
        cat = catalog_from_payload(catalog)
        outcomes = run_shards(stage, cat, dataset, group_path, shards)
    message = outcome_message(outcomes, _root(cat, dataset))
    failed = any(o.result is None for o in outcomes)
    return (Failed if failed else Completed)(data=outcomes, message=message)


def _root(catalog: Catalog, dataset: str) -> str:
    try:
        return catalog.dataset_root(dataset)
    except KeyError:
        return ""


def outcome_message(outcomes: list[ShardOutcome], dataset_root: str = "") -> str:
    """What a task did, for its state in the UI: samples written and in how many shards, shards
    skipped (already complete), samples quarantined and shards failed, with the first reason of
    each (paths relative to ``dataset_root``)."""
    from flows.summary import short_reason

    done = [o.result for o in outcomes if o.result is not None]
    written = [r for r in done if not r.skipped]
    skipped = len(done) - len(written)
    quarantined = [q for r in written for q in r.quarantined]
    failed = [o for o in outcomes if o.result is None]
    parts = []
    if written:
        samples = sum(r.written for r in written)
        parts.append(f"{samples} sample{'s' * (samples != 1)} written in {len(written)} "
                     f"shard{'s' * (len(written) != 1)}")
    if skipped:
        parts.append(f"{skipped} shard{'s' * (skipped != 1)} skipped (already complete)")
    if quarantined:
        q = quarantined[0]
        more = f" (+{len(quarantined) - 1} more)" if len(quarantined) > 1 else ""
        parts.append(f"{len(quarantined)} quarantined: {q.sample_id}: "
                     f"{short_reason(q.reason, q.source_uri, {'': dataset_root})}{more}")
    if failed:
        f = failed[0]
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        parts.append(f"{len(failed)} of {len(outcomes)} shard{'s' * (len(outcomes) != 1)} FAILED: "
                     f"shard {f.shard}: {f.error}{more}")
    message = "; ".join(parts) or "nothing to do"
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class StorageFault:
    """What a task returns, instead of raising, when a storage fault outlasted its retries: the
    flow reports the reason in its summary, and Prefect, which logs a raised error with its
    traceback, has nothing to log (issue #15: an outage ended builds in tracebacks)."""

    reason: str


def _retried(call: Callable[[], T], what: str) -> T | StorageFault:
    """``call()`` with a shard's retry policy; a transient fault that outlasts it is returned as
    a :class:`StorageFault`, any other error is raised."""
    try:
        return with_retries(call, what, RETRIES, RETRY_BACKOFF_S)
    except Exception as exc:  # noqa: BLE001 - only transient faults are returned, the rest raises
        if not is_transient(exc):
            raise
        return StorageFault(f"{type(exc).__name__}: {exc}")


@task(name="consolidate", task_run_name="consolidate {stage} {group_path}", cache_policy=NONE)
def consolidate_task(stage: str, catalog: dict[str, Any], group_path: str) -> State:
    """Consolidate one group's manifest of ``stage`` (on a worker: reading thousands of parts
    takes memory the flow process should not keep for the rest of the run). The result is what
    :meth:`~depthdata.store.Group.consolidate` returns."""
    from depthdata.pipeline import open_store

    route_library_logs()
    with no_collection():
        written = _retried(lambda: open_store(catalog_from_payload(catalog)).group(group_path).consolidate(stage),
                           f"consolidating the {stage} manifest of {group_path}")
    if isinstance(written, StorageFault):
        return Failed(data=written, message=f"not consolidated: {written.reason}")
    return Completed(data=written, message=f"consolidated into {written}" if written else "already consolidated")


@task(name="eda-report", cache_policy=NONE)
def eda_task(catalog: dict[str, Any], out_dir: str, version: int | None = None) -> State:
    """Write the EDA report of the store's ``version`` (default: the newest committed) into
    ``out_dir``; the result is the list of files written, or a :class:`StorageFault`."""
    from depthdata.eda import write_report

    route_library_logs()
    with no_collection():
        cat = catalog_from_payload(catalog)
        written = _retried(lambda: list(write_report(cat.store_url, out_dir, storage_options=cat.store.storage_options,
                                                     progress=False, version=version).values()),
                           "writing the EDA report")
    if isinstance(written, StorageFault):
        return Failed(data=written, message=f"report not written: {written.reason}")
    of = f"version {version}" if version is not None else "the newest version"
    return Completed(data=written, message=f"report of {of} written to {out_dir}")
