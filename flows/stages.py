"""The pipeline's stages as the flows see them: a name, the library function behind it, and
the store stage whose manifest parts record its completion.

Each stage's library module is imported only when the stage runs, so a build whose later
stages are not installed (or not written yet) still runs the earlier ones and says plainly
which stage is missing instead of producing anything in its place.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from depthdata.catalog import Catalog
from depthdata.errors import DepthdataError
from depthdata.stage import ShardResult
from depthdata.store import Group, Store

log = logging.getLogger(__name__)


class StageUnavailable(DepthdataError):
    """A stage's library module or function is not importable on this machine."""


@dataclass(frozen=True)
class StageSpec:
    #: name used on the command line and in summaries
    name: str
    #: stage name of the manifest parts (``depthdata.store.STAGES``); empty for ``eda``
    store_stage: str
    #: ``module:function`` of the library entry point
    entry: str
    doc: str
    #: ``module:function(group)`` run once per group before its shard tasks (creates the
    #: stage's arrays: concurrent array creation from several workers is not safe in Zarr)
    prepare: str = ""


STAGE_SPECS: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec("ingest", "ingest", "depthdata.ingest:run_shard", "sources → rgb, depth, pairs"),
        StageSpec("label", "teacher", "depthdata.teacher.stage:run_shard", "teacher → teacher, teacher_conf",
                  "depthdata.teacher.stage:prepare_group"),
        StageSpec("lidar", "lidar", "depthdata.lidar.stage:run_shard", "synthetic LiDAR → sparse",
                  "depthdata.lidar.stage:prepare_group"),
        StageSpec("eda", "", "depthdata.eda:write_report", "report.html + stats.parquet"),
    )
}
STAGE_ORDER = tuple(STAGE_SPECS)


def parse_stages(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"ingest,lidar"`` → ``["ingest", "lidar"]`` in pipeline order; ``None`` → every stage."""
    if text is None:
        return list(STAGE_ORDER)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in STAGE_SPECS]
    if unknown or not names:
        raise DepthdataError(f"--stages: unknown stage(s) {unknown or names!r}; known: {', '.join(STAGE_ORDER)}")
    return [n for n in STAGE_ORDER if n in names]


def resolve(entry: str) -> Any:
    """The function named by ``module:function``, or :class:`StageUnavailable` saying why not."""
    module_name, func_name = entry.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing stage module means "not available"; a missing dependency *inside*
        # an existing module is a real error and keeps its traceback.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StageUnavailable(f"stage module {module_name} is not available ({exc})") from None
        raise
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise StageUnavailable(f"stage function {entry} is not available") from None


def check_available(stage: str) -> str:
    """Empty string when ``stage`` can run, else the reason it cannot."""
    try:
        resolve(STAGE_SPECS[stage].entry)
        if stage == "ingest":
            resolve("depthdata.ingest:plan_groups")
    except StageUnavailable as exc:
        return str(exc)
    return ""


def open_store(catalog: Catalog, create: bool = False) -> Store:
    opts = catalog.store.storage_options
    if create:
        return Store.create(catalog.store_url, catalog=catalog.to_dict(), storage_options=opts)
    return Store.open(catalog.store_url, mode="r+", storage_options=opts)


def plan(stage: str, catalog: Catalog, dataset: str) -> list[Group]:
    """Groups of ``dataset`` that ``stage`` works on, with the stage's fields created.

    ``ingest`` plans the groups from the source (creating or reusing them, fields included);
    later stages work on whatever groups ingest made, each prepared once here by the stage's
    own ``prepare_group`` before any shard task runs.
    """
    if stage == "ingest":
        return list(resolve("depthdata.ingest:plan_groups")(catalog, dataset))
    store = open_store(catalog)
    groups = [store.group(p) for p in store.group_paths() if p.split("/", 1)[0] == dataset]
    prepare = resolve(STAGE_SPECS[stage].prepare)
    for g in groups:
        prepare(g)
    return groups


def run_shard(stage: str, catalog: Catalog, dataset: str, group_path: str, shard: int) -> ShardResult:
    """Run one shard of ``stage`` in this process (called inside a worker's task)."""
    group = open_store(catalog).group(group_path)
    func = resolve(STAGE_SPECS[stage].entry)
    if stage == "ingest":
        return func(group, shard, catalog, dataset)
    if stage == "label":
        return func(group, shard, catalog.teacher, teacher=cached_teacher(catalog.teacher.model_dump_json()))
    if stage == "lidar":
        # one Open3D thread per task: the cluster already runs one task per core
        return func(group, shard, catalog.lidar, threads=1)
    raise ValueError(f"stage {stage!r} has no shards")


@functools.lru_cache(maxsize=2)
def cached_teacher(config_json: str) -> Any:
    """The teacher model of a config, loaded once per worker process (keyed by its JSON)."""
    from depthdata.teacher.config import TeacherConfig

    loader = resolve("depthdata.teacher.model:load_teacher")
    config = TeacherConfig.model_validate_json(config_json)
    # Dask starts each worker process with OMP_NUM_THREADS=1 (one task per core); torch would
    # otherwise take every core in every worker and oversubscribe the machine.
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if config.threads is None and omp.isdigit():
        config = config.model_copy(update={"threads": int(omp)})
    log.info("loading the teacher once in this worker (%s threads)", config.threads or "all")
    return loader(config)


def report_outputs(result: Any, out_dir: str) -> list[str]:
    """Files the EDA report wrote, as strings (``write_report`` returns name → path)."""
    if isinstance(result, dict):
        return [str(p) for p in result.values()]
    return [str(out_dir)]
