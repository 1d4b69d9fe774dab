"""resize_sample: geometry of each mode, depth never mixed with holes, coordinates follow the image."""

import numpy as np
import pytest

from depthdata.demo.render import render
from depthdata.demo.scenes import room_scene
from depthdata.sample import Intrinsics, Sample
from depthdata.sources.nyuv2 import kinect_intrinsics
from depthdata.sources.resize import resize_depth, resize_sample

META = {"dataset": "t", "split": "s", "source_uri": "mem://x"}


def sample(h, w, depth=None, pairs=None, intr=None, rgb=None):
    rgb = np.full((h, w, 3), 200, np.uint8) if rgb is None else rgb
    return Sample("t/s/x", rgb, depth=depth, pairs=pairs, intrinsics=intr, meta=dict(META))


def test_resize_mode_scales_intrinsics_and_pairs_with_pixel_centres():
    depth = np.arange(100, dtype=np.float32).reshape(10, 10) + 1
    pairs = np.array([[2, 7, 9, 0, 1]], np.float32)
    s = sample(10, 10, depth, pairs, Intrinsics(10, 10, 4.5, 4.5))
    out = resize_sample(s, (30, 30), "resize")
    # (u + 0.5)·3 − 0.5: 2 → 7, 7 → 22, 9 → 28, 0 → 1
    np.testing.assert_allclose(out.pairs, [[7, 22, 28, 1, 1]])
    assert out.intrinsics == Intrinsics(30, 30, 14.5, 14.5)  # (4.5 + 0.5)·3 − 0.5
    # nearest: the enlarged pixel under a mapped point holds the original pixel's value
    assert out.depth[7, 22] == depth[2, 7] and out.depth[28, 1] == depth[9, 0]
    assert out.meta["original_size"] == [10, 10]


def test_fit_pad_centres_and_pads_with_zero_rgb_and_nan_depth():
    depth = np.full((100, 200), 4.0, np.float32)
    s = sample(100, 200, depth, np.array([[0, 0, 99, 199, -1]], np.float32), Intrinsics(100, 100, 99.5, 49.5))
    out = resize_sample(s, (100, 100), "fit_pad")
    # scale 0.5 → 50×100 content, 25 rows of padding above and below
    assert out.rgb.shape == (100, 100, 3)
    assert (out.rgb[:25] == 0).all() and (out.rgb[75:] == 0).all() and (out.rgb[25:75] == 200).all()
    assert np.isnan(out.depth[:25]).all() and np.isnan(out.depth[75:]).all()
    assert (out.depth[25:75] == 4.0).all()
    assert out.intrinsics == Intrinsics(50, 50, 49.5, 49.5)
    # corners: (0+0.5)·0.5−0.5+25 = 24.75 → 25 rows down; x clamps to 0 / 99
    np.testing.assert_allclose(out.pairs, [[24.75, 0, 74.25, 99, -1]])


def test_center_crop_drops_pairs_outside_and_shifts_the_rest():
    pairs = np.array([[10, 40, 20, 120, 1], [10, 60, 20, 149, -1]], np.float32)
    s = sample(100, 200, pairs=pairs, intr=Intrinsics(100, 100, 99.5, 49.5))
    out = resize_sample(s, (100, 100), "center_crop")
    # scale 1, 50 columns cut on each side: x 40 is gone, 60 → 10, 149 → 99
    np.testing.assert_allclose(out.pairs, [[10, 10, 20, 99, -1]])
    assert out.meta["pairs_dropped"] == 1
    assert out.intrinsics == Intrinsics(100, 100, 49.5, 49.5)


