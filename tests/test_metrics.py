"""Metrics against values worked out by hand on tiny arrays, and analytic scenes."""

import math

import numpy as np
import pytest

from depthdata import metrics as m
from depthdata.errors import DepthdataError
from depthdata.sample import Intrinsics

# 2×2 scene used by the hand computations below (metres).
GT = np.array([[1.0, 2.0], [4.0, 8.0]])
PRED = np.array([[1.5, 2.0], [2.0, 8.0]])
# per pixel: |p − g| = 0.5, 0, 2, 0;  p/g = 1.5, 1, 0.5, 1


def test_standard_metrics_by_hand():
    r = m.evaluate(PRED, GT, max_depth=100)
    assert r["n_valid"] == 4
    assert r["abs_rel"] == pytest.approx((0.5 / 1 + 0 + 2 / 4 + 0) / 4)  # 0.25
    assert r["sq_rel"] == pytest.approx((0.25 / 1 + 0 + 4 / 4 + 0) / 4)  # 0.3125
    assert r["rmse"] == pytest.approx(math.sqrt((0.25 + 4) / 4))
    assert r["mae"] == pytest.approx(2.5 / 4)
    assert r["rmse_log"] == pytest.approx(math.sqrt((math.log(1.5) ** 2 + math.log(2) ** 2) / 4))
    assert r["log10"] == pytest.approx((math.log10(1.5) + math.log10(2)) / 4)
    mean_d = (math.log(1.5) - math.log(2)) / 4
    mean_d2 = (math.log(1.5) ** 2 + math.log(2) ** 2) / 4
    assert r["silog"] == pytest.approx(math.sqrt(mean_d2 - mean_d**2))
    # max(p/g, g/p) = 1.5, 1, 2, 1
    assert r["delta1"] == pytest.approx(0.5)
    assert r["delta2"] == pytest.approx(0.75)  # 1.5 < 1.5625
    assert r["delta3"] == pytest.approx(0.75)  # 2 > 1.953125
    # the single-metric functions agree with the set
    assert m.abs_rel(PRED, GT) == pytest.approx(0.25)
    assert m.sq_rel(PRED, GT) == pytest.approx(0.3125)
    assert m.mae(PRED, GT) == pytest.approx(0.625)
    assert m.rmse(PRED, GT) == pytest.approx(math.sqrt(1.0625))
    assert m.log10_error(PRED, GT) == pytest.approx(math.log10(3) / 4)
    assert m.rmse_log(PRED, GT) == pytest.approx(r["rmse_log"])
    assert m.silog(PRED, GT) == pytest.approx(r["silog"])


def test_delta_thresholds():
    gt = np.ones((1, 4))
    pred = np.array([[1.2, 1.5, 1.9, 2.5]])  # 1.25, 1.5625, 1.953125 separate them
    assert [m.delta_accuracy(pred, gt, k=k) for k in (1, 2, 3)] == [0.25, 0.5, 0.75]
    # symmetric in over- and under-estimation
    assert m.delta_accuracy(1 / pred, gt, k=1) == 0.25


def test_silog_is_scale_invariant_but_rmse_log_is_not():
    assert m.silog(PRED * 3.0, GT) == pytest.approx(m.silog(PRED, GT))
    assert m.silog(GT * 7.0, GT) == pytest.approx(0.0, abs=1e-12)
    assert m.rmse_log(GT * math.e, GT) == pytest.approx(1.0)


def test_mask_and_valid_range():
    gt = np.array([[np.nan, 0.0], [2.0, 20.0]])
    pred = np.array([[5.0, 5.0], [3.0, 5.0]])
    # NaN and 0 never count; 20 m is outside the default (1e-3, 10) m range
    r = m.evaluate(pred, gt)
    assert r["n_valid"] == 1
    assert r["abs_rel"] == pytest.approx(0.5)
    assert m.valid_mask(gt).tolist() == [[False, False], [True, False]]
    # a caller mask removes pixels too
    mask = np.array([[True, True], [False, True]])
    assert m.evaluate(pred, gt, mask=mask, max_depth=100)["abs_rel"] == pytest.approx(15 / 20)


def test_predictions_are_clipped_to_the_range_in_evaluate():
    gt = np.array([[2.0, 4.0]])
    pred = np.array([[0.0, 50.0]])  # clipped to 1e-3 and 10
    r = m.evaluate(pred, gt)
    assert r["mae"] == pytest.approx(((2 - 1e-3) + 6) / 2)


