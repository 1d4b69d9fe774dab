"""``depthdata compact --drop-removed``: physically drop the samples later builds removed.

Incremental builds never rewrite a shard: a removed or changed item only gets a tombstone, and
its bytes stay in its shard (older versions still read them). Compaction reclaims that space,
as a new version:

1. every shard holding a tombstoned sample is *affected*; its live samples are appended to
   new shards (a plan segment that removes them from their old slots and adds them, same ids,
   at new ones) with every stage's data and manifest rows copied as they are (same checksums,
   same settings hash, so no stage redoes them);
2. the affected shards' data files and manifest parts are deleted (they are retired: no live
   sample left, so builds and readers skip them);
3. the store commits a version of kind ``compact`` that expires every older version (they
   name shards that are gone; opening one says so).

A kill during compaction loses nothing: before step 2 the old shards are intact (the moved
samples' new shards are either complete or redone by the next build from the source), and a
second ``compact`` finishes step 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from depthdata.errors import StoreError
from depthdata.store.store import Group, Store

log = logging.getLogger(__name__)

#: manifest columns the store adds itself (write_shard recomputes them for the new slots)
_STORE_COLUMNS = ("index", "sample_id", "shard")


@dataclass
class Compacted:
    """What compaction did to one group."""

    group: str
    #: shards whose data and parts were deleted
    deleted_shards: list[int] = field(default_factory=list)
    #: live samples copied to new shards
    moved: int = 0
    #: bytes of the group (data and manifest) before and after
    bytes_before: int = 0
    bytes_after: int = 0


def drop_removed(store: Store, groups: list[str] | None = None) -> tuple[list[Compacted], Any]:
    """Compact ``groups`` (default all) of a store opened for writing; returns what was done per
    group and the committed :class:`~depthdata.store.versions.Version` (``None`` when there was
    nothing to drop)."""
    if store.version is not None:
        raise StoreError(f"{store.url}: compact a store opened for writing (mode='r+'), not a pinned version")
    out = []
    sizes = store.sizes()
    for path in groups or store.group_paths():
        done = _compact_group(store.group(path))
        if done is not None:
            done.bytes_before = sizes.get(path, 0)
            out.append(done)
    if not out:
        return [], None
    after = store.sizes()
    for c in out:
        c.bytes_after = after.get(c.group, 0)
    version = store.commit(kind="compact", groups=[c.group for c in out], expire_older=True)
    return out, version


def _compact_group(group: Group) -> Compacted | None:
    layout = group.layout
    if not len(layout.removed):
        return None
    live = layout.live_mask()
    stages = group.stages()
    indexes = {st: group.stage_index(st) for st in stages}
    holding = set().union(*(set(ix.parts) for ix in indexes.values())) if indexes else set()
    affected = sorted({group.shard_of(int(i)) for i in layout.removed} & holding)
    if not affected:
        return None
    incomplete = [(st, k) for st in stages for k in affected if k not in indexes[st].parts
                  and any(live[i] for i in group.shard_range(k))]
    if incomplete:
        st, k = incomplete[0]
        raise StoreError(f"{group.path}: shard {k} has no complete {st} part: finish the build before compacting "
                         "(`depthdata build`), so no sample is copied half-done")
    moving = [i for k in affected for i in group.shard_range(k) if live[i]]
    result = Compacted(group.path, moved=len(moving))
    if moving:
        plan_rows = {r["index"]: r for k in affected for r in group.plan_rows(k)}
        adds = [{c: plan_rows[i][c] for c in ("sample_id", "source_uri", "locator", "fingerprint")} for i in moving]
        first, stop = group.append(adds, removes=moving)
        group.ensure_fields([])  # grows every array to the new slots
        new_slots = group.plan_table().column("index").to_numpy()[-len(moving):]
        source_of = dict(zip(new_slots.tolist(), moving))
        for k in range(first, stop):
            for st in _upstream_first(stages, indexes):
                _copy_stage(group, st, indexes[st], k, [source_of[i] for i in group.shard_range(k)])
            log.info("%s: shard %d holds %d sample(s) moved from shards %s", group.path, k,
                     len(group.shard_range(k)), affected)
    for k in affected:
        _delete_shard(group, stages, k)
        result.deleted_shards.append(k)
    for st in stages:
        group.consolidate(st)
    return result


def _copy_stage(group: Group, stage: str, index: Any, shard: int, sources: list[int]) -> None:
    """Write ``stage``'s fields and rows of new ``shard`` from the samples at slots ``sources``."""
    old_shards = sorted({group.shard_of(i) for i in sources})
    table = index.rows(old_shards)
    rows = {r["index"]: r for r in table.to_pylist()}
    meta = index.parts[old_shards[0]].meta
    configs = {index.parts[k].meta.get("config_hash") for k in old_shards}
    if len(configs) > 1:
        raise StoreError(f"{group.path}: shards {old_shards} were written by {stage} with different settings; "
                         "re-run the build so they agree before compacting")
    fields = list(meta.get("fields", []))
    data = {}
    for name in fields:
        arr = group.array(name)
        data[name] = np.stack([arr[i] for i in sources])
    new_rows = [{c: v for c, v in rows[i].items() if c not in _STORE_COLUMNS and not c.startswith("checksum_")}
                for i in sources]
    # the digests of the new shard's upstream parts, copied just before (the rows differ from
    # any old shard's, so the old digests would make the copy look stale)
    upstream = {st: group.part_digest(st, shard) for st in meta.get("upstream") or {}}
    group.write_shard(shard, stage, data, new_rows, config=meta.get("config") or {}, upstream=upstream)


def _upstream_first(stages: list[str], indexes: dict[str, Any]) -> list[str]:
    """``stages`` ordered so that each comes after the stages its parts name as upstream."""
    needs = {st: {u for rec in indexes[st].parts.values() for u in (rec.meta.get("upstream") or {})} & set(stages)
             for st in stages}
    order: list[str] = []
    while len(order) < len(stages):
        ready = [st for st in stages if st not in order and needs[st] <= set(order)]
        if not ready:
            raise StoreError(f"stages {stages} name each other as upstream: cannot order the copy")
        order.append(ready[0])
    return order


def _delete_shard(group: Group, stages: list[str], shard: int) -> None:
    """Delete a retired shard's manifest parts first (so it never looks complete without its
    data), then its data files (one Zarr shard object per field)."""
    fs = group.store.fs
    for st in stages:
        path = group.part_path(st, shard)
        if fs.exists(path):
            fs.rm_file(path)
    for name in group.fields():
        arr = group.array(name)
        # the shard's object: ``c/<shard>/0/0...`` under the array (default chunk key encoding)
        key = "/".join(["c", str(shard), *["0"] * (arr.ndim - 1)])
        path = f"{group.store.fs_root}/{group.path}/{name}/{key}"
        if fs.exists(path):
            fs.rm_file(path)

