"""One streaming pass over a store group: per-sample rows, histograms and grid thumbnails.

Only one shard of one field set is in memory at a time; what is kept across shards is small
(one row of statistics per sample, fixed-size histograms, a few thumbnails).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from depthdata.eda import stats as st
from depthdata.store import STAGES, Group

log = logging.getLogger(__name__)

#: Manifest columns that are bookkeeping, not statistics worth carrying into stats.parquet.
_BOOKKEEPING = {"index", "sample_id", "shard", "status", "reason", "source_uri"}
#: Stage statuses that do not reject a sample: ``empty`` (LiDAR: no return) is a result, and
#: ``skipped`` only echoes an earlier stage's rejection, which that stage's row already reports.
_NOT_REJECTED = {"ok", "empty", "skipped"}
#: Longest side of a grid thumbnail, pixels.
THUMB_SIZE = 192


@dataclass
class Thumb:
    """Downscaled fields of one sample for the sample grid (arrays absent when not stored)."""

    sample_id: str
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    teacher: np.ndarray | None = None
    sparse: np.ndarray | None = None


@dataclass
class GroupScan:
    group: str
    rows: list[dict[str, Any]]
    fields: list[str]
    #: histogram counts per field (``depth``, ``sparse`` over DEPTH_BINS; ``teacher`` over TEACHER_BINS)
    hists: dict[str, np.ndarray] = field(default_factory=dict)
    thumbs: list[Thumb] = field(default_factory=list)
    #: stage → (complete shards, total shards)
    completeness: dict[str, tuple[int, int]] = field(default_factory=dict)


def _stage_rows(group: Group, stage: str) -> dict[int, dict[str, Any]]:
    """Manifest rows of ``stage`` keyed by sample index (complete shards only)."""
    table: pa.Table = group.manifest(stage)
    if "index" not in table.column_names or table.num_rows == 0:
        return {}
    return {int(r["index"]): r for r in table.to_pylist()}


def _manifest_extras(stage: str, row: dict[str, Any]) -> dict[str, Any]:
    """A later stage's numeric manifest columns (e.g. alignment AbsRel, LiDAR coverage) as
    ``<stage>.<column>``; checksums and bookkeeping are left out."""
    # integers stay integers: a seed is 63 bits, which a float64 does not hold
    return {f"{stage}.{k}": v if isinstance(v, int) else float(v) for k, v in row.items()
            if k not in _BOOKKEEPING and not k.startswith("checksum_")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _thumb_size(h: int, w: int) -> tuple[int, int]:
    scale = min(1.0, THUMB_SIZE / max(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _thumb(sample_id: str, data: dict[str, np.ndarray], j: int) -> Thumb:
    thumb = Thumb(sample_id)
    for name in ("rgb", "depth", "teacher", "sparse"):
        if name not in data:
            continue
        a = np.asarray(data[name][j])
        size = _thumb_size(a.shape[0], a.shape[1])
        if name == "rgb":
            small = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        elif name == "sparse":
            # Returns are isolated pixels that averaging or nearest-neighbour decimation would
            # erase; a max filter of the decimation factor first keeps each one visible.
            k = max(1, int(np.ceil(a.shape[1] / size[0])))
            small = cv2.resize(cv2.dilate(a.astype(np.float32), np.ones((k, k), np.uint8)), size,
                               interpolation=cv2.INTER_NEAREST)
        else:
            # nearest keeps NaN holes as holes instead of smearing them over their neighbours
            small = cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
        setattr(thumb, name, small)
    return thumb


def scan_group(group: Group, samples_per_grid: int = 8, seed: int = 0,
               on_shard: Callable[[], None] | None = None) -> GroupScan:
    """Per-sample statistics of every sample of ``group``, streaming shard by shard.

    Each row has ``group``, ``index``, ``sample_id``, ``source_uri``, ``status`` (``ok``,
    ``quarantined`` or ``not built`` when the ingest shard is incomplete), ``reason`` (``stage:
    reason`` of every stage that rejected it: a status other than ok / empty / skipped), the
    statistics of :mod:`.stats` for each stored
    field, and later stages' numeric manifest columns as ``<stage>.<column>``. Statistics of a
    field are NaN when the field's stage is not complete for that shard or the sample is not ok.
    Up to ``samples_per_grid`` ok samples, drawn by ``seed``, get grid thumbnails.
    """
    stages = [s for s in group.stages() if s in STAGES]
    manifests = {s: _stage_rows(group, s) for s in stages}
    ingest = manifests.get("ingest", {})
    ok_indices = [i for i, r in ingest.items() if r.get("status", "ok") == "ok"]
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(sorted(ok_indices), size=min(samples_per_grid, len(ok_indices)), replace=False).tolist()) \
        if ok_indices else set()
    present = set(group.fields())
    uris = group.source_uris()  # from the plan: known even for samples whose shard is not built
    scan = GroupScan(group.path, [], sorted(present))
    complete = {s: set(group.complete_shards(s)) for s in stages}
    scan.completeness = {s: (len(complete[s]), group.num_shards) for s in stages}
    hist_bins = {"depth": st.DEPTH_BINS, "sparse": st.DEPTH_BINS, "teacher": st.TEACHER_BINS}
    scan.hists = {f: np.zeros(len(b) - 1, np.int64) for f, b in hist_bins.items() if f in present}
    live = group.live_mask()  # samples a later build removed are no longer the group's
    for k in group.live_shards():
        wanted = [f for s in stages if k in complete[s] for f in STAGES[s] if f in present and f != "teacher_conf"]
        data = group.read_shard(k, wanted) if wanted else {}
        log.debug("%s shard %d: read %s", group.path, k, ", ".join(wanted) or "nothing (not built)")
        for j, i in enumerate(group.shard_range(k)):
            if not live[i]:
                continue
            row = _sample_row(group, i, uris, manifests, data, j)
            scan.rows.append(row)
            if row["status"] != "ok":
                continue
            for f, bins in hist_bins.items():
                if f in data:
                    values = data[f][j].astype(np.float64)
                    if f != "teacher":
                        values = values[values > 0]  # 0 = hole / no return
                    scan.hists[f] += st.histogram(values, bins)
            if i in chosen:
                scan.thumbs.append(_thumb(row["sample_id"], data, j))
        if on_shard is not None:
            on_shard()
    return scan


def _sample_row(group: Group, i: int, uris: list[str], manifests: dict[str, dict[int, dict[str, Any]]],
                data: dict[str, np.ndarray], j: int) -> dict[str, Any]:
    row: dict[str, Any] = {"group": group.path, "index": i, "sample_id": group.sample_ids[i], "source_uri": uris[i]}
    ingest = manifests.get("ingest", {}).get(i)
    reasons = []
    for stage, rows in manifests.items():
        r = rows.get(i)
        if r is None:
            continue
        if r.get("status", "ok") not in _NOT_REJECTED:
            reasons.append(f"{stage}: {r.get('reason') or r.get('status')}")
        if stage != "ingest":
            row.update(_manifest_extras(stage, r))
    row["status"] = "not built" if ingest is None else "quarantined" if reasons else "ok"
    row["reason"] = "; ".join(reasons)
    if ingest is not None and ingest.get("source_uri"):
        row["source_uri"] = ingest["source_uri"]
    if row["status"] != "ok":
        return row
    if "rgb" in data:
        row.update(st.image_stats(data["rgb"][j]))
    if "depth" in data:
        row.update(st.depth_stats(data["depth"][j]))
    if "teacher" in data:
        row.update(st.teacher_stats(data["teacher"][j]))
        if "depth" in data:
            row.update(st.teacher_alignment(data["teacher"][j], data["depth"][j]))
    if "sparse" in data:
        row.update(st.sparse_stats(data["sparse"][j]))
    if "pairs" in data:
        row.update(st.pairs_stats(data["pairs"][j]))
    return row
