"""Synthetic LiDAR on analytic scenes: expected values come from the scene geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthdata.catalog import parse_catalog
from depthdata.errors import CatalogError
from depthdata.lidar.beams import PRESETS, beam_model_for
from depthdata.lidar.camera import zbuffer
from depthdata.lidar.config import LidarConfig
from depthdata.lidar.synth import LidarInputError, sample_seed, synthesize
from depthdata.sample import Intrinsics

H, W = 120, 160
K = Intrinsics(fx=100.0, fy=100.0, cx=79.5, cy=59.5)
#: noise and dropout off, sensor at the camera centre: returns are exactly on the surface
EXACT = dict(range_noise_scale=0.0, dropout_random=0.0, dropout_far=0.0, sensor_offset_m=(0.0, 0.0, 0.0))


def pixel_grid(h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:h, 0:w]
    return u.astype(np.float64), v.astype(np.float64)


def plane_depth(normal: tuple[float, float, float], offset: float, k: Intrinsics = K, h: int = H, w: int = W) -> np.ndarray:
    """Depth (metres) of the plane n·X = offset seen through each pixel: z = offset / (n·ray)."""
    u, v = pixel_grid(h, w)
    n = np.asarray(normal, dtype=np.float64)
    denom = n[0] * (u - k.cx) / k.fx + n[1] * (v - k.cy) / k.fy + n[2]
    return (offset / denom).astype(np.float32)


def returns(sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v, u = np.nonzero(sparse)
    return u.astype(np.float64), v.astype(np.float64), sparse[v, u].astype(np.float64)


@pytest.mark.parametrize("mesher", ["grid", "poisson"])
def test_fronto_parallel_plane_returns_are_at_its_depth(mesher):
    depth = np.full((H, W), 4.0, np.float32)
    cfg = LidarConfig(beam_model="hdl64e", mesher=mesher, poisson_depth=7, **EXACT)
    sparse, stats = synthesize(depth, K, cfg, seed=3)
    _, _, z = returns(sparse)
    assert stats.returns == len(z) > 500
    assert stats.coverage == pytest.approx(len(z) / (H * W))
    assert stats.reason == ""
    if mesher == "grid":
        np.testing.assert_allclose(z, 4.0, atol=1e-4)
    else:
        # Poisson smooths: the surface is the plane to within a few millimetres
        assert np.median(np.abs(z - 4.0)) < 2e-3
        assert np.quantile(np.abs(z - 4.0), 0.95) < 0.02
    # every return is on the plane Z = 4 at a range of at least 4 m from the sensor at the origin
    assert stats.mean_range_m >= 4.0
    assert stats.mean_range_m <= 4.0 / math.cos(math.atan(math.hypot(80, 60) / 100))


def test_tilted_plane_returns_match_the_analytic_surface():
    # plane through (0, 0, 5) tilted 30° about the camera's y axis: 0.5·x + cos30·z = 5·cos30
    normal = (0.5, 0.0, math.cos(math.radians(30)))
    offset = 5.0 * normal[2]
    depth = plane_depth(normal, offset)
    sparse, stats = synthesize(depth, K, LidarConfig(**EXACT), seed=1)
    u, v, z = returns(sparse)
    assert stats.returns > 500
    # a return lands on the nearest pixel centre: allow the plane's depth change over half a pixel
    exact = plane_depth(normal, offset)[v.astype(int), u.astype(int)].astype(np.float64)
    slope = np.abs(np.gradient(depth.astype(np.float64), axis=1))[v.astype(int), u.astype(int)]
    assert np.all(np.abs(z - exact) <= 0.5 * slope + 1e-4)
    # and, as 3-D points, returns lie on the plane: a return keeps its true z, only its column is
    # rounded, which moves x by at most 0.5·z/fx
    x = (u - K.cx) / K.fx * z
    assert np.all(np.abs(normal[0] * x + normal[2] * z - offset) <= normal[0] * 0.5 * z / K.fx + 1e-4)


def step_scene() -> np.ndarray:
    """An overhang: rows above the principal point (Y < 0) are a wall at 2 m, rows below see a
    far wall at 6 m."""
    _, v = pixel_grid()
    return np.where(v < K.cy, 2.0, 6.0).astype(np.float32)


def test_step_returns_match_both_surfaces():
    sparse, _ = synthesize(step_scene(), K, LidarConfig(**EXACT), seed=2)
    _, v, z = returns(sparse)
    np.testing.assert_allclose(z[v < K.cy], 2.0, atol=1e-4)
    np.testing.assert_allclose(z[v > K.cy], 6.0, atol=1e-4)


def test_step_casts_an_occlusion_shadow_when_the_sensor_is_offset():
    # Sensor h = 0.3 m above the camera. The near wall's edge (Y = 0, Z = 2) hides the far wall
    # (Z = 6) from the sensor for 0 < Y < 2h (similar triangles: (Y + h)/6 = h/2), which the
    # camera sees on rows cy .. cy + fy·2h/6 = 59.5 .. 69.5.
    h = 0.3
    band = slice(int(math.ceil(K.cy)) + 1, int(K.cy + K.fy * 2 * h / 6))  # rows 61..68, clear of the edges
    below = slice(int(K.cy + K.fy * 2 * h / 6) + 2, H)
    cfg = dict(EXACT, beam_model="os1-128")
    offset, _ = synthesize(step_scene(), K, LidarConfig(**{**cfg, "sensor_offset_m": (0.0, -h, 0.0)}), seed=2)
    centred, _ = synthesize(step_scene(), K, LidarConfig(**cfg), seed=2)
    assert np.count_nonzero(offset[band]) == 0
    assert np.count_nonzero(centred[band]) > 50
    # outside the shadow the offset sensor still sees the far wall
    assert np.count_nonzero(offset[below]) > 200
    np.testing.assert_allclose(offset[below][offset[below] > 0], 6.0, atol=1e-4)


def measured_elevations(sparse: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Elevation (degrees, up positive) of each return's camera-frame point seen from the origin."""
    u, v, z = returns(sparse)
    x = (u - k.cx) / k.fx * z
    y = (v - k.cy) / k.fy * z
    return np.degrees(np.arctan2(-y, np.hypot(x, z)))


