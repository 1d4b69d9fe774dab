"""``depthdata lidar presets | preview | run``."""

from __future__ import annotations

import json

import cv2
import numpy as np

from depthdata.cli import main


def test_presets_lists_every_beam_model(capsys):
    assert main(["lidar", "presets"]) == 0
    out = capsys.readouterr().out
    for name in ("hdl64e", "vlp32c", "vlp16", "os1-128"):
        assert name in out
    assert "+2.00 .. -24.90" in out  # HDL-64E elevation span


def test_preview_scans_a_npy_depth_map(tmp_path, capsys):
    src, out = tmp_path / "d.npy", tmp_path / "s.npy"
    np.save(src, np.full((60, 80), 5.0, np.float32))
    assert main(["lidar", "preview", str(src), "--out", str(out), "--no-noise", "--intrinsics", "50", "50",
                 "39.5", "29.5", "--beam-model", "vlp16"]) == 0
    stats = json.loads(capsys.readouterr().out)
    sparse = np.load(out)
    assert sparse.shape == (60, 80) and stats["returns"] == np.count_nonzero(sparse) > 0
    assert stats["beam_model"] == "vlp16" and not stats["intrinsics_sampled"]
    # the default rig puts the sensor 0.27 m behind the camera: depth is still camera z = 5 m
    np.testing.assert_allclose(sparse[sparse > 0], 5.0, atol=1e-4)


def test_preview_reads_16bit_millimetre_pngs(tmp_path, capsys):
    src, out = tmp_path / "d.png", tmp_path / "s.npy"
    raw = np.full((60, 80), 2500, np.uint16)  # 2.5 m
    raw[:, :10] = 0  # holes
    cv2.imwrite(str(src), raw)
    assert main(["lidar", "preview", str(src), "--out", str(out), "--no-noise", "--beam-model", "os1-128"]) == 0
    capsys.readouterr()
    sparse = np.load(out)
    assert np.count_nonzero(sparse) > 0
    np.testing.assert_allclose(sparse[sparse > 0], 2.5, atol=1e-4)


def test_preview_png_errors_name_the_file_and_an_empty_map_has_no_returns(tmp_path, capsys):
    eight = tmp_path / "eight.png"
    cv2.imwrite(str(eight), np.full((20, 30), 200, np.uint8))
    assert main(["lidar", "preview", str(eight), "--out", str(tmp_path / "o.npy")]) == 2
    assert f"{eight}: wrong bit depth: expected depth PNG (16-bit), got 8-bit" in capsys.readouterr().err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    assert main(["lidar", "preview", str(junk), "--out", str(tmp_path / "o.npy")]) == 2
    assert f"{junk}: cannot decode image" in capsys.readouterr().err
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((20, 30), np.uint16))
    assert main(["lidar", "preview", str(empty), "--out", str(tmp_path / "o.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == 0


def test_preview_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.npy"
    assert main(["lidar", "preview", str(missing), "--out", str(tmp_path / "o.npy")]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    bad = tmp_path / "rgb.npy"
    np.save(bad, np.zeros((4, 4, 3), np.uint8))
    assert main(["lidar", "preview", str(bad), "--out", str(tmp_path / "o.npy")]) == 2
    assert "expected an H×W float array of metres" in capsys.readouterr().err
    assert main(["lidar", "preview", str(bad), "--out", "o.npy", "--beam-model", "hdl65"]) == 2
    assert "unknown beam_model 'hdl65'" in capsys.readouterr().err


def test_run_writes_sparse_for_every_group_of_a_store(tmp_path, capsys):
    from depthdata.store import Store

    url = str(tmp_path / "s.zarr")
    store = Store.create(url)
    group = store.create_group("d", "train", ["d/train/0", "d/train/1"], ["file:///0", "file:///1"], 40, 50, 1)
    group.ensure_fields(["rgb", "depth"])
    for k, z in enumerate((3.0, 4.0)):
        group.write_shard(k, "ingest", {"rgb": np.zeros((1, 40, 50, 3), np.uint8),
                                        "depth": np.full((1, 40, 50), z, np.float32)},
                          [{"status": "ok", "reason": "", "fx": 30.0, "fy": 30.0, "cx": 24.5, "cy": 19.5}])
    assert main(["lidar", "run", url, "--threads", "1"]) == 0
    assert "2 samples written, 0 shard(s) already done, 0 quarantined" in capsys.readouterr().out
    sparse = Store.open(url).group("d/train").array("sparse")[:]
    for z, img in zip((3.0, 4.0), sparse):
        assert np.count_nonzero(img) > 0
        np.testing.assert_allclose(img[img > 0], z, atol=0.2)  # default noise: HDL-64E σ = 2 cm
    assert main(["lidar", "run", url]) == 0
    assert "0 samples written, 2 shard(s) already done" in capsys.readouterr().out
