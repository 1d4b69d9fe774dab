"""NYU Depth V2 reader: every layout round-trips; bad files raise errors naming the file."""

import os
import pickle
import zipfile

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from depthdata.catalog import DatasetConfig
from depthdata.demo.formats import write_densedepth, write_nyu_labeled, write_nyu_splits
from depthdata.errors import SourceError
from depthdata.sample import Intrinsics
from depthdata.sources import SourceItem, get_source_class

H, W = 12, 16


def make(root, **options):
    return get_source_class("nyuv2")("nyu", DatasetConfig(kind="nyuv2", root=str(root), options=options), str(root))


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    # smooth colour ramps (JPEG keeps them within a few levels), different per frame and channel
    k, y, x, c = np.meshgrid(np.arange(n), np.arange(H), np.arange(W), np.arange(3), indexing="ij")
    rgb = np.clip(8 * x + 6 * y + 30 * c + 5 * k + seed, 0, 255).astype(np.uint8)
    depth = rng.uniform(0.5, 9.5, (n, H, W)).astype(np.float32)
    return rgb, depth


@pytest.fixture
def labeled(tmp_path):
    rgb, depth = frames(3)
    write_nyu_labeled(str(tmp_path / "nyu_depth_v2_labeled.mat"), rgb, depth,
                      ["kitchen_0001", "office_0002", "living_room_0003b"], ["kitchen", "office", "living_room"])
    write_nyu_splits(str(tmp_path / "splits.mat"), [1, 3], [2])
    return tmp_path, rgb, depth


def test_labeled_mat_layout_on_disk_is_matlab_v73(labeled):
    root, rgb, _ = labeled
    path = root / "nyu_depth_v2_labeled.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (3, 3, W, H)  # N, C, W, H
        assert f["depths"].shape == (3, W, H)
        assert f.userblock_size == 512
        assert f["images"][1, 2, 5, 7] == rgb[1, 7, 5, 2]
    m = scipy.io.loadmat(root / "splits.mat")
    assert m["trainNdxs"].ravel().tolist() == [1, 3] and m["testNdxs"].ravel().tolist() == [2]


def test_labeled_mat_round_trip_with_official_splits(labeled, caplog):
    root, rgb, depth = labeled
    src = make(root)
    with caplog.at_level("INFO"):
        assert src.splits() == ["train", "test"]
    assert "labeled_mat" in caplog.text  # auto-detection says what it chose
    train = src.items("train")
    assert [it.key for it in train] == ["00000", "00002"]  # 1-based 1, 3 → 0-based 0, 2
    s = src.load("train", train[1])
    assert s.sample_id == "nyu/train/00002"
    np.testing.assert_array_equal(s.rgb, rgb[2])
    np.testing.assert_array_equal(s.depth, depth[2])
    assert s.meta["scene"] == "living_room_0003b" and s.meta["scene_type"] == "living_room"
    assert s.meta["mat_index"] == 3
    # Kinect intrinsics, 0-based, scaled from 640×480 to 16×12: (cx + 0.5)·(16/640) − 0.5
    assert s.intrinsics.fx == pytest.approx(518.8579 / 40)
    assert s.intrinsics.cx == pytest.approx((324.5824 + 0.5) / 40 - 0.5)
    t = src.load("test", src.items("test")[0])
    assert t.meta["scene"] == "office_0002"


def test_source_with_an_open_file_travels_to_workers(labeled):
    """Items and sources are pickled to Dask workers; open HDF5 handles stay behind."""
    root, rgb, _ = labeled
    src = make(root)
    items = src.items("train")
    src.load("train", items[0])  # opens the .mat
    clone = pickle.loads(pickle.dumps(src))
    item = pickle.loads(pickle.dumps(items[1]))
    np.testing.assert_array_equal(clone.load("train", item).rgb, rgb[2])


def test_labeled_mat_axis_order_is_n_c_w_h(tmp_path):
    """Written with raw h5py in MATLAB's order, independent of the project's writer."""
    images = np.zeros((1, 3, W, H), np.uint8)
    images[0, 0, 5, 2] = 200  # channel R at x = 5, y = 2
    depths = np.ones((1, W, H), np.float32)
    depths[0, 5, 2] = 7.5
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:
        f["images"] = images
        f["depths"] = depths
    s = make(tmp_path, layout="labeled_mat").load("all", make(tmp_path).items("all")[0])
    assert s.rgb[2, 5, 0] == 200 and s.rgb.sum() == 200
    assert s.depth[2, 5] == 7.5
    assert "scene" not in s.meta


