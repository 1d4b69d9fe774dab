"""The pipeline's stages in order, and the in-process runner the ``depthdata <stage> run``
commands use. ``flows`` runs the same :class:`~depthdata.stage.Stage` objects as Prefect tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from depthdata.errors import DepthdataError
from depthdata.ingest import stage as ingest
from depthdata.lidar.stage import stage as lidar
from depthdata.stage import Stage, StageTotals
from depthdata.teacher.stage import stage as teacher

if TYPE_CHECKING:
    from depthdata.catalog import Catalog
    from depthdata.store import Group, Store
    from depthdata.store.lock import BuildLock

log = logging.getLogger(__name__)

#: every stage, in pipeline order
STAGES: dict[str, Stage] = {s.name: s for s in (ingest, teacher, lidar)}


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise DepthdataError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def open_store(catalog: Catalog, create: bool = False) -> Store:
    """The catalog's store; ``create`` makes it when missing and records the catalog in it."""
    from depthdata.store import Store

    opts = catalog.store.storage_options
    if create:
        return Store.create(catalog.store_url, catalog=catalog.to_dict(), storage_options=opts)
    return Store.open(catalog.store_url, mode="r+", storage_options=opts)


def build_lock(catalog: Catalog) -> BuildLock:
    """The lock a build of ``catalog`` holds on its store (:mod:`depthdata.store.lock`); the
    store's folder is made first, so the lock also covers creating the store."""
    import fsspec

    from depthdata.store.lock import BuildLock

    fs, root = fsspec.core.url_to_fs(catalog.store_url, **catalog.store.storage_options)
    fs.makedirs(root, exist_ok=True)
    return BuildLock(fs, root, catalog.store_url)


def run_local(stage: Stage, groups: Iterable[Group], settings: Any, *, force: bool = False, threads: int = 0,
              progress: bool = True, commit: bool = True) -> StageTotals:
    """Every shard of ``groups`` through ``stage`` in this process, one after another.

    The groups get the stage's arrays first (what :meth:`Stage.prepare` does in a build). A
    shard whose required stages (:attr:`Stage.requires`) are not complete stops the run with
    a :class:`~depthdata.errors.StoreError` naming it. At the end each group's manifest of the
    stage is consolidated (:meth:`depthdata.store.Group.consolidate`) and, with ``commit``, the
    store commits a version (:meth:`depthdata.store.Store.commit`).
    """
    from tqdm import tqdm

    groups = list(groups)
    for g in groups:
        stage.prepare_group(g)
    tasks = [(g, k) for g in groups for k in g.live_shards()]
    totals = StageTotals()
    for g, k in tqdm(tasks, desc=f"{stage.name} shards", unit="shard", disable=not progress):
        totals.add(stage.run_shard(g, k, settings, threads=threads, force=force))
    for g in groups:
        g.consolidate(stage.name)
    if commit and groups:
        groups[0].store.commit(kind="run", groups=[g.path for g in groups])
    return totals


def commit(catalog: Catalog, datasets: Iterable[str] | None = None, kind: str = "build") -> Any:
    """Commit what a build of ``catalog`` wrote as the store's next version (after every shard
    of every stage finished): the groups of ``datasets`` (default: all) as they are now, every
    other group as the previous version had it. Returns the
    :class:`~depthdata.store.versions.Version`, or ``None`` when nothing changed."""
    from depthdata.store import manifest as mf

    store = open_store(catalog)
    chosen = None
    if datasets is not None:
        wanted = set(datasets)
        chosen = [p for p in store.group_paths() if p.split("/", 1)[0] in wanted]
    return store.commit(kind=kind, catalog_hash=mf.config_hash(catalog.to_dict()), groups=chosen)
