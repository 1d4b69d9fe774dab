"""The main job, as a user runs it: ``depthdata demo`` in a fresh process, then its outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from depthdata.store import Store
from depthdata.store.verify import verify_store
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID


@pytest.mark.slow
def test_demo_builds_every_dataset_and_exports_a_student(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.run(
        [sys.executable, "-m", "depthdata", "demo", "--out", str(out), "--student-steps", "4", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo complete" in proc.stdout
    # no Depth Anything V2 weights here: the demo teacher labels, and the banner says what it is
    assert "DEMO TEACHER" in proc.stderr and "NOT Depth Anything V2" in proc.stderr

    store_url = str(out / "demo.zarr")
    assert verify_store(store_url).ok
    store = Store.open(store_url)
    expected = {"nyu/train", "nyu/test", "nyu_densedepth/train", "nyu_densedepth/test", "synthia/train",
                "diw/train", "diw/test", "photos/train"}
    assert expected <= set(store.group_paths())
    for path in expected:
        g = store.group(path)
        for stage in ("ingest", "teacher", "lidar"):
            assert g.complete_shards(stage) == list(range(g.num_shards)), (path, stage)
        ingest = g.manifest("ingest").to_pandas()
        assert (ingest["status"] == "ok").all(), ingest[ingest["status"] != "ok"][["sample_id", "reason"]]
        assert {"rgb", "teacher", "teacher_conf", "sparse"} <= set(g.fields())
        rows = g.manifest("teacher").to_pandas()
        assert (rows["teacher_id"] == DEMO_TEACHER_ID).all() and not rows["teacher_random_init"].any()
    # labelled groups: the synthetic LiDAR returns lie on the ground-truth surface
    nyu = store.group("nyu/train")
    shard = nyu.read_shard(0, ["depth", "sparse"])
    hit = shard["sparse"] > 0
    assert 0.005 < hit.mean() < 0.5
    rel = np.abs(shard["sparse"][hit] - shard["depth"][hit]) / shard["depth"][hit]
    assert np.nanmedian(rel) < 0.05

    assert (out / "report" / "report.html").stat().st_size > 10_000
    report = json.loads((out / "student" / "report.json").read_text())
    session = ort.InferenceSession(report["paths"]["onnx_int8"], providers=["CPUExecutionProvider"])
    h, w = report["export_size"]
    rgb = nyu.read(0, ["rgb"])["rgb"].transpose(2, 0, 1)[None].astype(np.float32)  # 0–255, no normalisation
    [depth01] = session.run(None, {session.get_inputs()[0].name: rgb})
    assert depth01.shape == (1, 1, h, w)
    assert np.isfinite(depth01).all() and depth01.min() >= 0 and depth01.max() <= 1
