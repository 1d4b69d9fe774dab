"""The flows: ``ingest``, ``teacher``, ``lidar``, ``eda`` and ``build`` (all of them, in order).

Each flow is thin: it plans the groups through the library, submits one task per shard of each
group to the task runner (Dask by default, see :mod:`flows.runner`), collects the
:class:`~depthdata.stage.ShardResult` values into a :class:`~flows.summary.BuildSummary`,
publishes that as a markdown artifact, and fails when any shard failed. Stages run one after
another; the shards of one stage run in parallel across every group.

The store's manifest parts are the only record of what is done, so a re-run (after a kill, a
failure or a catalog change) redoes exactly the shards that are not complete, and a re-run with
nothing to do submits no task (and starts no cluster). The EDA report is rewritten only when
the store's committed version differs from the one the report folder describes.

What the Prefect UI shows of a run: its name and tags say the catalog, the store and the stages
(:func:`run_name`, :func:`run_tags`); each task's state message says what it did
(:mod:`flows.tasks`); the library's log records are in the run's logs (:mod:`flows.logs`); the
summary artifact has one key per store (:func:`flows.summary.artifact_key`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

import dask
from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.futures import as_completed
from prefect.runtime import flow_run

from depthdata.catalog import Catalog, load_catalog
from depthdata.errors import DepthdataError
from depthdata.pipeline import STAGES, build_lock, open_store
from depthdata.pipeline import commit as pipeline_commit
from depthdata.stage import Stage
from depthdata.store import Group, is_remote
from depthdata.store.debris import clean_after_takeover
from depthdata.store.faults import is_transient, with_retries
from depthdata.store.lock import BuildLock
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID
from flows import progress, stages
from flows.logs import collect_warnings, route_library_logs
from flows.runner import TaskRunnerFromEnv, check_runner_options, make_task_runner
from flows.summary import BuildSummary, ShardFailure, StageSummary
from flows.tasks import (RETRIES, RETRY_BACKOFF_S, ShardOutcome, StorageFault, catalog_payload, consolidate_task,
                         eda_task, shards_task)

log = logging.getLogger(__name__)


class BuildFailed(DepthdataError):
    """At least one shard failed; the others completed. Carries the run's summary."""

    def __init__(self, summary: BuildSummary):
        from flows.summary import group_failures

        self.summary = summary
        lines = [f"{st} {where}: {reason}" for st, where, reason in group_failures(summary.failures, {})]
        super().__init__(f"{len(summary.failures)} shard(s) failed:\n  " + "\n  ".join(lines))


def load_run_catalog(catalog_path: str, store_url: str | None = None) -> Catalog:
    """The catalog of a run, with ``store_url`` (when given) replacing ``store.url``.

    A relative local ``store_url`` is taken relative to the current folder (it comes from the
    command line), unlike the catalog's own ``store.url``, which is relative to the catalog.
    """
    catalog = load_catalog(catalog_path)
    if store_url:
        url = absolute_location(store_url)
        catalog = catalog.model_copy(update={"store": catalog.store.model_copy(update={"url": url})})
    return catalog


def absolute_location(path_or_url: str) -> str:
    """A command-line location made independent of the current folder (tasks and scheduled
    runs start elsewhere): a URL as given, a local path made absolute."""
    return path_or_url if "://" in path_or_url else str(Path(path_or_url).resolve())


def select_datasets(catalog: Catalog, only: list[str] | None) -> list[str]:
    if not only:
        return list(catalog.datasets)
    unknown = [d for d in only if d not in catalog.datasets]
    if unknown:
        raise DepthdataError(f"--only: no dataset {unknown} in the catalog (datasets: {', '.join(catalog.datasets)})")
    return [d for d in catalog.datasets if d in only]


def default_report_dir(catalog: Catalog) -> str:
    """``<store name>-report`` beside the store: ``build/x-report`` for ``build/x.zarr``, or for
    a remote store the URL in the same place (``s3://bucket/builds/x.zarr`` →
    ``s3://bucket/builds/x-report``), which every worker reaches as it reaches the store. Named
    after the store, so that stores in one folder do not overwrite each other's report."""
    url = catalog.store_url.rstrip("/")
    name = url.rsplit("/", 1)[-1].removesuffix(".zarr") + "-report"
    if is_remote(url):
        return url.rsplit("/", 1)[0] + "/" + name
    return str(Path(url.removeprefix("file://")).parent / name)


