"""The LiDAR stage: one shard of one group → the ``sparse`` field + manifest rows (the columns
are :attr:`LidarStage.columns`).

Per sample it meshes ground-truth ``depth`` (metres) or, for samples without any valid ground
truth (unlabeled images), the teacher's disparity turned into pseudo-metric depth by
:func:`depthdata.teacher.pseudo_metric` (seeded per sample). Intrinsics come from the ingest
manifest's ``fx, fy, cx, cy`` (pixels of the stored image; NaN = unknown → sampled).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np


from depthdata.errors import DepthdataError
from depthdata.lidar.beams import beam_model_for
from depthdata.lidar.config import LidarConfig
from depthdata.lidar.synth import SynthStats, sample_seed, synthesize
from depthdata.sample import Intrinsics, valid_depth
from depthdata.stage import Quarantined, ShardResult, Stage
from depthdata.store import Group
from depthdata.store.manifest import Column
from depthdata.teacher.pseudo import disparity01_to_depth, pseudo_metric_range

log = logging.getLogger(__name__)

FIELD = "sparse"


def _synth_columns() -> tuple[Column, ...]:
    """The :class:`SynthStats` columns, typed and documented from the dataclass itself."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(SynthStats)
    arrow = {int: "int64", float: "double", str: "string", bool: "bool"}
    return tuple(Column(f.name, arrow[hints[f.name]], f.metadata.get("doc", ""))
                 for f in dataclasses.fields(SynthStats) if f.name != "reason")


class LidarStage(Stage):
    name = "lidar"
    doc = "synthetic LiDAR → sparse"
    settings_key = "lidar"
    requires = ("ingest",)
    #: the teacher's labels when complete (pseudo-metric depth for samples without ground truth)
    consumes = ("ingest", "teacher")
    columns = (
        Column("status", "string", "`ok`: returns written; `empty`: no usable depth or no beam hit (`reason` "
               "says which; the slot is all zeros); `skipped`: the ingest row is not `ok`; `quarantined`: the "
               "sample could not be processed"),
        Column("reason", "string", "why there are no returns, or why the sample was skipped or quarantined"),
        Column("depth_source", "string", "what was meshed: `gt` (ground truth), `teacher` (pseudo-metric depth "
               "from the teacher's disparity) or empty"),
        Column("pseudo_near_m", "double", "near end of the drawn pseudo-metric range, metres (NaN for GT)"),
        Column("pseudo_far_m", "double", "far end of the drawn pseudo-metric range, metres (NaN for GT)"),
        *_synth_columns(),
    )

    def part_config(self, settings: LidarConfig) -> dict[str, Any]:
        return settings.model_dump(mode="json")

    def run_shard(self, group: Group, shard: int, settings: LidarConfig, *, threads: int = 0,
                  force: bool = False) -> ShardResult:
        """Synthesise sparse LiDAR for one shard of ``group``.

        Skips a shard already complete with the same settings unless ``force``. ``threads``:
        Open3D threads per sample (0 = Open3D's choice; 1 when workers run in parallel)."""
        return _run_shard(group, shard, settings, force, threads)


stage = LidarStage()



def _intrinsics(row: dict[str, Any]) -> Intrinsics | None:
    vals = [row.get(k) for k in ("fx", "fy", "cx", "cy")]
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    return Intrinsics(*(float(v) for v in vals))


def _blank_row(config: LidarConfig, seed: int, status: str, reason: str) -> dict[str, Any]:
    """A row with every column typed, for samples that get no synthesis."""
    nan = math.nan
    stats = SynthStats(returns=0, coverage=0.0, mean_range_m=nan, rays=0, hits=0, dropped=0, triangles=0,
                       reason=reason, seed=seed, beam_model=beam_model_for(config).name, mesher=config.mesher,
                       fx=nan, fy=nan, cx=nan, cy=nan, intrinsics_sampled=False, azimuth_phase_deg=nan,
                       seconds=0.0)
    return {**stats.row(), "status": status, "depth_source": "", "pseudo_near_m": nan, "pseudo_far_m": nan}