def test_labeled_mat_raw_depth_holes_become_nan(tmp_path):
    rgb, depth = frames(1)
    raw = depth.copy()
    raw[0, 3, 4] = 0.0
    write_nyu_labeled(str(tmp_path / "nyu_depth_v2_labeled.mat"), rgb, depth, ["a_0001"], ["a"], raw_depth=raw)
    src = make(tmp_path, raw_depth=True)
    s = src.load("all", src.items("all")[0])
    assert np.isnan(s.depth[3, 4]) and np.isfinite(s.depth).sum() == H * W - 1


def test_mat_lacking_a_dataset_names_file_and_dataset(tmp_path):
    rgb, depth = frames(1)
    write_nyu_labeled(str(tmp_path / "nyu_depth_v2_labeled.mat"), rgb, depth, ["a"], ["a"], omit=("depths",))
    src = make(tmp_path)
    with pytest.raises(SourceError, match=r"nyu_depth_v2_labeled\.mat: .*lacks the 'depths' dataset"):
        src.load("all", src.items("all")[0])


def test_mat_with_negative_or_all_nan_depth_is_refused(tmp_path):
    rgb, depth = frames(2)
    depth[0, 1, 1] = -2.0
    depth[1] = np.nan
    write_nyu_labeled(str(tmp_path / "nyu_depth_v2_labeled.mat"), rgb, depth, ["a", "b"], ["a", "b"])
    # the writer maps NaN to 0 as MATLAB files hold no NaN; 0 is a hole, a map of holes is refused
    src = make(tmp_path)
    items = src.items("all")
    with pytest.raises(SourceError, match="negative"):
        src.load("all", items[0])
    with pytest.raises(SourceError, match="no valid pixel"):
        src.load("all", items[1])


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(SourceError, match="not a MATLAB v7.3"):
        make(tmp_path).items("all")


def write_dd(root, n_train=3, n_test=2):
    rgb, depth = frames(n_train + n_test, seed=1)
    train = [("kitchen_0004", i + 1, rgb[i], depth[i]) for i in range(n_train)]
    test = [(rgb[n_train + i], depth[n_train + i]) for i in range(n_test)]
    write_densedepth(str(root), train, test)
    return rgb, depth


def check_dd(src, rgb, depth):
    assert src.splits() == ["train", "test"]
    train = src.items("train")
    assert [it.key for it in train] == ["kitchen_0004_out/1", "kitchen_0004_out/2", "kitchen_0004_out/3"]
    s = src.load("train", train[0])
    assert s.meta["scene"] == "kitchen_0004" and s.meta["scene_type"] == "kitchen"
    # 8-bit train depth: 0–255 over 0–10 m → within half a step
    np.testing.assert_allclose(s.depth, depth[0], atol=10 / 255 / 2 + 1e-6)
    assert np.abs(s.rgb.astype(int) - rgb[0]).mean() < 3  # JPEG
    t = src.load("test", src.items("test")[1])
    # 16-bit test depth in millimetres → within 0.5 mm; PNG colour is lossless
    np.testing.assert_allclose(t.depth, depth[4], atol=0.0005 + 1e-6)
    np.testing.assert_array_equal(t.rgb, rgb[4])
    assert t.sample_id == "nyu/test/00001_colors"  # key: path below data/nyu2_test/


def test_densedepth_unpacked_round_trip(tmp_path):
    rgb, depth = write_dd(tmp_path)
    assert (tmp_path / "data" / "nyu2_train.csv").read_text().splitlines()[0] == \
        "data/nyu2_train/kitchen_0004_out/1.jpg,data/nyu2_train/kitchen_0004_out/1.png"
    check_dd(make(tmp_path), rgb, depth)


def test_densedepth_zip_round_trip(tmp_path):
    tree = tmp_path / "tree"
    rgb, depth = write_dd(tree)
    zroot = tmp_path / "z"
    zroot.mkdir()
    with zipfile.ZipFile(zroot / "nyu_data.zip", "w") as z:
        for dirpath, _, files in os.walk(tree):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, os.path.relpath(full, tree))
    check_dd(make(zroot), rgb, depth)
    check_dd(make(zroot / "nyu_data.zip", layout="densedepth"), rgb, depth)
    src = make(zroot)
    with pytest.raises(SourceError, match=r"nyu_data\.zip!data/nyu2_train/kitchen_0004_out/9\.png: file not found"):
        src._dd_read("data/nyu2_train/kitchen_0004_out/9.png")


def test_densedepth_wrong_bit_depth_and_size_mismatch(tmp_path):
    write_dd(tmp_path)
    d1 = tmp_path / "data/nyu2_train/kitchen_0004_out/1.png"
    cv2.imwrite(str(d1), np.full((H, W), 3000, np.uint16))
    d2 = tmp_path / "data/nyu2_train/kitchen_0004_out/2.png"
    cv2.imwrite(str(d2), np.full((H + 1, W), 30, np.uint8))
    src = make(tmp_path)
    items = src.items("train")
    with pytest.raises(SourceError, match=r"1\.png: wrong bit depth: expected .*8-bit\), got 16-bit"):
        src.load("train", items[0])
    with pytest.raises(SourceError, match=r"2\.png: depth is 13×16 but its RGB image 2\.jpg is 12×16"):
        src.load("train", items[1])
    assert src.load("train", items[2]).depth.shape == (H, W)  # the rest still loads


