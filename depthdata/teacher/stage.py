"""The teacher stage: one shard of one group → ``teacher`` + ``teacher_conf`` + manifest rows
(the columns are :attr:`TeacherStage.columns`).

torch and transformers load with the first shard, not with this module, so that listing the
stages (``depthdata --help``, planning a build) stays light.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from depthdata.stage import Quarantined, ShardResult, Stage
from depthdata.store import Group
from depthdata.store.manifest import Column
from depthdata.teacher.align import align_disparity_to_depth
from depthdata.teacher.config import TeacherConfig

if TYPE_CHECKING:
    from depthdata.teacher.model import Teacher

log = logging.getLogger(__name__)


class TeacherStage(Stage):
    name = "teacher"
    doc = "teacher → teacher, teacher_conf"
    settings_key = "teacher"
    requires = ("ingest",)
    consumes = ("ingest",)
    wants_gpu = True
    columns = (
        Column("status", "string", "`ok`: labelled; `skipped`: the ingest row is not `ok`; `quarantined`: the "
               "teacher's output is non-finite or constant"),
        Column("reason", "string", "why the sample was skipped or quarantined"),
        Column("teacher_id", "string", "model id (Hugging Face id or directory) of the teacher"),
        Column("teacher_revision", "string", "Hub commit of the weights, or `local`"),
        Column("weights_sha256", "string", "SHA-256 of the weights (`sha256sum` of model.safetensors)"),
        Column("teacher_random_init", "bool", "the weights were randomly initialised (demo only: labels are noise)"),
        Column("raw_min", "double", "the model's smallest disparity before normalisation (model units)"),
        Column("raw_max", "double", "the model's largest disparity before normalisation (model units)"),
        Column("conf_method", "string", "how `teacher_conf` was computed (`none (tta: false)` when it is NaN by "
               "choice)"),
        Column("conf_mean", "double", "mean of `teacher_conf` over the image, in [0, 1]"),
        Column("align_scale", "double", "least-squares scale fitting the stored disparity to 1/GT depth "
               "(metres⁻¹; NaN without ground truth)"),
        Column("align_shift", "double", "the fit's shift (metres⁻¹)"),
        Column("align_cap_m", "double", "depth cap of the aligned prediction, metres"),
        Column("align_absrel", "double", "AbsRel of the aligned teacher against GT depth"),
        Column("align_delta1", "double", "δ1 (max ratio < 1.25) of the aligned teacher against GT depth"),
        Column("align_pixels", "int64", "GT pixels the fit used"),
        Column("align_inliers", "int64", "of those, inliers of the robust fit"),
    )

    def part_config(self, settings: TeacherConfig) -> dict[str, Any]:
        """The output-changing settings and the weights' lineage, found without loading them."""
        from depthdata.teacher.checkpoint import checkpoint_lineage

        return {**settings.output_settings(), **checkpoint_lineage(settings)}

    def run_shard(self, group: Group, shard: int, settings: TeacherConfig, *, threads: int = 0,
                  force: bool = False) -> ShardResult:
        """Pseudo-label one shard (the teacher loads once per process and configuration).

        A shard already complete with the same settings and weights is skipped unless
        ``force``. Samples whose ingest row is not ``ok`` are skipped (NaN fields)."""
        return _run_shard(group, shard, settings, loaded_teacher(settings, threads), force)


stage = TeacherStage()


def loaded_teacher(config: TeacherConfig, threads: int = 0) -> Teacher:
    """The teacher of ``config``, loaded once per process (a worker labels many shards).

    ``threads`` (when the config leaves ``threads`` unset): torch threads for this process;
    a Dask worker running one task per core passes 1, or torch would take every core in every
    worker and oversubscribe the machine."""
    if config.threads is None and threads > 0:
        config = config.model_copy(update={"threads": threads})
    return _load_cached(config.model_dump_json())


@functools.lru_cache(maxsize=2)
def _load_cached(config_json: str) -> Teacher:
    from depthdata.teacher.model import load_teacher

    config = TeacherConfig.model_validate_json(config_json)
    log.info("loading the teacher once in this process (%s threads)", config.threads or "all")
    return load_teacher(config)


def stage_settings(config: TeacherConfig, teacher: Teacher) -> dict[str, Any]:
    """What is hashed into each manifest part: output-changing settings and the weights' lineage."""
    return {**config.output_settings(), **teacher.lineage()}


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


def _run_shard(group: Group, shard: int, config: TeacherConfig, teacher: Teacher, force: bool) -> ShardResult:
    from depthdata.teacher.predict import predict_confidence, predict_normalised, tta_size

    t0 = time.perf_counter()
    settings = stage_settings(config, teacher)
    upstream = stage.upstream(group, shard)
    if not force and group.is_complete(shard, stage.name, settings, upstream):
        return ShardResult(group.path, stage.name, shard, skipped=True, seconds=time.perf_counter() - t0)
    stage.check_prepared(group)
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
        # Every slot goes through the model, a skipped one as its fill (black): a sample's batch
        # is then fixed by its position in the shard, so its values do not depend on whether a
        # neighbour was quarantined (batch composition would change the last float16 bit).
        images = data["rgb"]
        full = predict_normalised(teacher, images, config.batch_size, config.flip_average, keep_mirrored=config.tta)
        norm = full.take(ok)
        # every later use (alignment, LiDAR, students) sees the float16 values the store keeps
        stored = norm.disparity01.astype(np.float16)
        if config.tta:
            base = np.full((n, h, w), np.nan, np.float32)
            base[ok] = stored.astype(np.float32)
            conf[:] = predict_confidence(teacher, images, base, config.batch_size, config.tta_scale,
                                         config.conf_tolerance, flipped=full.mirrored)
        uris = None
        for k, j in enumerate(ok):
            row = rows[j]
            row.update(raw_min=float(norm.raw_min[k]), raw_max=float(norm.raw_max[k]))
            if not np.isfinite(stored[k]).all():
                why = "teacher output is non-finite" if not np.isfinite(norm.raw_min[k]) else \
                    "teacher output is constant (no relative depth to normalise)"
                row.update(status="quarantined", reason=why)
                uris = uris or group.source_uris(shard)
                quarantined.append(Quarantined(ids[j], uris[j], why))
                log.warning("%s: quarantined: %s", ids[j], why)
                continue
            disparity[j] = stored[k]
            if config.tta:
                row["conf_mean"] = float(np.mean(conf[j], dtype=np.float64))
            if "depth" in data:
                _align_into(row, stored[k].astype(np.float32), data["depth"][j], ids[j])

    group.write_shard(shard, stage.name, {"teacher": disparity, "teacher_conf": conf}, rows, config=settings,
                      upstream=upstream)
    written = sum(r["status"] == "ok" for r in rows)
    return ShardResult(group.path, stage.name, shard, written=written, quarantined=quarantined,
                       seconds=time.perf_counter() - t0)
