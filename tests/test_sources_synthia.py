"""SYNTHIA reader: RAND and SEQS trees, centimetre depth, sky cut-off, RGB-packed option."""

import cv2
import numpy as np
import pytest

from depthdata.catalog import DatasetConfig
from depthdata.demo.formats import write_synthia_rand
from depthdata.errors import SourceError
from depthdata.sources import get_source_class

H, W = 19, 32  # SYNTHIA's 760×1280 divided by 40


def make(root, **options):
    return get_source_class("synthia")("syn", DatasetConfig(kind="synthia", root=str(root), options=options), str(root))


def test_rand_round_trip_centimetres_and_sky(tmp_path):
    depth = np.full((H, W), 12.34, np.float32)
    depth[0, :] = np.nan  # sky row
    depth[1, 0] = 300.0
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 255  # red
    write_synthia_rand(str(tmp_path), [(rgb, depth), (rgb, depth)])
    raw = cv2.imread(str(tmp_path / "Depth/Depth/0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (H, W, 3) and raw[5, 5].tolist() == [1234] * 3
    assert raw[0, 0, 0] == 65535

    src = make(tmp_path, max_depth=200)
    items = src.items("train")
    assert [it.key for it in items] == ["0000000", "0000001"]
    s = src.load("train", items[0])
    assert s.sample_id == "syn/train/0000000"
    assert s.rgb[0, 0].tolist() == [255, 0, 0]  # RGB order, not OpenCV's BGR
    assert s.depth[5, 5] == pytest.approx(12.34)  # 1234 cm
    assert np.isnan(s.depth[0]).all()  # saturated sky
    assert np.isnan(s.depth[1, 0])  # 300 m > max_depth 200
    # f = 532.740352 at 1280 px → /40; c = (640 + 0.5)/40 − 0.5, (380 + 0.5)/40 − 0.5
    i = s.intrinsics
    assert (i.fx, i.fy, i.cx, i.cy) == pytest.approx((13.3185088, 13.3185088, 15.5125, 9.0125))


def test_seqs_camera_selection(tmp_path):
    for side in ("Stereo_Left", "Stereo_Right"):
        for d, cm in (("F", 500), ("B", 700)):
            for kind in ("RGB", "Depth"):
                (tmp_path / kind / side / f"Omni_{d}").mkdir(parents=True)
            for n in range(2):
                cv2.imwrite(str(tmp_path / "RGB" / side / f"Omni_{d}" / f"{n:06d}.png"), np.zeros((H, W, 3), np.uint8))
                v = np.full((H, W), cm + (100 if side == "Stereo_Right" else 0), np.uint16)
                cv2.imwrite(str(tmp_path / "Depth" / side / f"Omni_{d}" / f"{n:06d}.png"), np.dstack([v, v, v]))
    src = make(tmp_path, sides=["Stereo_Right"], directions=["F", "B"])
    keys = [it.key for it in src.items("train")]
    assert keys == ["Stereo_Right/Omni_F/000000", "Stereo_Right/Omni_F/000001",
                    "Stereo_Right/Omni_B/000000", "Stereo_Right/Omni_B/000001"]
    s = src.load("train", src.items("train")[2])
    assert s.meta["camera"] == "Stereo_Right/Omni_B"
    assert np.all(s.depth == pytest.approx(8.0))  # 800 cm
    assert len(make(tmp_path).items("train")) == 2  # default: Stereo_Left, Omni_F


def test_rgb_packed_only_when_asked(tmp_path):
    write_synthia_rand(str(tmp_path), [(np.zeros((H, W, 3), np.uint8), np.full((H, W), 1.0, np.float32))])
    packed = 33554  # 5000·33554/(256³−1) m ≈ 9.99987 m
    r, g, b = packed % 256, packed // 256 % 256, packed // 65536
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[...] = (b, g, r)
    cv2.imwrite(str(tmp_path / "Depth/Depth/0000000.png"), bgr)
    s = make(tmp_path, depth_encoding="rgb24").load("train", make(tmp_path).items("train")[0])
    assert s.depth[3, 3] == pytest.approx(5000 * packed / (256**3 - 1), rel=1e-6)
    # the default (cm16) does not guess: an 8-bit file is the wrong bit depth
    with pytest.raises(SourceError, match=r"0000000\.png: wrong bit depth: expected 16-bit"):
        make(tmp_path).load("train", make(tmp_path).items("train")[0])


def test_bad_synthia_files(tmp_path):
    d = np.full((H, W), 5.0, np.float32)
    write_synthia_rand(str(tmp_path), [(np.zeros((H, W, 3), np.uint8), d)] * 4)
    cv2.imwrite(str(tmp_path / "Depth/Depth/0000000.png"), np.full((H + 2, W, 3), 500, np.uint16))
    (tmp_path / "Depth/Depth/0000001.png").unlink()
    (tmp_path / "RGB/0000002.png").write_bytes(b"")
    src = make(tmp_path)
    items = src.items("train")
    with pytest.raises(SourceError, match=r"Depth/0000000\.png: depth is 21×32 but its RGB image 0000000\.png is 19×32"):
        src.load("train", items[0])
    with pytest.raises(SourceError, match=r"Depth/0000001\.png: file not found"):
        src.load("train", items[1])
    with pytest.raises(SourceError, match=r"RGB/0000002\.png: file is empty"):
        src.load("train", items[2])
    assert src.load("train", items[3]).depth.shape == (H, W)


def test_layout_detection_needs_a_known_tree(tmp_path):
    with pytest.raises(SourceError, match="cannot detect the SYNTHIA layout"):
        make(tmp_path).items("train")
