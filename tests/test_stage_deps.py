"""Stage dependencies: a shard made from upstream parts that changed since is redone, and the
quarantine status of its samples follows the newest run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthdata.catalog import load_catalog
from depthdata.ingest import stage as ingest
from depthdata.lidar.stage import stage as lidar
from depthdata.pipeline import open_store, run_local
from depthdata.teacher.stage import stage as teacher
from depthdata.teacher.tiny import save_tiny_teacher
from flows.build import _shards_to_run
from flows.summary import StageSummary

N, S = 4, 2


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "pics").mkdir()
    for i in range(N):  # textured: the tiny teacher's output is not flat
        cv2.imwrite(str(tmp_path / "pics" / f"img{i}.png"), rng.integers(0, 255, (24, 32, 3), np.uint8))
    for seed in (0, 1):
        save_tiny_teacher(tmp_path / f"teacher{seed}", seed=seed)
    cat = tmp_path / "catalog.yaml"
    cat.write_text(textwrap.dedent(f"""
        store: {{url: store.zarr, shard_size: {S}}}
        teacher: {{model: teacher0, device: cpu, tta: false}}
        lidar: {{beam_model: vlp16}}
        datasets:
          pics: {{kind: images, root: pics, resolution: [24, 32]}}
    """))
    catalog = load_catalog(cat)
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "pics")
    run_local(ingest, [group], ingest.settings(catalog, "pics"), progress=False, commit=False)
    return tmp_path, cat, group


def _catalog(cat: Path, model: str):
    cat.write_text(cat.read_text().replace("teacher0", model).replace("teacher1", model))
    return load_catalog(cat)


def _run(stage, catalog, group) -> list[bool]:
    """Run ``stage`` over every shard; which shards were (re)written."""
    stage.prepare_group(group)
    settings = stage.settings(catalog, "pics")
    return [not stage.run_shard(group, k, settings).skipped for k in range(group.num_shards)]


def _planned(stage, catalog, group) -> list[int]:
    """The shards a Prefect build would submit tasks for (planning from the manifest)."""
    jobs, _ = _shards_to_run(stage, group, stage.part_config(stage.settings(catalog, "pics")), "pics",
                             StageSummary(stage.name))
    return [k for _, _, k in jobs]


def test_relabelling_a_shard_with_other_weights_redoes_lidar_for_exactly_that_shard(setup):
    tmp, cat, group = setup
    catalog = _catalog(cat, "teacher0")
    assert _run(teacher, catalog, group) == [True, True]
    assert _run(lidar, catalog, group) == [True, True]
    before = group.array("sparse")[:]
    assert _planned(lidar, catalog, group) == [] and _run(lidar, catalog, group) == [False, False]
    # shard 0 relabelled by other weights; shard 1 keeps the old labels
    other = _catalog(cat, "teacher1")
    teacher.run_shard(group, 0, teacher.settings(other, "pics"))
    assert _planned(lidar, other, group) == [0]
    assert _run(lidar, other, group) == [True, False]
    after = group.array("sparse")[:]
    # the pseudo-metric depth of shard 0 comes from the new labels: its LiDAR changed, shard 1's did not
    assert not np.array_equal(before[:S], after[:S]) and np.array_equal(before[S:], after[S:])
    status = group.shard_status(0, "lidar", lidar.part_config(lidar.settings(other, "pics")),
                                lidar.upstream(group, 0))
    assert status.complete
    # relabelling the same shard again with the same weights writes the same bytes: nothing to redo
    teacher.run_shard(group, 0, teacher.settings(other, "pics"), force=True)
    assert _planned(lidar, other, group) == []


def test_lidar_run_before_the_teacher_is_redone_once_the_teacher_completes(setup):
    tmp, cat, group = setup
    catalog = _catalog(cat, "teacher0")
    # no ground truth and no teacher labels yet: every sample is quarantined, for that reason
    assert _run(lidar, catalog, group) == [True, True]
    rows = group.manifest("lidar").to_pylist()
    assert {r["status"] for r in rows} == {"quarantined"}
    assert all("no complete teacher shard" in r["reason"] for r in rows)
    assert _run(teacher, catalog, group) == [True, True]
    assert _planned(lidar, catalog, group) == [0, 1]
    assert _run(lidar, catalog, group) == [True, True]
    rows = group.manifest("lidar").to_pylist()
    assert not any(r["status"] == "quarantined" for r in rows)
    assert {r["depth_source"] for r in rows} == {"teacher"}