def resolve_report_dir(report_dir: str | None, catalog: Catalog) -> str:
    """The EDA report folder of a run: ``report_dir`` (a relative local path is taken relative
    to the current folder, like ``--store``: the report task may run in another process) or
    :func:`default_report_dir`."""
    return absolute_location(report_dir) if report_dir else default_report_dir(catalog)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow run (plain function call in a test or a script)
        return log


def _outcome(fut: Any) -> tuple[Any, str]:
    """``(result, "")`` of a finished task, or ``(None, reason)`` when it raised. A shard task
    with a failed shard ends ``Failed`` but still returns its shards' outcomes: those count."""
    try:
        value = fut.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a failed shard is reported, the others go on
        value = exc
    if isinstance(value, BaseException):
        return None, f"{type(value).__name__}: {value}"
    if isinstance(value, StorageFault):  # returned, not raised: Prefect logs no traceback for it
        return None, value.reason
    return value, ""


def run_stage(stage: Stage, catalog: Catalog, datasets: list[str],
              resources: dict[str, float] | None = None) -> StageSummary:
    """Every shard of ``stage`` over ``datasets``, in parallel on the current task runner."""
    logger = _logger()
    t0 = time.perf_counter()
    summary = StageSummary(stage.name)
    jobs: list[tuple[str, str, int]] = []
    to_consolidate: list[Group] = []
    configs: dict[int, tuple[Any, dict[str, Any]]] = {}
    for ds in datasets:
        # The flow process's own store calls: retried like a shard's after a storage fault, and
        # a dataset that still cannot be planned is a failure in the summary, not a crash.
        # Returns the groups whose manifest will need consolidating, the jobs, and the tally.
        def plan(ds: str = ds) -> tuple[list[Group], list[tuple[str, str, int]], StageSummary]:
            part = StageSummary(stage.name)
            groups = stage.prepare(open_store(catalog, create=True), catalog, ds)
            settings = stage.settings(catalog, ds)
            # the teacher's and LiDAR's settings are one object for every dataset: hash the
            # teacher's weights once per stage, not once per dataset
            # (the settings are kept with their config, so an id is never reused within the stage)
            if id(settings) not in configs:
                configs[id(settings)] = (settings, stage.part_config(settings))
                _warn_stand_in_teacher(stage, settings, configs[id(settings)][1], part)
            config = configs[id(settings)][1]
            if not groups and stage.requires:
                part.failures.append(ShardFailure(ds, -1, "the store has no group of this dataset: run ingest first"))
            todo, stale = [], []
            for g in groups:
                jobs_g, needs_consolidation = _shards_to_run(stage, g, config, ds, part)
                todo += jobs_g
                stale += [g] if jobs_g or needs_consolidation else []
            return stale, todo, part

        try:
            stale, todo, part = with_retries(plan, f"{stage.name}: planning {ds}", RETRIES, RETRY_BACKOFF_S)
        except Exception as exc:  # noqa: BLE001 - the summary says why; the other datasets go on
            if not (isinstance(exc, DepthdataError) or is_transient(exc)):
                raise
            reason = str(exc) if isinstance(exc, DepthdataError) else f"{type(exc).__name__}: {exc}"
            logger.error("%s: cannot plan dataset %s: %s", stage.name, ds, reason)
            summary.failures.append(ShardFailure(ds, -1, f"planning failed: {reason}"))
            continue
        to_consolidate += stale
        jobs += todo
        summary.shards_skipped += part.shards_skipped
        summary.failures += part.failures
        summary.warnings += [w for w in part.warnings if w not in summary.warnings]
    logger.info("%s: %d shard task(s) over %d dataset(s), %d shard(s) already complete", stage.name, len(jobs),
                len(datasets), summary.shards_skipped)
    progress.emit(progress.Event("stage_start", stage.name, total=len(jobs)))
    payload = catalog_payload(catalog)
    annotate = dask.annotate(resources=resources) if resources else contextlib.nullcontext()
    with annotate, tags(f"stage:{stage.name}"):
        futures = {shards_task.submit(stage.name, payload, ds, path, shards, _label(shards)): (path, shards)
                   for ds, path, shards in batches(jobs)}
    for fut in as_completed(list(futures)):
        path, shards = futures[fut]
        outcomes, reason = _outcome(fut)
        for out in outcomes or [ShardOutcome(k, error=reason) for k in shards]:
            if out.result is not None:
                summary.add(out.result)
                outcome = "skipped" if out.result.skipped else "written"
                for q in out.result.quarantined:
                    logger.warning("%s: quarantined %s (%s): %s", stage.name, q.sample_id, q.source_uri, q.reason)
            else:
                logger.error("%s: %s shard %d FAILED: %s", stage.name, path, out.shard, out.error)
                summary.failures.append(ShardFailure(path, out.shard, out.error))
                outcome = "failed"
            progress.emit(progress.Event("shard_done", stage.name, outcome=outcome))
    summary.failures.sort(key=lambda f: (f.group, f.shard))
    with tags(f"stage:{stage.name}"):
        _consolidate(stage, to_consolidate, payload)
    summary.seconds = time.perf_counter() - t0
    progress.emit(progress.Event("stage_end", stage.name))
    logger.info("%s: %d shard(s) written, %d skipped, %d failed, %d sample(s), %.1f s", stage.name,
                summary.shards_written, summary.shards_skipped, len(summary.failures), summary.samples_written,
                summary.seconds)
    return summary