def clusters(values: np.ndarray, gap: float) -> list[float]:
    """Means of runs of sorted values separated by more than ``gap``."""
    s = np.sort(values)
    cuts = np.flatnonzero(np.diff(s) > gap) + 1
    return [float(part.mean()) for part in np.split(s, cuts)]


# A tall, narrow view (±31° vertically, pixels of 0.14°) of a wall 10 m ahead.
TALL_K = Intrinsics(fx=400.0, fy=400.0, cx=31.5, cy=239.5)
TALL_WALL = np.full((480, 64), 10.0, np.float32)

PRESET_FACTS = {  # datasheets: channels, top and bottom beam (degrees)
    "hdl64e": (64, 2.0, -24.9),
    "vlp16": (16, 15.0, -15.0),
    "vlp32c": (32, 15.0, -25.0),
    "os1-128": (128, 22.5, -22.5),
}


@pytest.mark.parametrize("name", sorted(PRESET_FACTS))
def test_beam_count_and_elevations_match_the_preset(name):
    channels, top, bottom = PRESET_FACTS[name]
    model = PRESETS[name]
    assert model.channels == channels
    assert max(model.elevations_deg) == pytest.approx(top)
    assert min(model.elevations_deg) == pytest.approx(bottom)
    sparse, _ = synthesize(TALL_WALL, TALL_K, LidarConfig(beam_model=name, **EXACT), seed=0)
    spacing = np.diff(sorted(model.elevations_deg)).min()
    found = clusters(measured_elevations(sparse, TALL_K), gap=spacing / 2)
    assert len(found) == channels
    # pixel rounding moves a return by at most half a pixel: 0.5 · atan(1/400) ≈ 0.07°
    np.testing.assert_allclose(found, sorted(model.elevations_deg), atol=0.08)


def test_vlp16_beams_are_two_degrees_apart():
    sparse, _ = synthesize(TALL_WALL, TALL_K, LidarConfig(beam_model="vlp16", **EXACT), seed=0)
    found = clusters(measured_elevations(sparse, TALL_K), gap=1.0)
    # each cluster mean is off by at most half a pixel (0.07°), so a difference by 0.15°
    np.testing.assert_allclose(np.diff(found), 2.0, atol=0.15)


def test_sensor_pitch_tilts_every_beam_down():
    cfg = LidarConfig(beam_model="vlp16", **{**EXACT, "sensor_rotation_deg": (0.0, 10.0, 0.0)})
    sparse, _ = synthesize(TALL_WALL, TALL_K, cfg, seed=0)
    found = clusters(measured_elevations(sparse, TALL_K), gap=1.0)
    # +10° pitch: beams at -15..+15° now point at -25..+5°, all inside the ±31° view
    np.testing.assert_allclose(found, np.arange(-25.0, 6.0, 2.0), atol=0.1)