def test_center_crop_upscales_small_images_to_cover():
    s = sample(8, 8, rgb=np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    out = resize_sample(s, (16, 32), "center_crop")
    assert out.rgb.shape == (16, 32, 3)
    assert out.meta["resize"]["scale"] == [4.0, 4.0] and out.meta["resize"]["offset"] == [-8, 0]


def test_rgb_area_shrink_averages_blocks():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2, :2], rgb[:2, 2:], rgb[2:, :2], rgb[2:, 2:] = 10, 20, 30, 40
    rgb[0, 0] = 14  # block mean 11
    out = resize_sample(sample(4, 4, rgb=rgb), (2, 2), "resize").rgb
    np.testing.assert_array_equal(out[..., 0], [[11, 20], [30, 40]])


def test_valid_mean_averages_valid_pixels_only_and_keeps_holes():
    d = np.array([[1, 2, np.nan, np.nan],
                  [3, np.nan, np.nan, 5],
                  [0, 0, 7, 7],
                  [0, 6, 7, 7]], np.float32)
    out = resize_depth(d, (2, 2), "valid_mean")
    # top-left: mean of 1, 2, 3 (3 of 4 valid); top-right: 1 of 4 valid → NaN;
    # bottom-left: 1 of 4 valid (0 is a hole) → NaN; bottom-right: 7
    np.testing.assert_allclose(out, [[2, np.nan], [np.nan, 7]])


def test_nearest_depth_creates_no_new_values():
    rng = np.random.default_rng(0)
    d = rng.choice([1.0, 5.0, np.nan], size=(37, 53)).astype(np.float32)
    out = resize_depth(d, (20, 31), "nearest")
    assert set(np.unique(out[np.isfinite(out)])) <= {1.0, 5.0}
    assert np.isnan(out).any()


def test_original_size_survives_a_second_resize():
    s = resize_sample(sample(40, 60), (20, 30), "resize")
    assert resize_sample(s, (10, 10), "center_crop").meta["original_size"] == [40, 60]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize_sample(sample(4, 4), (2, 2), "stretch")


@pytest.mark.parametrize("mode", ["resize", "fit_pad", "center_crop"])
def test_pairs_and_intrinsics_still_index_the_same_scene_points(mode):
    """Render a scene, resize, and render it again directly with the resized intrinsics: each
    mapped pair point must see (nearly) the same depth as the original point did."""
    scene = room_scene(np.random.default_rng(3))
    size = (120, 160)
    r = render(scene, kinect_intrinsics(*size), size, yaw=0.1)
    rng = np.random.default_rng(1)
    pts = []
    while len(pts) < 30:
        # central columns survive the 90×90 crop (scale 0.75, 15 columns cut per side); smooth
        # surfaces only, so one pixel of rounding does not matter
        y, x = int(rng.integers(3, size[0] - 3)), int(rng.integers(25, 135))
        win = r.depth[y - 3:y + 4, x - 3:x + 4]
        if np.nanmax(win) - np.nanmin(win) < 0.02 * r.depth[y, x]:
            pts.append((y, x))
    pairs = np.array([[y, x, y, x, 0] for y, x in pts], np.float32)
    s = Sample("t/s/x", r.rgb, depth=r.depth, pairs=pairs, intrinsics=r.intrinsics, meta=dict(META))
    target = (90, 90)
    out = resize_sample(s, target, mode)
    direct = render(scene, out.intrinsics, target, yaw=0.1)
    assert len(out.pairs) == len(pts)
    for (y0, x0), (y1, x1, *_) in zip(pts, out.pairs):
        want = r.depth[y0, x0]
        assert abs(direct.depth[round(float(y1)), round(float(x1))] - want) < 0.03 * want


def test_the_catalog_offers_the_resize_modes_and_sources_stay_below_store_and_catalog():
    import subprocess
    import sys
    from typing import get_args

    from depthdata.catalog import DatasetConfig
    from depthdata.sources.resize import MODES

    assert get_args(DatasetConfig.model_fields["resize"].annotation) == MODES
    # the catalog imports the sources' ResizeMode, so the sources must not import the catalog (a cycle)
    code = ("import sys, depthdata.sources; "
            "print(sorted(m for m in sys.modules if m.startswith(('depthdata.store', 'depthdata.catalog'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