def _run_shard(group: Group, shard: int, config: LidarConfig, force: bool, threads: int) -> ShardResult:
    t0 = time.perf_counter()
    settings = stage.part_config(config)
    upstream = stage.upstream(group, shard)
    if not force and group.is_complete(shard, stage.name, settings, upstream):
        return ShardResult(group.path, stage.name, shard, skipped=True, seconds=time.perf_counter() - t0)
    stage.check_prepared(group)
    ingest = group.shard_rows(shard, "ingest", needed_by="the LiDAR stage")
    idx = group.shard_range(shard)
    plan = group.plan_rows(shard)
    n, h, w = len(idx), group.height, group.width
    fields = group.fields()
    wanted = [f for f in ("depth", "teacher") if f in fields]
    data = group.read_shard(shard, wanted) if wanted else {}
    teacher_done = "teacher" in data and group.is_complete(shard, "teacher")
    sparse = np.zeros((n, h, w), np.float32)
    rows: list[dict[str, Any]] = []
    quarantined: list[Quarantined] = []
    for j, (prow, irow) in enumerate(zip(plan, ingest)):
        sid = prow["sample_id"]
        seed = sample_seed(config.seed, sid)
        if irow.get("status", "ok") != "ok":
            reason = f"ingest status {irow.get('status')!r}: {irow.get('reason', '')}"
            log.info("%s: skipped: %s", sid, reason)
            rows.append(_blank_row(config, seed, "skipped", reason))
            continue
        try:
            depth, source, pseudo = _depth_for(config, sid, data, j, teacher_done)
            sparse[j], stats = synthesize(depth, _intrinsics(irow), config, seed, threads)
        except DepthdataError as exc:
            reason = str(exc)
            log.warning("%s: quarantined: %s", sid, reason)
            quarantined.append(Quarantined(sid, prow["source_uri"], reason))
            rows.append(_blank_row(config, seed, "quarantined", reason))
            continue
        status = "ok" if stats.returns else "empty"
        if status == "empty":
            log.info("%s: no returns: %s", sid, stats.reason)
        rows.append({**stats.row(), "status": status, "depth_source": source,
                     "pseudo_near_m": pseudo[0], "pseudo_far_m": pseudo[1]})
    group.write_shard(shard, stage.name, {FIELD: sparse}, rows, config=settings, upstream=upstream)
    written = sum(r["status"] in ("ok", "empty") for r in rows)
    return ShardResult(group.path, stage.name, shard, written=written, quarantined=quarantined,
                       seconds=time.perf_counter() - t0)


def _depth_for(config: LidarConfig, sample_id: str, data: dict[str, np.ndarray], j: int,
               teacher_done: bool) -> tuple[np.ndarray, str, tuple[float, float]]:
    """The metric depth to mesh, which source it came from, and the pseudo-metric range used
    (NaN, NaN for ground truth)."""
    gt = data["depth"][j] if "depth" in data else None
    if config.depth_source == "gt" or (config.depth_source == "auto" and gt is not None and valid_depth(gt).any()):
        if gt is None:
            raise DepthdataError(f"sample {sample_id!r}: lidar.depth_source is 'gt' but the group has no depth field")
        return gt, "gt", (math.nan, math.nan)
    if not teacher_done:
        raise DepthdataError(f"sample {sample_id!r}: no ground-truth depth and no complete teacher shard to derive "
                             "pseudo-metric depth from (run the teacher stage first, or set lidar.depth_source: gt)")
    # near/far metres drawn per sample from its own seed, recorded as lineage
    drawn = pseudo_metric_range(sample_seed(config.seed, sample_id, "pseudo_metric"))
    disparity = data["teacher"][j].astype(np.float32)
    return disparity01_to_depth(disparity, drawn.near_m, drawn.far_m), "teacher", (drawn.near_m, drawn.far_m)
