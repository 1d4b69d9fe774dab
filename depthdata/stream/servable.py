"""Which shards and samples of a store can be served for a set of fields.

A shard's field is servable only once the stage that writes it is complete for that shard (its
manifest part exists and matches); a sample is servable only when every such stage recorded it
with status ``ok`` (quarantined samples hold fill values) and a later build has not removed it
(a tombstone in the plan). Everything else is skipped and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc

from depthdata.errors import DepthdataError
from depthdata.store import Group, field_spec
from depthdata.store.consolidated import StageIndex
from depthdata.stream.order import ShardRef

log = logging.getLogger(__name__)


def required_stages(fields: Sequence[str]) -> list[str]:
    """Stages whose completion the ``fields`` depend on, in first-use order."""
    stages: list[str] = []
    for name in fields:
        try:
            stage = field_spec(name).stage
        except KeyError as exc:
            raise DepthdataError(str(exc.args[0])) from None
        if stage not in stages:
            stages.append(stage)
    return stages


def _ok_mask(group: Group, index: StageIndex, complete: list[int]) -> np.ndarray | None:
    """Per sample of ``group``: recorded ``ok`` by the stage of ``index`` in one of the
    ``complete`` shards; ``None`` when the stage keeps no status. Vectorised: a million-sample
    group is two columns and a mask."""
    table = index.rows(complete, ("index", "status"))
    if table is None or "status" not in table.column_names:
        return None
    mask = np.zeros(group.num_slots, bool)
    ok = pc.fill_null(pc.equal(table["status"], "ok"), False).to_numpy(zero_copy_only=False)
    mask[table["index"].to_numpy()[ok]] = True
    return mask


def scan_group(group: Group, position: int, fields: Sequence[str]) -> tuple[list[ShardRef], list[str]]:
    """Servable shards of ``group`` (tagged with its ``position`` in the dataset) and why others
    are skipped, one message per skipped shard or group."""
    missing = [f for f in fields if f not in group.fields()]
    if missing:
        return [], [f"{group.path}: no field(s) {missing} — group skipped"]
    stages = required_stages(fields)
    complete: list[int] = []
    skipped: list[str] = []
    # one listing per stage, whatever the number of shards (the consolidated manifest)
    indexes = {st: group.stage_index(st) for st in stages}
    statuses = {st: group.shard_statuses(st, index=indexes[st]) for st in stages}
    for k in group.live_shards():  # a retired shard (every sample removed) is not the group's any more
        reasons = [f"{st}: {s.reason}" for st in stages if not (s := statuses[st][k]).complete]
        if reasons:
            skipped.append(f"{group.path} shard {k}: incomplete ({'; '.join(reasons)}) — skipped")
        else:
            complete.append(k)
    ok = group.live_mask()  # removed samples (tombstones) are never served
    for st in stages if complete else ():
        stage_ok = _ok_mask(group, indexes[st], complete)
        if stage_ok is not None:
            ok &= stage_ok
    refs = []
    for k in complete:
        r = group.shard_range(k)
        idx = tuple((np.flatnonzero(ok[r.start: r.stop]) + r.start).tolist())
        if len(idx) < len(r):
            skipped.append(f"{group.path} shard {k}: {len(r) - len(idx)} sample(s) "
                           "not ok (quarantined or removed) — skipped")
        refs.append(ShardRef(position, k, idx))
    return refs, skipped


def group_fields(group: Group, fields: Sequence[str], optional: Sequence[str] = ()) -> list[str]:
    """What is read from ``group``: ``fields``, then those ``optional`` fields the group has."""
    have = set(group.fields())
    return [*fields, *(f for f in optional if f in have and f not in fields)]


def scan(groups: Sequence[Group], fields: Sequence[str], optional: Sequence[str] = ()) -> list[ShardRef]:
    """Servable shards of every group for ``fields`` plus the ``optional`` fields the group has
    (:func:`group_fields`); logs each skip as a warning."""
    required_stages([*fields, *optional])  # unknown field names fail here, before any group is skipped for them
    refs: list[ShardRef] = []
    for position, group in enumerate(groups):
        found, skipped = scan_group(group, position, group_fields(group, fields, optional))
        for message in skipped:
            log.warning(message)
        refs.extend(found)
    return refs
