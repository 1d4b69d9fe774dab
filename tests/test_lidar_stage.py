"""The LiDAR stage writing ``sparse`` shards into a temporary store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthdata.errors import StoreError
from depthdata.lidar.config import LidarConfig
from depthdata.lidar.stage import stage as lidar_stage
from depthdata.lidar.synth import sample_seed, synthesize
from depthdata.sample import Intrinsics
from depthdata.store import Store
from depthdata.teacher.pseudo import disparity01_to_depth, pseudo_metric_range

H, W = 48, 64
K = Intrinsics(fx=40.0, fy=40.0, cx=31.5, cy=23.5)
CFG = LidarConfig(beam_model="os1-128", range_noise_scale=0.0, sensor_offset_m=(0.0, 0.0, 0.0))

# per sample: (ground-truth depth, ingest status, known intrinsics)
PLANE = np.full((H, W), 3.0, np.float32)
NO_DEPTH = np.full((H, W), np.nan, np.float32)
SAMPLES = [
    (PLANE, "ok", K),                  # 0: GT, known camera
    (NO_DEPTH, "ok", None),            # 1: unlabeled → teacher pseudo-metric depth
    (PLANE, "quarantined", K),         # 2: ingest failed → skipped
    (PLANE * 2, "ok", None),           # 3: GT, camera sampled
    (NO_DEPTH, "ok", K),               # 4: unlabeled
]


def make_group(tmp_path, shard_size: int, name: str = "s.zarr", teacher: bool = True):
    store = Store.create(str(tmp_path / name))
    n = len(SAMPLES)
    group = store.create_group("demo", "train", [f"demo/train/{i}" for i in range(n)],
                               [f"file:///src/{i}.png" for i in range(n)], H, W, shard_size)
    group.ensure_fields(["depth", "rgb"] + (["teacher", "teacher_conf"] if teacher else []))
    # teacher disparity: a left-to-right ramp in [0, 1] (larger = nearer)
    disparity = np.broadcast_to(np.linspace(0.2, 0.8, W, dtype=np.float32), (H, W))
    for shard in range(group.num_shards):
        idx = group.shard_range(shard)
        rows = []
        for i in idx:
            _, status, k = SAMPLES[i]
            cam = k.to_list() if k else [math.nan] * 4
            rows.append({"status": status, "reason": "" if status == "ok" else "unreadable PNG",
                         **dict(zip(("fx", "fy", "cx", "cy"), cam))})
        depth = np.stack([SAMPLES[i][0] for i in idx])
        group.write_shard(shard, "ingest", {"rgb": np.zeros((len(idx), H, W, 3), np.uint8), "depth": depth}, rows)
        if teacher:
            t = np.broadcast_to(disparity, (len(idx), H, W)).astype(np.float16)
            group.write_shard(shard, "teacher", {"teacher": t, "teacher_conf": np.ones_like(t)},
                              [{"status": "ok"} for _ in idx])
    lidar_stage.prepare_group(group)
    return group


def run_all(group, config=CFG):
    return [lidar_stage.run_shard(group, k, config, threads=1) for k in range(group.num_shards)]


def test_stage_writes_sparse_rows_and_reports(tmp_path):
    group = make_group(tmp_path, shard_size=2)
    results = run_all(group)
    assert sum(r.written for r in results) == 4 and not any(r.quarantined for r in results)
    rows = {r["index"]: r for r in group.manifest("lidar").to_pylist()}
    sparse = group.array("sparse")[:]

    # 0: ground truth with the known camera: every return at the plane's 3 m
    assert rows[0]["status"] == "ok" and rows[0]["depth_source"] == "gt"
    assert not rows[0]["intrinsics_sampled"] and rows[0]["fx"] == 40.0
    z = sparse[0][sparse[0] > 0]
    assert rows[0]["returns"] == len(z) > 100
    np.testing.assert_allclose(z, 3.0, atol=1e-4)
    assert rows[0]["coverage"] == pytest.approx(len(z) / (H * W))

    # 1: no ground truth: teacher disparity turned into metres with the sample's own draw
    assert rows[1]["status"] == "ok" and rows[1]["depth_source"] == "teacher"
    drawn = pseudo_metric_range(sample_seed(CFG.seed, "demo/train/1", "pseudo_metric"))
    assert (rows[1]["pseudo_near_m"], rows[1]["pseudo_far_m"]) == (drawn.near_m, drawn.far_m)
    assert rows[1]["intrinsics_sampled"]

    # 2: ingest quarantined it: skipped, slot left empty, reason carried over
    assert rows[2]["status"] == "skipped" and "unreadable PNG" in rows[2]["reason"]
    assert not sparse[2].any()

    # 3: ground truth at 6 m with a sampled camera
    assert rows[3]["intrinsics_sampled"] and rows[3]["depth_source"] == "gt"
    np.testing.assert_allclose(sparse[3][sparse[3] > 0], 6.0, atol=1e-4)

    # the stored scan is the pure function's output for the sample's seed
    teacher_depth = disparity01_to_depth(np.broadcast_to(np.linspace(0.2, 0.8, W, dtype=np.float32), (H, W))
                                         .astype(np.float16).astype(np.float32), drawn.near_m, drawn.far_m)
    expected, _ = synthesize(teacher_depth, None, CFG, sample_seed(CFG.seed, "demo/train/1"))
    np.testing.assert_array_equal(sparse[1], expected)
    assert rows[1]["seed"] == sample_seed(CFG.seed, "demo/train/1")
    assert rows[1]["beam_model"] == "os1-128" and rows[1]["mesher"] == "grid"


def test_results_do_not_depend_on_the_shard_layout(tmp_path):
    a = make_group(tmp_path, shard_size=2, name="a.zarr")
    b = make_group(tmp_path, shard_size=5, name="b.zarr")
    noisy = CFG.model_copy(update={"range_noise_scale": 1.0, "dropout_random": 0.2})
    run_all(a, noisy)
    run_all(b, noisy)
    np.testing.assert_array_equal(a.array("sparse")[:], b.array("sparse")[:])


def test_rerun_skips_done_shards_and_redoes_them_with_new_settings(tmp_path):
    group = make_group(tmp_path, shard_size=5)
    run_all(group)
    assert lidar_stage.run_shard(group, 0, CFG).skipped
    other = CFG.model_copy(update={"beam_model": "vlp16"})
    again = lidar_stage.run_shard(group, 0, other, threads=1)
    assert not again.skipped
    assert set(group.manifest("lidar").column("beam_model").to_pylist()) == {"vlp16"}


def test_without_ground_truth_or_teacher_the_sample_is_quarantined(tmp_path):
    group = make_group(tmp_path, shard_size=5, teacher=False)
    (result,) = run_all(group)
    assert [q.sample_id for q in result.quarantined] == ["demo/train/1", "demo/train/4"]
    assert result.quarantined[0].source_uri == "file:///src/1.png"
    assert "run the teacher stage first" in result.quarantined[0].reason
    assert result.written == 2  # 0 and 3; 2 was skipped
    rows = group.manifest("lidar").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "quarantined", "skipped", "ok", "quarantined"]


def test_all_invalid_ground_truth_with_gt_source_is_empty_not_an_error(tmp_path):
    group = make_group(tmp_path, shard_size=5)
    (result,) = run_all(group, CFG.model_copy(update={"depth_source": "gt"}))
    rows = group.manifest("lidar").to_pylist()
    assert rows[1]["status"] == "empty" and "no valid depth" in rows[1]["reason"]
    assert rows[1]["returns"] == 0 and result.written == 4


def test_stage_refuses_shards_before_ingest_or_without_the_field(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"))
    group = store.create_group("demo", "train", ["demo/train/0"], ["file:///0.png"], H, W, 1)
    group.ensure_fields(["rgb", "depth"])
    with pytest.raises(StoreError, match="lidar stage was not prepared"):
        lidar_stage.run_shard(group, 0, CFG)
    lidar_stage.prepare_group(group)
    with pytest.raises(StoreError, match="ingest is not complete"):
        lidar_stage.run_shard(group, 0, CFG)
