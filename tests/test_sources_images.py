"""Unlabeled images reader: discovery, EXIF orientation, colour conversion, bad files."""

import cv2
import numpy as np
import pytest
from PIL import Image

from depthdata.catalog import DatasetConfig
from depthdata.errors import SourceError
from depthdata.sources import get_source_class


def make(root, **options):
    return get_source_class("images")("img", DatasetConfig(kind="images", root=str(root), options=options), str(root))


def test_finds_jpeg_png_webp_recursively_in_stable_order(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "sub" / "c.webp", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    src = make(tmp_path)
    keys = [it.key for it in src.items("train")]
    assert keys == ["a.jpg", "b.png", "sub/c.webp"]
    s = src.load("train", src.items("train")[2])
    assert s.sample_id == "img/train/sub/c.webp" and s.rgb[0, 0].tolist() == [10, 20, 30]
    assert [it.key for it in make(tmp_path, patterns=["*.png", "sub/*"]).items("train")] == ["b.png", "sub/c.webp"]


def test_list_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "list.txt").write_text("# photos\nx.png\n\nmissing.png\n")
    src = make(tmp_path, list_file="list.txt", split="unlabeled")
    items = src.items("unlabeled")
    assert [it.key for it in items] == ["x.png", "missing.png"]
    with pytest.raises(SourceError, match=r"missing\.png: file not found"):
        src.load("unlabeled", items[1])


def test_exif_orientation_is_honoured(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:5] = (255, 0, 0)  # top half red
    stored[5:] = (0, 0, 255)  # bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90° clockwise
    Image.fromarray(stored).save(tmp_path / "p.jpg", exif=exif, quality=95)
    s = make(tmp_path).load("train", make(tmp_path).items("train")[0])
    assert s.rgb.shape == (20, 10, 3)
    # rotating clockwise puts the stored top (red) on the right
    assert s.rgb[10, 9, 0] > 200 and s.rgb[10, 9, 2] < 60
    assert s.rgb[10, 0, 2] > 200 and s.rgb[10, 0, 0] < 60
    raw = make(tmp_path, exif_orientation=False).load("train", make(tmp_path).items("train")[0])
    assert raw.rgb.shape == (10, 20, 3)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(tmp_path / "g.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 255)
    rgba[0, 0] = (200, 100, 50, 0)  # transparent → black
    rgba[0, 1] = (200, 100, 50, 51)  # 20 % opaque over black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    src = make(tmp_path)
    g, t = (src.load("train", it) for it in src.items("train"))
    assert g.rgb.shape == (4, 4, 3) and (g.rgb == 77).all()
    assert t.rgb[0, 0].tolist() == [0, 0, 0]
    assert t.rgb[0, 1].tolist() == [40, 20, 10]
    assert t.rgb[2, 2].tolist() == [200, 100, 50]


def test_bad_files_name_the_file(tmp_path):
    good = np.full((32, 32, 3), 100, np.uint8)
    cv2.imwrite(str(tmp_path / "full.jpg"), good)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(tmp_path / "full.png"), good)
    png = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a JPEG")
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 4), 40000, np.uint16))
    src = make(tmp_path)
    items = {it.key: it for it in src.items("train")}
    with pytest.raises(SourceError, match=r"truncated\.jpg: cannot decode image \(truncated or corrupt\)"):
        src.load("train", items["truncated.jpg"])
    with pytest.raises(SourceError, match=r"truncated\.png: cannot decode image \(truncated or corrupt\)"):
        src.load("train", items["truncated.png"])
    with pytest.raises(SourceError, match=r"empty\.png: file is empty \(0 bytes\)"):
        src.load("train", items["empty.png"])
    with pytest.raises(SourceError, match=r"text\.jpg: not a recognised image file"):
        src.load("train", items["text.jpg"])
    with pytest.raises(SourceError, match=r"deep\.png: expected an 8-bit colour image"):
        src.load("train", items["deep.png"])
    assert src.load("train", items["full.jpg"]).rgb.shape == (32, 32, 3)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images found"):
        make(tmp_path).items("train")
    with pytest.raises(SourceError, match="image root folder not found"):
        make(tmp_path / "nope").items("train")
    with pytest.raises(SourceError, match="unknown split 'test'"):
        make(tmp_path).items("test")