def test_eigen_crop_bounds():
    crop = m.eigen_crop((480, 640))
    rows = np.nonzero(crop.any(axis=1))[0]
    cols = np.nonzero(crop.any(axis=0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (45, 471, 41, 601)
    assert crop.sum() == (471 - 45) * (601 - 41)
    # half resolution: 22.5→23, 235.5→236, 20.5→21, 300.5→301 (halves up)
    half = m.eigen_crop((240, 320))
    rows = np.nonzero(half.any(axis=1))[0]
    cols = np.nonzero(half.any(axis=0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (23, 236, 21, 301)


def test_evaluate_with_crop_ignores_the_border():
    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 2.0)
    pred[:45] = 9.0  # wrong only above the crop
    assert m.evaluate(pred, gt, crop=True)["abs_rel"] == 0.0
    assert m.evaluate(pred, gt)["abs_rel"] > 0


def test_median_scaling():
    scaled = m.median_scale(PRED, GT)
    # medians: gt (2+4)/2 = 3, pred (1.5+2)/2... sorted 1.5, 2, 2, 8 → 2
    np.testing.assert_allclose(scaled, PRED * 3 / 2)
    a = m.evaluate(PRED, GT, align="median", max_depth=100)
    b = m.evaluate(PRED * 123.4, GT, align="median", max_depth=100)
    for k in m.METRIC_NAMES:
        assert a[k] == pytest.approx(b[k])
    assert a["scale"] == pytest.approx(1.5)
    assert b["scale"] == pytest.approx(1.5 / 123.4)


def test_lsq_scale_shift_recovers_known_depth_transform():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 9.0, size=(6, 7))
    pred = (gt - 0.5) / 2.0  # gt = 2·pred + 0.5
    aligned, s, t = m.align_scale_shift(pred, gt, space="depth")
    assert (s, t) == (pytest.approx(2.0), pytest.approx(0.5))
    np.testing.assert_allclose(aligned, gt, rtol=1e-10)
    r = m.evaluate(pred, gt, align="scale_shift_depth")
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-10)
    assert r["delta1"] == 1.0


def test_lsq_scale_shift_in_disparity_space():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 9.0, size=(5, 5))
    disparity = (1.0 / gt - 0.1) / 0.25  # 1/gt = 0.25·disparity + 0.1
    aligned, s, t = m.align_scale_shift(disparity, gt, space="disparity")
    assert (s, t) == (pytest.approx(0.25), pytest.approx(0.1))
    np.testing.assert_allclose(aligned, gt, rtol=1e-10)
    assert m.evaluate(disparity, gt, align="scale_shift_disparity")["rmse"] == pytest.approx(0.0, abs=1e-9)


def test_disparity_alignment_puts_nonpositive_disparity_at_infinity():
    disparity = np.array([[1.0, 0.5, 0.25, -1.0]])  # exactly 1/gt on the first three: s = 1, t = 0
    gt = np.array([[1.0, 2.0, 4.0, np.nan]])  # the last pixel is not fitted, only mapped
    aligned, s, t = m.align_scale_shift(disparity, gt, space="disparity")
    assert (s, t) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    np.testing.assert_allclose(aligned[0, :3], [1.0, 2.0, 4.0])
    assert aligned[0, 3] == np.inf
    # pixels outside the mask take no part in the fit
    gt_full = np.array([[1.0, 2.0, 4.0, 8.0]])
    r = m.evaluate(np.array([[1.0, 0.5, 0.25, 0.0]]), gt_full, mask=np.array([[True, True, True, False]]),
                   align="scale_shift_disparity")
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_whdr_known_pairs_ties_and_disparity():
    depth = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 5.0]])
    pairs = np.array([
        [0, 2, 0, 0, +1],  # 3 vs 1: A farther — right
        [0, 0, 1, 0, +1],  # 1 vs 4: A closer but labelled farther — wrong
        [1, 1, 1, 2, -1],  # 5 vs 5: predicted tie — wrong
        [1, 0, 0, 1, +1],  # 4 vs 2: right
        [np.nan] * 5,      # store padding — ignored
    ], dtype=np.float32)
    assert m.ordinal_errors(depth, pairs) == (2, 4)
    assert m.whdr(depth, pairs) == 0.5
    # the same scene given as disparity: order flips, ties stay wrong
    assert m.whdr(1.0 / depth, pairs, pred_is_disparity=True) == 0.5
    # reading disparity as if it were depth flips every strict pair: 2 right → wrong, 1 wrong →
    # right; the tie stays wrong
    assert m.whdr(1.0 / depth, pairs) == 0.75


