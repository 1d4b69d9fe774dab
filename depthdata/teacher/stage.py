"""The teacher stage: one shard of one group → ``teacher`` + ``teacher_conf`` + manifest rows.

Per sample the manifest part holds (besides the store's own index/id/checksums):

* ``status`` (``ok`` / ``skipped`` / ``quarantined``) and ``reason``;
* lineage: ``teacher_id``, ``teacher_revision``, ``weights_sha256``, ``teacher_random_init``;
* ``raw_min``/``raw_max``: the model's disparity range before normalisation (model units);
* ``conf_method`` (``none (tta: false)`` when ``teacher_conf`` is NaN by choice) and ``conf_mean``;
* alignment to ground-truth depth where the group has it (NaN / 0 otherwise):
  ``align_scale``/``align_shift`` (metres⁻¹, of the *stored* float16 disparity),
  ``align_cap_m``, ``align_absrel``, ``align_delta1``, ``align_pixels``, ``align_inliers``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from depthdata.errors import StoreError
from depthdata.stage import Quarantined, ShardResult
from depthdata.store import STAGES, Group
from depthdata.store import manifest as mf
from depthdata.teacher.align import align_disparity_to_depth
from depthdata.teacher.config import TeacherConfig
from depthdata.teacher.model import Teacher, load_teacher
from depthdata.teacher.predict import normalise01, predict_confidence, predict_raw, tta_size

log = logging.getLogger(__name__)

STAGE = "teacher"
FIELDS = STAGES[STAGE]


def prepare_group(group: Group) -> None:
    """Create the teacher's arrays in ``group``; call once before shard tasks run in parallel."""
    group.ensure_fields(FIELDS)


def stage_settings(config: TeacherConfig, teacher: Teacher) -> dict[str, Any]:
    """What is hashed into each manifest part: output-changing settings and the weights' lineage."""
    return {**config.output_settings(), **teacher.lineage()}



def _source_uris(group: Group, idx: range) -> list[str]:
    table, _ = mf.read_table(group.store.fs, f"{group.store.fs_root}/{mf.plan_path(group.path)}")
    return table.column("source_uri").to_pylist()[idx.start: idx.stop]


def _empty_row(teacher: Teacher, conf_method: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "status": status, "reason": reason, **teacher.lineage(),
        "raw_min": math.nan, "raw_max": math.nan, "conf_method": conf_method, "conf_mean": math.nan,
        "align_scale": math.nan, "align_shift": math.nan, "align_cap_m": math.nan,
        "align_absrel": math.nan, "align_delta1": math.nan, "align_pixels": 0, "align_inliers": 0,
    }


def _align_into(row: dict[str, Any], disparity: np.ndarray, depth: np.ndarray, sample_id: str) -> None:
    try:
        a = align_disparity_to_depth(disparity, depth)
    except ValueError as exc:
        # too few valid ground-truth pixels is a property of the sample, not a failure of it
        log.debug("%s: no alignment: %s", sample_id, exc)
        return
    row.update(align_scale=a.fit.scale, align_shift=a.fit.shift, align_cap_m=a.cap_m, align_absrel=a.absrel,
               align_delta1=a.delta1, align_pixels=a.fit.n, align_inliers=a.fit.inliers)


def run_shard(group: Group, shard: int, config: TeacherConfig, teacher: Teacher | None = None,
              force: bool = False) -> ShardResult:
    """Pseudo-label one shard (see the module doc for what is written).

    ``teacher`` is a loaded :class:`Teacher` (so a worker loads weights once); without one the
    config's teacher is loaded. A shard already complete with the same settings and weights is
    skipped unless ``force``. Samples whose ingest row is not ``ok`` are skipped (NaN fields).
    """
    t0 = time.perf_counter()
    teacher = teacher or load_teacher(config)
    settings = stage_settings(config, teacher)
    if not force and group.is_complete(shard, STAGE, settings):
        return ShardResult(group.path, STAGE, shard, skipped=True, seconds=time.perf_counter() - t0)
    missing = [f for f in FIELDS if f not in group.fields()]
    if missing:
        raise StoreError(f"{group.store.url}: group {group.path} has no {missing} arrays yet; call "
                         "depthdata.teacher.stage.prepare_group(group) once before running shards")
    ingest = group.shard_rows(shard, "ingest", needed_by="the teacher")
    idx = group.shard_range(shard)
    ids = group.sample_ids[idx.start: idx.stop]
    conf_method = (f"tta: flip + scale {config.tta_scale:g} (input {tta_size(teacher, config.tta_scale)} px), "
                   f"tolerance {config.conf_tolerance:g}") if config.tta else "none (tta: false)"

    rows = [_empty_row(teacher, conf_method, "ok", "") for _ in idx]
    ok = []
    for j, r in enumerate(ingest):
        if r.get("status", "ok") == "ok":
            ok.append(j)
        else:
            rows[j].update(status="skipped", reason=f"ingest status {r.get('status')!r}: {r.get('reason', '')}")

    n, h, w = len(idx), group.height, group.width
    disparity = np.full((n, h, w), np.nan, np.float16)
    conf = np.full((n, h, w), np.nan, np.float16)
    quarantined: list[Quarantined] = []
    if ok:
        fields = ["rgb"] + (["depth"] if "depth" in group.fields() else [])
        data = group.read_shard(shard, fields)
        images = data["rgb"][ok]
        norm = normalise01(predict_raw(teacher, images, config.batch_size))
        # every later use (alignment, LiDAR, students) sees the float16 values the store keeps
        stored = norm.disparity01.astype(np.float16)
        if config.tta:
            conf[ok] = predict_confidence(teacher, images, stored.astype(np.float32), config.batch_size,
                                          config.tta_scale, config.conf_tolerance)
        uris = None
        for k, j in enumerate(ok):
            row = rows[j]
            row.update(raw_min=float(norm.raw_min[k]), raw_max=float(norm.raw_max[k]))
            if not np.isfinite(stored[k]).all():
                why = "teacher output is non-finite" if not np.isfinite(norm.raw_min[k]) else \
                    "teacher output is constant (no relative depth to normalise)"
                row.update(status="quarantined", reason=why)
                uris = uris or _source_uris(group, idx)
                quarantined.append(Quarantined(ids[j], uris[j], why))
                log.warning("%s: quarantined: %s", ids[j], why)
                continue
            disparity[j] = stored[k]
            if config.tta:
                row["conf_mean"] = float(np.mean(conf[j], dtype=np.float64))
            if "depth" in data:
                _align_into(row, stored[k].astype(np.float32), data["depth"][j], ids[j])

    group.write_shard(shard, STAGE, {"teacher": disparity, "teacher_conf": conf}, rows, config=settings)
    written = sum(r["status"] == "ok" for r in rows)
    return ShardResult(group.path, STAGE, shard, written=written, quarantined=quarantined,
                       seconds=time.perf_counter() - t0)