def test_densedepth_malformed_csv_line_fails_only_that_item(tmp_path):
    write_dd(tmp_path)
    csv = tmp_path / "data" / "nyu2_train.csv"
    csv.write_text(csv.read_text() + "only_one_field.jpg\n")
    src = make(tmp_path)
    items = src.items("train")
    assert len(items) == 4
    with pytest.raises(SourceError, match=r"nyu2_train\.csv:4: expected 2 comma-separated fields"):
        src.load("train", items[3])


def test_scene_folder_layout_orders_numerically(tmp_path):
    rng = np.random.default_rng(2)
    for scene in ("bedroom_0002_out", "bathroom_0001_out"):
        (tmp_path / scene).mkdir()
        for n in (1, 2, 10):
            cv2.imwrite(str(tmp_path / scene / f"{n}.jpg"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            cv2.imwrite(str(tmp_path / scene / f"{n}.png"), np.full((H, W), 51 * (n % 5 + 1), np.uint8))
    src = make(tmp_path)
    keys = [it.key for it in src.items("train")]
    assert keys == ["bathroom_0001_out/1", "bathroom_0001_out/2", "bathroom_0001_out/10",
                    "bedroom_0002_out/1", "bedroom_0002_out/2", "bedroom_0002_out/10"]
    s = src.load("train", src.items("train")[2])
    np.testing.assert_allclose(s.depth, 51 / 25.5, rtol=1e-6)  # value 51 of 255 over 10 m = 2 m
    assert s.meta["scene"] == "bathroom_0001"


def test_bts_layout_with_file_list_and_focal(tmp_path):
    sync = tmp_path / "sync" / "kitchen_0028b"
    sync.mkdir(parents=True)
    depth_mm = np.full((H, W), 2500, np.uint16)
    depth_mm[0, 0] = 0
    cv2.imwrite(str(sync / "rgb_00045.jpg"), np.zeros((H, W, 3), np.uint8))
    cv2.imwrite(str(sync / "sync_depth_00045.png"), depth_mm)
    (tmp_path / "train_files.txt").write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n")
    src = make(tmp_path, file_lists={"train": "train_files.txt"})
    assert src.layout == "bts" and src.splits() == ["train"]
    s = src.load("train", src.items("train")[0])
    assert s.sample_id == "nyu/train/kitchen_0028b/rgb_00045"
    assert np.isnan(s.depth[0, 0]) and s.depth[5, 5] == pytest.approx(2.5)
    assert s.intrinsics.fx == s.intrinsics.fy == pytest.approx(518.8579)
    # without a list every pair under sync/ is read
    assert [it.key for it in make(tmp_path).items("train")] == ["kitchen_0028b/rgb_00045"]


def test_auto_detection_refuses_ambiguous_roots(tmp_path):
    write_dd(tmp_path)
    (tmp_path / "sync").mkdir()
    with pytest.raises(SourceError, match="several layouts"):
        make(tmp_path).splits()
    assert make(tmp_path, layout="densedepth").splits() == ["train", "test"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="none of the known layouts"):
        make(empty).splits()


def test_layouts_are_one_table_that_detection_and_the_option_follow(tmp_path, monkeypatch):
    from typing import get_args

    from depthdata.sources import nyuv2

    assert get_args(nyuv2.NyuOptions.model_fields["layout"].annotation) == ("auto", *nyuv2.LAYOUTS)
    assert "set options.layout to one of labeled_mat, densedepth, scene_folders, bts" in _detect_error(tmp_path)
    # a layout added to the table is detected, listed and loaded with no other change
    rgb, depth = frames(1)
    fake = nyuv2._Layout(found=lambda src: True, splits=lambda src: ["only"],
                         items=lambda src, split: [SourceItem(key="k", uri="mem://k")],
                         load=lambda src, split, item: (rgb[0], depth[0], nyuv2.kinect_intrinsics(H, W), {}))
    monkeypatch.setitem(nyuv2.LAYOUTS, "fake", fake)
    src = make(tmp_path)
    assert (src.layout, src.splits()) == ("fake", ["only"])
    assert src.load("only", src.items("only")[0]).sample_id == "nyu/only/k"


def _detect_error(root) -> str:
    with pytest.raises(SourceError) as info:
        make(root).splits()
    return str(info.value)


def test_kinect_intrinsics_constant_is_0_based():
    from depthdata.sources.nyuv2 import KINECT

    assert KINECT == Intrinsics(518.8579, 519.4696, 324.5824, 252.7362)