def test_custom_beam_model_from_the_catalog():
    cat = parse_catalog({
        "datasets": {"d": {"kind": "images", "root": "."}},
        "lidar": {"beam_model": "fan8", "custom_beam_models": {"fan8": {
            "channels": 8, "elevation_min_deg": -14, "elevation_max_deg": 0, "azimuth_step_deg": 0.5,
            "max_range_m": 50, "range_sigma_m": 0.01}}},
    }, check_roots=False)
    model = beam_model_for(cat.lidar)
    assert model.channels == 8
    sparse, _ = synthesize(TALL_WALL, TALL_K, cat.lidar.model_copy(update=EXACT), seed=0)
    found = clusters(measured_elevations(sparse, TALL_K), gap=1.0)
    np.testing.assert_allclose(found, np.arange(-14.0, 1.0, 2.0), atol=0.08)


def test_unknown_or_inconsistent_beam_models_are_catalog_errors():
    base = {"datasets": {"d": {"kind": "images", "root": "."}}}
    with pytest.raises(CatalogError, match="unknown beam_model 'hdl65'"):
        parse_catalog({**base, "lidar": {"beam_model": "hdl65"}}, check_roots=False)
    with pytest.raises(CatalogError, match="lidar.custom_beam_models.x"):
        parse_catalog({**base, "lidar": {"beam_model": "x", "custom_beam_models": {"x": {
            "elevations_deg": [1, 2], "channels": 2, "azimuth_step_deg": 0.2, "max_range_m": 10}}}},
            check_roots=False)


def test_range_limits_of_the_beam_model_apply():
    # the VLP-16 reaches 100 m: a wall at 110 m gives no returns, and says why
    far = np.full((H, W), 110.0, np.float32)
    sparse, stats = synthesize(far, K, LidarConfig(beam_model="vlp16", **EXACT), seed=0)
    assert stats.returns == 0 and not sparse.any()
    assert "within 0.5-100 m" in stats.reason


def test_same_seed_same_scan_other_seed_other_scan():
    depth = step_scene()
    cfg = LidarConfig(range_noise_scale=1.0, dropout_random=0.1)
    a, sa = synthesize(depth, None, cfg, seed=7)
    b, sb = synthesize(depth, None, cfg, seed=7)
    c, sc = synthesize(depth, None, cfg, seed=8)
    np.testing.assert_array_equal(a, b)
    assert {**sa.row(), "seconds": 0} == {**sb.row(), "seconds": 0}
    assert not np.array_equal(a, c)
    assert (sa.fx, sa.azimuth_phase_deg) != (sc.fx, sc.azimuth_phase_deg)


def test_sample_seed_depends_on_id_and_seed_only():
    assert sample_seed(0, "nyu/train/1") == sample_seed(0, "nyu/train/1")
    assert len({sample_seed(0, "nyu/train/1"), sample_seed(1, "nyu/train/1"), sample_seed(0, "nyu/train/2"),
                sample_seed(0, "nyu/train/1", "pseudo_metric")}) == 4


def test_sampled_intrinsics_lie_in_the_configured_ranges():
    depth = np.full((H, W), 4.0, np.float32)
    cfg = LidarConfig(hfov_deg=(60.0, 70.0), principal_jitter=0.05)
    for seed in range(5):
        _, stats = synthesize(depth, None, cfg, seed=seed)
        assert stats.intrinsics_sampled
        hfov = math.degrees(2 * math.atan(W / 2 / stats.fx))
        assert 60.0 <= hfov <= 70.0
        assert stats.fy == stats.fx
        assert abs(stats.cx - (W - 1) / 2) <= 0.05 * W and abs(stats.cy - (H - 1) / 2) <= 0.05 * H


def test_range_noise_has_the_preset_sigma():
    # VLP-16 on the tall view: 0.2° azimuth steps over 0.14° pixels, so no two returns share a
    # pixel (the z-buffer would keep the nearer and bias the spread). Sensor at the origin:
    # depth error = range error · cos(angle off axis) with cos ≥ 0.96 here, so the depth std
    # is σ within sampling error (720 returns: ±3 %).
    sigma = PRESETS["vlp16"].range_sigma_m
    cfg = LidarConfig(beam_model="vlp16", **{**EXACT, "range_noise_scale": 1.0})
    sparse, stats = synthesize(TALL_WALL, TALL_K, cfg, seed=4)
    _, _, z = returns(sparse)
    assert len(z) == stats.hits > 600
    assert 0.88 * sigma <= np.std(z - 10.0) <= 1.1 * sigma
    assert abs(np.mean(z - 10.0)) < 0.15 * sigma