def test_whdr_sampling_round_vs_bilinear():
    depth = np.array([[1.0, 2.0, 3.0]])
    pairs = np.array([[0, 0.4, 0, 0, +1]])  # A at x = 0.4
    assert m.whdr(depth, pairs, sampling="round") == 1.0  # x 0.4 → 0: tie with B
    assert m.whdr(depth, pairs, sampling="bilinear") == 0.0  # 1.4 > 1
    half = np.array([[0, 0.5, 0, 0, +1]])  # halves round up → x = 1 → 2 > 1
    assert m.whdr(depth, half, sampling="round") == 0.0


def test_whdr_rejects_bad_pairs():
    depth = np.ones((2, 2))
    with pytest.raises(m.MetricError, match="outside the 2×2"):
        m.whdr(depth, np.array([[0, 0, 2, 0, 1]]))
    with pytest.raises(m.MetricError, match="P×5"):
        m.whdr(depth, np.zeros((3, 4)))
    with pytest.raises(m.EmptyMaskError):
        m.whdr(depth, np.full((2, 5), np.nan))


def test_fscore_identical_and_slightly_shifted_plane():
    k = Intrinsics(fx=10.0, fy=10.0, cx=1.5, cy=1.5)
    gt = np.full((4, 4), 2.0)
    assert m.fscore(gt, gt, k) == {"precision": 1.0, "recall": 1.0, "fscore": 100.0}
    # plane moved 5 cm back: each point moves by (X, Y, Z)·0.05/2, at most |(1.5, 1.5, 10)|·0.005 m
    assert m.fscore(gt + 0.05, gt, k)["fscore"] == pytest.approx(100.0)


def test_fscore_half_plane_shifted_beyond_threshold():
    # fx = 10 at Z = 2 m puts neighbouring points 0.2 m apart (> 0.1 m), so only exact matches count
    k = Intrinsics(fx=10.0, fy=10.0, cx=1.5, cy=1.5)
    gt = np.full((4, 4), 2.0)
    pred = gt.copy()
    pred[:, 2:] = 2.5  # right half 0.5 m behind: ≥ 0.5 m from every gt point
    r = m.fscore(pred, gt, k)
    assert (r["precision"], r["recall"]) == (0.5, 0.5)
    assert r["fscore"] == pytest.approx(50.0)


def test_fscore_precision_and_recall_differ():
    # dense sampling: fx = 1000 at 2 m puts neighbours 2 mm apart
    k = Intrinsics(fx=1000.0, fy=1000.0, cx=4.5, cy=4.5)
    gt = np.full((10, 10), 2.0)
    pred = gt.copy()
    pred[5, 5] = 5.0  # one stray point 3 m behind
    r = m.fscore(pred, gt, k)
    p, rec = 99 / 100, 1.0  # the stray pred point misses; its gt pixel still has a neighbour 2 mm away
    assert r["precision"] == pytest.approx(p)
    assert r["recall"] == pytest.approx(rec)
    assert r["fscore"] == pytest.approx(2 * p * rec / (p + rec) * 100)


def test_backproject_pinhole():
    k = Intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.0)
    depth = np.array([[2.0, 4.0]])
    pts = m.backproject(depth, k, np.array([[True, True]]))
    np.testing.assert_allclose(pts, [[-1.0, 0.0, 2.0], [0.0, 0.0, 4.0]])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(m.MetricError, match=r"shape \(2, 3\) differs"):
        m.evaluate(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(m.EmptyMaskError, match="no ground-truth pixel"):
        m.evaluate(np.ones((2, 2)), np.full((2, 2), np.nan), name="nyu/test/1")
    with pytest.raises(m.MetricError, match="not finite and positive"):
        m.abs_rel(np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]]))
    with pytest.raises(m.MetricError, match="mask must be a bool"):
        m.evaluate(np.ones((2, 2)), np.ones((2, 2)), mask=np.ones((2, 2)))
    with pytest.raises(m.MetricError, match="unknown align"):
        m.evaluate(np.ones((2, 2)), np.ones((2, 2)), align="affine")
    with pytest.raises(m.MetricError, match="constant"):
        m.align_scale_shift(np.ones((2, 2)), GT)
    assert issubclass(m.MetricError, DepthdataError)


def test_empty_evaluation_can_return_nan():
    r = m.evaluate(np.ones((2, 2)), np.zeros((2, 2)), align="median", on_empty="nan")
    assert r["n_valid"] == 0
    assert all(math.isnan(r[k]) for k in (*m.METRIC_NAMES, "scale", "shift"))
