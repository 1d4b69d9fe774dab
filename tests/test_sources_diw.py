"""DIW reader: 1-based y-first coordinates → 0-based, order symbols, malformed records per item."""

import cv2
import numpy as np
import pytest

from depthdata.catalog import DatasetConfig
from depthdata.demo.data import sample_pair
from depthdata.demo.formats import write_diw
from depthdata.errors import SourceError
from depthdata.sources import get_source_class
from depthdata.sources.resize import resize_sample


def make(root, **options):
    return get_source_class("diw")("diw", DatasetConfig(kind="diw", root=str(root), options=options), str(root))


def img(path, h, w):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_record_converts_to_0_based_pairs(tmp_path):
    img(tmp_path / "DIW_test" / "a.thumb.jpg", 30, 40)
    img(tmp_path / "DIW_test" / "b.jpg", 60, 80)  # stored at twice the annotated size
    (tmp_path / "DIW_test.csv").write_text(
        "./DIW_test/a.thumb.jpg\n3,5,30,40,>,40,30\n"
        "./DIW_test/b.jpg\n1,1,30,40,<,40,30\n")
    src = make(tmp_path)
    assert src.splits() == ["test"]
    items = src.items("test")
    assert [it.key for it in items] == ["DIW_test/a.thumb", "DIW_test/b"]
    a = src.load("test", items[0])
    np.testing.assert_array_equal(a.pairs, [[2, 4, 29, 39, 1]])  # '>' → +1 (A farther)
    b = src.load("test", items[1])
    # pixel-centre scaling ×2: (0 + 0.5)·2 − 0.5 = 0.5, (29 + 0.5)·2 − 0.5 = 58.5
    np.testing.assert_array_equal(b.pairs, [[0.5, 0.5, 58.5, 78.5, -1]])
    assert b.depth is None and b.meta["annotated_size"] == [30, 40]


@pytest.mark.parametrize("record, problem", [
    ("3,5,30,40,>,40", "expected 7 fields"),
    ("3,5,30,40,>,40,30,9", "expected 7 fields"),
    ("3.5,5,30,40,>,40,30", "coordinates and size must be integers"),
    ("0,5,30,40,>,40,30", r"y_A=0 outside 1\.\.30"),
    ("3,5,30,41,>,40,30", r"x_B=41 outside 1\.\.40"),
    ("3,5,30,40,=,40,30", "unknown order symbol '='"),
])
def test_malformed_record_fails_only_its_item(tmp_path, record, problem):
    img(tmp_path / "i" / "good.jpg", 30, 40)
    img(tmp_path / "i" / "bad.jpg", 30, 40)
    (tmp_path / "DIW_train_val.csv").write_text(f"i/good.jpg\n1,1,2,2,<,40,30\ni/bad.jpg\n{record}\n")
    src = make(tmp_path)
    items = src.items("train")  # listing never fails for one bad record
    assert src.load("train", items[0]).pairs.shape == (1, 5)
    with pytest.raises(SourceError, match=r"DIW_train_val\.csv:4: " + problem):
        src.load("train", items[1])


def test_truncated_csv_and_missing_image(tmp_path):
    (tmp_path / "DIW_test.csv").write_text("x/missing.jpg\n1,1,2,2,<,40,30\nx/last.jpg\n")
    src = make(tmp_path)
    items = src.items("test")
    with pytest.raises(SourceError, match=r"missing\.jpg: file not found"):
        src.load("test", items[0])
    with pytest.raises(SourceError, match=r"DIW_test\.csv:3: record lacks its second line"):
        src.load("test", items[1])


def test_no_csv_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no DIW annotation CSV found"):
        make(tmp_path).splits()


def test_demo_pairs_agree_with_exact_depth_after_resize(tmp_path):
    depth = np.full((40, 60), 2.0, np.float32)
    depth[:, 30:] = 8.0
    rng = np.random.default_rng(0)
    records = [(np.full((40, 60, 3), 90, np.uint8), *sample_pair(depth, rng)) for _ in range(6)]
    write_diw(str(tmp_path), "DIW_test.csv", "DIW_test", records)
    src = make(tmp_path)
    for item in src.items("test"):
        s = src.load("test", item)
        ya, xa, yb, xb, order = s.pairs[0]
        assert order == (1 if depth[int(ya), int(xa)] > depth[int(yb), int(xb)] else -1)
        # after fit_pad into a square the points still fall on the same half of the scene
        r = resize_sample(s, (30, 30), "fit_pad")
        ya2, xa2, yb2, xb2, _ = r.pairs[0]
        assert (xa2 >= 15) == (xa >= 30) and (xb2 >= 15) == (xb >= 30)
