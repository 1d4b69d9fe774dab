import numpy as np
import pytest

from depthdata.errors import SampleError
from depthdata.sample import Intrinsics, Sample, make_sample_id, valid_depth

META = {"dataset": "nyu", "split": "train", "source_uri": "/data/a.png"}


def rgb(h=4, w=6):
    return np.zeros((h, w, 3), np.uint8)


def test_valid_sample_and_id():
    sid = make_sample_id("nyu", "train", "bedroom_0001_out/12")
    assert sid == "nyu/train/bedroom_0001_out/12"
    depth = np.full((4, 6), 2.5, np.float32)
    depth[0, 0] = np.nan
    s = Sample(sid, rgb(), depth=depth, meta=META)
    assert (s.height, s.width) == (4, 6)
    assert valid_depth(s.depth).sum() == 23


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"rgb": np.zeros((4, 6, 3), np.float32)}, "rgb must be uint8"),
        ({"rgb": np.zeros((4, 6), np.uint8)}, "H×W×3"),
        ({"depth": np.ones((4, 6), np.float64)}, "float32"),
        ({"depth": np.ones((3, 6), np.float32)}, "differs from the image"),
        ({"depth": np.full((4, 6), -1.0, np.float32)}, "negative"),
        ({"depth": np.full((4, 6), np.inf, np.float32)}, "infinite"),
        ({"pairs": np.array([[0, 0, 4, 5, 1]], np.float32)}, "outside"),  # y=4 is past row 3
        ({"pairs": np.array([[0, 0, 3, 5, 2]], np.float32)}, "order"),
        ({"pairs": np.array([0, 0, 3, 5, 1], np.float32)}, "P×5"),
        ({"meta": {"dataset": "nyu"}}, "required keys"),
        ({"meta": {**META, "bad": object()}}, "JSON"),
    ],
)
def test_violations_name_sample_and_problem(kwargs, fragment):
    args = {"rgb": rgb(), "meta": META, **kwargs}
    with pytest.raises(SampleError) as err:
        Sample("nyu/train/x", **args)
    assert "nyu/train/x" in str(err.value)
    assert fragment in str(err.value)


def test_pairs_on_the_last_pixel_are_inside():
    pairs = np.array([[3, 5, 0, 0, -1]], np.float32)
    assert Sample("a/b/c", rgb(), pairs=pairs, meta=META).pairs.shape == (1, 5)


def test_intrinsics_scaling_uses_pixel_centres():
    k = Intrinsics(fx=500, fy=500, cx=319.5, cy=239.5)  # exact centre of 640×480
    half = k.scaled(0.5, 0.5)
    # the centre of a 320×240 image is (159.5, 119.5)
    assert (half.cx, half.cy, half.fx) == (159.5, 119.5, 250)
    with pytest.raises(ValueError):
        Intrinsics(fx=0, fy=1, cx=0, cy=0)


def test_sample_id_parts_checked():
    with pytest.raises(ValueError):
        make_sample_id("nyu/x", "train", "k")
    with pytest.raises(ValueError):
        make_sample_id("nyu", "", "k")