def test_random_and_far_dropout_remove_the_expected_share():
    depth = np.full((H, W), 30.0, np.float32)
    base = dict(EXACT, beam_model="os1-128")
    _, full = synthesize(depth, K, LidarConfig(**base), seed=5)
    _, rand = synthesize(depth, K, LidarConfig(**{**base, "dropout_random": 0.5}), seed=5)
    # far dropout: p = 0.8 · (r / 120)² with r ≈ 30..38 m → between 5 % and 8 % lost
    _, far = synthesize(depth, K, LidarConfig(**{**base, "dropout_far": 0.8}), seed=5)
    assert full.dropped == 0 and rand.hits == full.hits
    assert rand.dropped == pytest.approx(0.5 * rand.hits, rel=0.05)
    assert 0.04 * far.hits <= far.dropped <= 0.09 * far.hits
    # several OS1 columns share one pixel of this coarse view, so pixels lose fewer returns
    assert far.returns < full.returns and rand.returns < full.returns


@pytest.mark.parametrize("fill", [np.nan, 0.0, 500.0])
def test_empty_or_invalid_depth_gives_zero_returns_with_a_reason(fill):
    depth = np.full((H, W), fill, np.float32)
    sparse, stats = synthesize(depth, K, LidarConfig(), seed=0)
    assert sparse.shape == (H, W) and sparse.dtype == np.float32 and not sparse.any()
    assert stats.returns == 0 and stats.coverage == 0.0 and math.isnan(stats.mean_range_m)
    assert "no valid depth pixels" in stats.reason


def test_isolated_valid_pixels_make_no_mesh_and_say_so():
    depth = np.full((H, W), np.nan, np.float32)
    depth[::2, ::2] = 3.0  # no 2×2 cell is complete
    _, stats = synthesize(depth, K, LidarConfig(), seed=0)
    assert stats.returns == 0 and "mesh is empty" in stats.reason


def test_bad_depth_arrays_are_refused_with_the_problem():
    with pytest.raises(LidarInputError, match="H×W"):
        synthesize(np.zeros(10, np.float32), K, LidarConfig(), seed=0)
    with pytest.raises(LidarInputError, match="floating-point metres"):
        synthesize(np.zeros((4, 4), np.uint16), K, LidarConfig(), seed=0)


def test_zbuffer_keeps_the_nearest_point_per_pixel_whatever_the_order():
    k = Intrinsics(10.0, 10.0, 2.0, 2.0)
    pts = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0],  # all on pixel (2, 2)
                    [0.2, 0.0, 2.0],                                      # u = 2 + 10·0.1 = 3
                    [0.0, 0.0, -1.0], [5.0, 0.0, 1.0]])                   # behind, outside
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]):
        img, winners = zbuffer(pts[order], k, 5, 5)
        expected = np.zeros((5, 5), np.float32)
        expected[2, 2] = 2.0
        expected[2, 3] = 2.0
        np.testing.assert_array_equal(img, expected)
        assert sorted(pts[order][winners, 0].tolist()) == [0.0, 0.2]


def test_poisson_and_grid_agree_on_a_tilted_plane():
    normal = (0.0, -0.4, 1.0)  # floor-like tilt about the x axis
    depth = plane_depth(normal, 5.0)
    g, _ = synthesize(depth, K, LidarConfig(mesher="grid", **EXACT), seed=1)
    p, _ = synthesize(depth, K, LidarConfig(mesher="poisson", poisson_depth=7, **EXACT), seed=1)
    both = (g > 0) & (p > 0)
    assert both.sum() > 0.8 * (g > 0).sum()
    assert np.median(np.abs(p[both] - g[both]) / g[both]) < 0.005


@pytest.mark.parametrize("name", ["hdl64e", "vlp16"])
def test_pruned_mesh_gives_the_same_hits_as_the_full_mesh(name):
    from depthdata.lidar.camera import depth_mask
    from depthdata.lidar.mesh import grid_mesh
    from depthdata.lidar.raycast import cast, frustum_rays, reachable, sensor_pose

    # a floor, a tilted wall, a step and a bump, seen by a rolled, pitched, offset sensor
    u, v = pixel_grid()
    depth = plane_depth((0.3, 0.0, 1.0), 6.0)
    floor = plane_depth((0.0, -1.0, 0.1), -1.2)
    depth = np.where((floor > 0) & (floor < depth), floor, depth)
    depth = np.where((u > 100) & (v < 50), 2.5 + 0.3 * np.sin(u / 5.0), depth).astype(np.float32)
    pose = sensor_pose((0.1, -0.3, -0.2), (4.0, 6.0, -3.0))
    model = PRESETS[name]
    mesh = grid_mesh(depth, depth_mask(depth, 100.0), K, 0.05)
    rays, _ = frustum_rays(model, pose, K, H, W, 0.05)
    pruned = reachable(mesh, pose, model)
    assert len(pruned.triangles) < len(mesh.triangles) / 2
    full_hits = cast(mesh, rays)
    assert np.isfinite(full_hits).sum() > 100
    np.testing.assert_array_equal(cast(pruned, rays), full_hits)