def _warn_stand_in_teacher(stage: Stage, settings: Any, config: dict[str, Any], summary: StageSummary) -> None:
    """A stage whose settings hash says its labels come from a stand-in teacher — randomly
    initialised (``teacher.allow_random_init`` without weights) or the demo teacher — says so
    in the summary, also when every shard is already complete (the labels in the store are
    still those)."""
    if config.get("teacher_random_init"):
        summary.warnings.append(
            f"{stage.name}: no weights found for {getattr(settings, 'model', 'the teacher')!r}: the pseudo-labels come "
            f"from a tiny RANDOMLY INITIALISED teacher ({config.get('teacher_id')}) and are meaningless")
    elif config.get("teacher_id") == DEMO_TEACHER_ID:
        # the demo teacher is trained, but on rendered toy scenes: labels of real images from it
        # must not pass for Depth Anything V2's
        model = getattr(settings, "model", DEMO_TEACHER_ID)
        why = "" if model == DEMO_TEACHER_ID else f"no weights found for {model!r}: "
        summary.warnings.append(
            f"{stage.name}: {why}the pseudo-labels come from the DEMO TEACHER ({DEMO_TEACHER_ID}), trained on "
            "procedurally rendered scenes, not Depth Anything V2")


#: at most this many tasks per stage: shards are batched beyond it. Prefect costs ~0.1 s of CPU
#: per task run (flow process + worker + API server, benchmarks/NOTES.md), so 10,000 one-shard
#: tasks of tiny images spend more on orchestration than on the images, and the flow process
#: holds a future per task; 256 tasks still keep a few hundred workers busy and the UI readable.
MAX_TASKS_PER_STAGE = 256


def batches(jobs: list[tuple[str, str, int]], max_tasks: int = MAX_TASKS_PER_STAGE
            ) -> list[tuple[str, str, list[int]]]:
    """``(dataset, group, shard)`` jobs as at most about ``max_tasks`` batches of consecutive
    shards of one group each (one shard per batch when there are few)."""
    per_task = max(1, -(-len(jobs) // max_tasks))
    out: list[tuple[str, str, list[int]]] = []
    for ds, path, k in jobs:
        if out and out[-1][1] == path and len(out[-1][2]) < per_task:
            out[-1][2].append(k)
        else:
            out.append((ds, path, [k]))
    return out


def _label(shards: list[int]) -> str:
    return f"shard {shards[0]}" if len(shards) == 1 else f"shards {shards[0]}-{shards[-1]} ({len(shards)})"


def _shards_to_run(stage: Stage, group: Group, config: dict[str, Any], dataset: str,
                   summary: StageSummary) -> tuple[list[tuple[str, str, int]], bool]:
    """The shards of ``group`` that need a task, decided from the manifest (a few requests per
    group and stage): complete ones (same settings) are counted as skipped, and ones whose
    upstream stage is not complete are failures — running them would process fill values.
    Also whether the stage's manifest needs consolidating even if no shard runs (a build killed
    before its consolidation)."""
    index = group.stage_index(stage.name)
    # a shard made from upstream parts that changed since (another teacher, a redone shard) is redone
    done = group.shard_statuses(stage.name, config, index=index,
                                upstream=stage.upstream_all(group) if stage.consumes else None)
    upstream = {req: group.shard_statuses(req) for req in stage.requires}
    jobs = []
    for k in group.live_shards():  # a shard whose samples were all removed is left alone
        missing = [req for req, statuses in upstream.items() if not statuses[k].complete]
        if missing:
            summary.failures.append(ShardFailure(group.path, k, f"{', '.join(missing)} is not complete for this shard"))
        elif done[k].complete:
            summary.shards_skipped += 1
        else:
            jobs.append((dataset, group.path, k))
    return jobs, index.consolidation_needed


def _consolidate(stage: Stage, groups: list[Group], payload: dict[str, Any]) -> None:
    """One consolidated manifest per group for readers, written by tasks. Best effort: the parts
    are the record, so a failure here costs readers speed, never correctness (``depthdata
    compact`` redoes it)."""
    futures = {consolidate_task.submit(stage.name, payload, g.path): g.path for g in groups}
    for fut in as_completed(list(futures)):
        written, reason = _outcome(fut)
        if reason:
            _logger().warning("%s: could not consolidate the %s manifest (%s); readers use the parts",
                              futures[fut], stage.name, reason)


def run_pipeline(catalog_path: str, only: list[str] | None = None, stages_: list[str] | str | None = None,
                 store_url: str | None = None, report_dir: str | None = None,
                 teacher_gpu: float = 0.0, dask_address: str | None = None,
                 workers: int | None = None) -> BuildSummary:
    """The body of every flow: the chosen stages over the chosen datasets, then the artifact.
    ``dask_address`` / ``workers`` are checked here; the flow's task runner uses them
    (:class:`flows.runner.RunnerFromParameters`)."""
    route_library_logs()
    check_runner_options(dask_address, workers)
    catalog = load_run_catalog(catalog_path, store_url)
    datasets = select_datasets(catalog, only)
    names = stages.parse_stages(stages_)
    _tag_run(catalog_path, catalog, only, names)
    summary = BuildSummary(catalog.store_url, catalog=absolute_location(catalog_path),
                           roots={ds: catalog.dataset_root(ds) for ds in datasets})
    with collect_warnings() as warned:
        try:
            _run_stages(catalog, datasets, names, summary, report_dir, teacher_gpu)
        finally:
            summary.warnings += [w for w in warned if w not in summary.warnings]
    _publish(summary)
    if not summary.ok:
        raise BuildFailed(summary)
    return summary


def _run_stages(catalog: Catalog, datasets: list[str], names: list[str], summary: BuildSummary,
                report_dir: str | None, teacher_gpu: float) -> None:
    lock = _take_lock(catalog, summary)
    if lock is None:  # the store cannot be reached: the summary says why
        return
    try:
        for name in names:
            if name == stages.EDA:
                _commit(catalog, datasets, summary)  # the report describes the committed version
                summary.stages.append(_eda(catalog, resolve_report_dir(report_dir, catalog), _report_version(
                    catalog, summary)))
                continue
            stage = STAGES[name]
            resources = {"GPU": teacher_gpu} if stage.wants_gpu and teacher_gpu > 0 else None
            summary.stages.append(run_stage(stage, catalog, datasets, resources))
        _commit(catalog, datasets, summary)
    finally:
        removed = clean_after_takeover(lock)
        if removed:
            _logger().info("removed %d temporary file(s) the killed build left (%s taken over): %s", len(removed),
                           lock.taken_over, ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))
        _release(lock)


def _commit(catalog: Catalog, datasets: list[str], summary: BuildSummary) -> None:
    """Commit the build's work as the store's next version, once, and only when every shard
    stage so far succeeded: readers keep the previous version otherwise, and the re-run that
    finishes the work commits."""
    if summary.committed or not summary.ok or not any(s.stage in STAGES for s in summary.stages):
        return
    logger = _logger()

    def commit() -> tuple[Any, Any]:  # and, when nothing changed, the version readers keep (a store call too)
        version = pipeline_commit(catalog, datasets)
        return version, open_store(catalog).latest_version() if version is None else None

    try:
        version, latest = with_retries(commit, "committing the version", RETRIES, RETRY_BACKOFF_S)
    except Exception as exc:  # noqa: BLE001 - the summary says why; the work itself is on disk
        if not (isinstance(exc, DepthdataError) or is_transient(exc)):
            raise
        summary.stages.append(StageSummary("commit", failures=[ShardFailure("(whole store)", -1, str(exc))]))
        return
    summary.committed = True
    if version is None:
        summary.version = latest.number if latest else None
        logger.info("nothing changed: readers keep version %s", summary.version)
    else:
        summary.version, summary.version_added, summary.version_removed = version.number, version.added, \
            version.removed
        logger.info("committed version %d: %d sample(s) added, %d removed", version.number, version.added,
                    version.removed)


def _take_lock(catalog: Catalog, summary: BuildSummary) -> BuildLock | None:
    """The store's build lock, held (one build writes a store at a time; a second is refused
    naming the first: :class:`~depthdata.store.lock.StoreLocked`), or ``None`` when the store
    cannot be reached after the retries, with the reason added to ``summary`` (issue #15: an
    outage at the start of a build ended in a traceback)."""
    try:
        lock = with_retries(lambda: build_lock(catalog), "opening the store's folder", RETRIES, RETRY_BACKOFF_S)
        with_retries(lock.acquire, "taking the build lock", RETRIES, RETRY_BACKOFF_S)
    except Exception as exc:  # noqa: BLE001 - a fault that outlasted the retries is reported, others raise
        if not is_transient(exc):
            raise
        reason = f"cannot take the build lock: {type(exc).__name__}: {exc}"
        _logger().error("%s: %s", catalog.store_url, reason)
        summary.stages.append(StageSummary("lock", failures=[ShardFailure("(whole store)", -1, reason)]))
        return None
    return lock


def _release(lock: BuildLock) -> None:
    """Release the build lock; when the store is still unreachable after the retries, say so
    instead of ending the build in a traceback: the lock is taken over by the next build once
    this process is gone (same host) or its heartbeat is old (:mod:`depthdata.store.lock`)."""
    try:
        with_retries(lock.release, "releasing the build lock", RETRIES, RETRY_BACKOFF_S)
    except Exception as exc:  # noqa: BLE001 - a fault that outlasted the retries is reported, others raise
        if not is_transient(exc):
            raise
        _logger().warning("%s: could not remove the build lock (%s: %s); the next build takes it over once this "
                          "process has ended", lock.url, type(exc).__name__, exc)


def _report_version(catalog: Catalog, summary: BuildSummary) -> int | None:
    """The store version the report describes: the one this build committed or kept, else
    (the build committed nothing: it failed, or ran no shard stage) the newest committed one,
    which readers see; ``None`` when the store has none."""
    if summary.committed:
        return summary.version
    try:
        latest = with_retries(lambda: open_store(catalog).latest_version(), "reading the store's versions", RETRIES,
                              RETRY_BACKOFF_S)
    except Exception:  # noqa: BLE001 - no store, or none reachable: the report task says why
        return None
    return latest.number if latest else None


def _report_up_to_date(catalog: Catalog, report_dir: str, version: int | None) -> list[str] | None:
    """The report's files when the folder already describes ``version`` of the store, else
    ``None`` (a read error too: rewriting is always correct)."""
    from depthdata.eda.written import report_version

    if version is None:
        return None
    try:
        found = report_version(report_dir, catalog.store_url, catalog.store.storage_options)
    except Exception as exc:  # noqa: BLE001 - cannot tell: write it
        _logger().info("eda: cannot read what %s describes (%s: %s); rewriting it", report_dir,
                       type(exc).__name__, exc)
        return None
    if found is None or found[0] != version:
        return None
    return [f"{report_dir.rstrip('/')}/{name}" for name in found[1]]


def _eda(catalog: Catalog, report_dir: str, version: int | None = None) -> StageSummary:
    """The EDA report of store ``version`` into ``report_dir``, unless the folder already has
    it: the scan costs seconds to hours and a scheduled build that changed nothing would write
    the same report again."""
    logger = _logger()
    t0 = time.perf_counter()
    summary = StageSummary("eda")
    progress.emit(progress.Event("stage_start", "eda", total=1))
    current = _report_up_to_date(catalog, report_dir, version)
    if current is not None:
        summary.outputs, summary.note = current, f"report up to date (version {version})"
        logger.info("eda: %s already describes version %d of the store: not rewritten", report_dir, version)
        progress.emit(progress.Event("shard_done", "eda", outcome="skipped"))
        summary.seconds = time.perf_counter() - t0
        progress.emit(progress.Event("stage_end", "eda"))
        return summary
    with tags("stage:eda"):
        fut = eda_task.submit(catalog_payload(catalog), report_dir, version)
    outputs, reason = _outcome(fut)
    if not reason:
        summary.outputs = list(outputs)
        summary.note = f"report written (version {version})" if version is not None else \
            "report written (no committed version: the working state)"
        outcome = "written"
    else:
        logger.error("eda: report FAILED: %s", reason)
        summary.failures.append(ShardFailure("(whole store)", -1, reason))
        outcome = "failed"
    progress.emit(progress.Event("shard_done", "eda", outcome=outcome))
    summary.seconds = time.perf_counter() - t0
    progress.emit(progress.Event("stage_end", "eda"))
    return summary


def _publish(summary: BuildSummary) -> None:
    catalog = f"catalog {summary.catalog_name} into " if summary.catalog else ""
    create_markdown_artifact(summary.to_markdown(), key=summary.artifact_key(),
                             description=f"depthdata build of {catalog}{summary.store_url}")


def store_name(store_url: str) -> str:
    """The last part of a store's URL or path (``demo.zarr``)."""
    return store_url.rstrip("/").rsplit("/", 1)[-1]


def run_name(kind: str, params: dict[str, Any], now: _dt.datetime | None = None) -> str:
    """``<flow>-<catalog stem>[-<datasets>]-<store name>[-<stages>]-<YYYYmmdd-HHMMSS>``, e.g.
    ``build-catalog-demo.zarr-all-20261122-031500`` or
    ``build-catalog-nyu-demo.zarr-ingest+lidar-20261122-031500``: the runs list tells builds of
    other catalogs, stores and stages apart. The stage flows (``ingest``, ...) name no stages."""
    catalog_path = str(params.get("catalog_path") or "catalog")
    parts = [kind, Path(catalog_path).stem]
    if params.get("only"):
        parts.append("+".join(params["only"]))
    store = params.get("store_url")
    if not store:
        try:  # the catalog's; a catalog that cannot be read fails the run in its body, with the reason
            store = load_run_catalog(catalog_path).store_url
        except Exception:  # noqa: BLE001
            store = None
    if store:
        parts.append(store_name(store))
    if kind == "build":
        chosen = params.get("stages")
        try:
            names = stages.parse_stages(chosen)
        except DepthdataError:
            names = list(chosen or [])
        parts.append("all" if names == list(stages.STAGE_ORDER) else "+".join(names))
    parts.append((now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S"))
    return "-".join(parts)


def run_tags(catalog_path: str, catalog: Catalog, only: list[str] | None, names: list[str],
             from_deployment: bool) -> list[str]:
    """The tags of a build's flow run, to filter the runs list by: ``depthdata``,
    ``catalog:<stem>``, ``store:<name>``, ``stage:<name>`` per stage, ``dataset:<name>`` per
    ``--only`` dataset, and ``manual`` for a run not started by a deployment."""
    out = ["depthdata", f"catalog:{Path(catalog_path).stem}", f"store:{store_name(catalog.store_url)}"]
    out += [f"stage:{n}" for n in names] + [f"dataset:{d}" for d in only or []]
    return out + ([] if from_deployment else ["manual"])


def _tag_run(catalog_path: str, catalog: Catalog, only: list[str] | None, names: list[str]) -> None:
    """Add :func:`run_tags` to the current flow run's tags (a deployment's stay). Tags are set
    in the run's body because only there are the parameters, and the catalog, known; a run
    outside Prefect (tests calling :func:`run_pipeline`) has none to set."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    have = list(ctx.flow_run.tags or [])
    new = run_tags(catalog_path, catalog, only, names, ctx.flow_run.deployment_id is not None)
    merged = have + [t for t in new if t not in have]
    if merged != have:
        try:
            ctx.client.update_flow_run(ctx.flow_run.id, tags=merged)
            ctx.flow_run.tags = merged
        except Exception as exc:  # noqa: BLE001 - tags help to find runs; the build goes on without them
            _logger().warning("could not tag the flow run: %s: %s", type(exc).__name__, exc)


def _run_name(kind: str) -> str:
    return run_name(kind, flow_run.parameters or {})


def _flow_name(kind: str):
    return lambda: _run_name(kind)


@flow(name="depthdata-build", flow_run_name=_flow_name("build"), task_runner=TaskRunnerFromEnv(),
      validate_parameters=True)
def build(catalog_path: str, only: list[str] | None = None, stages: list[str] | None = None,
          store_url: str | None = None, report_dir: str | None = None, teacher_gpu: float = 0.0,
          dask_address: str | None = None, workers: int | None = None) -> BuildSummary:
    """Every stage (or ``stages``) in order for every dataset (or ``only``) of a catalog. Shard
    tasks run on the Dask cluster at ``dask_address``, or a local cluster of ``workers``
    processes (0: in the flow's process); both ``None``: ``DEPTHDATA_DASK_ADDRESS`` /
    ``DEPTHDATA_WORKERS``, else a local cluster of one worker per CPU."""
    return _completed(run_pipeline(catalog_path, only, stages, store_url, report_dir, teacher_gpu, dask_address,
                                   workers))


def _completed(summary: BuildSummary) -> Any:
    """The flow run's final state: ``Completed`` with the summary as its result (what calling the
    flow returns) and :meth:`~flows.summary.BuildSummary.headline` as its message, which the
    UI shows in the run's details."""
    from prefect.states import Completed

    return Completed(data=summary, message=summary.headline())


def _stage_flow(stage: str, doc: str):
    @flow(name=f"depthdata-{stage}", flow_run_name=_flow_name(stage), task_runner=TaskRunnerFromEnv(),
          validate_parameters=True)
    def stage_flow(catalog_path: str, only: list[str] | None = None, store_url: str | None = None,
                   report_dir: str | None = None, teacher_gpu: float = 0.0, dask_address: str | None = None,
                   workers: int | None = None) -> BuildSummary:
        return _completed(run_pipeline(catalog_path, only, [stage], store_url, report_dir, teacher_gpu, dask_address,
                                       workers))

    stage_flow.__doc__ = doc
    return stage_flow


ingest = _stage_flow("ingest", "Sources → rgb, depth, pairs for every dataset (or ``only``).")
teacher = _stage_flow("teacher", "Teacher pseudo-labels → teacher, teacher_conf.")
lidar = _stage_flow("lidar", "Synthetic sparse LiDAR → sparse.")
eda = _stage_flow("eda", "The EDA report of the store.")

FLOWS = {"build": build, "ingest": ingest, "teacher": teacher, "lidar": lidar, "eda": eda}


def with_runner(flow_obj, dask_address: str | None = None, workers: int | None = None):
    """``flow_obj`` running its tasks on the given cluster (see :func:`flows.runner.make_task_runner`)."""
    return flow_obj.with_options(task_runner=make_task_runner(dask_address, workers))


__all__ = ["FLOWS", "BuildFailed", "build", "eda", "ingest", "lidar", "run_pipeline", "teacher", "with_runner"]
