"""Per-sample statistics of one stored sample, from plain arrays.

Units: depth and sparse statistics in metres; teacher statistics in the teacher field's units
(relative disparity in [0, 1], larger = nearer); brightness and contrast on the 0–255 scale of
the 8-bit image (mean and standard deviation of BT.601 luma). Every function returns a flat dict
of floats, NaN where a statistic is undefined (no valid pixel).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from depthdata import metrics
from depthdata.sample import valid_depth

#: Histogram bins for depth and sparse returns, metres: log-spaced so one set of bins serves
#: indoor (0.5–10 m) and outdoor/synthetic scenes (up to hundreds of metres) in a single pass.
DEPTH_BINS = np.geomspace(0.01, 1000.0, 121)
#: Histogram bins for the teacher field (relative disparity in [0, 1]).
TEACHER_BINS = np.linspace(0.0, 1.0, 51)
#: Depth range (metres) used when aligning the teacher to ground truth: wide enough for
#: synthetic outdoor depth (SYNTHIA's 16-bit centimetres reach 655 m), unlike the NYU 10 m cap.
TEACHER_EVAL_MAX_DEPTH = 1000.0


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """``brightness`` (mean luma) and ``contrast`` (luma standard deviation), 0–255 scale."""
    luma = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(luma)
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0])}


def _value_stats(values: np.ndarray, total: int, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_valid_fraction": values.size / total if total else math.nan}
    if values.size:
        out.update({f"{prefix}_min": float(values.min()), f"{prefix}_median": float(np.median(values)),
                    f"{prefix}_max": float(values.max()), f"{prefix}_mean": float(values.mean()),
                    f"{prefix}_std": float(values.std())})
    else:
        out.update({f"{prefix}_{k}": math.nan for k in ("min", "median", "max", "mean", "std")})
    return out


def depth_stats(depth: np.ndarray) -> dict[str, float]:
    """Valid fraction and min/median/max/mean/std (metres) of a depth map; valid = finite and > 0."""
    depth = np.asarray(depth, dtype=np.float32)
    return _value_stats(depth[valid_depth(depth)], depth.size, "depth")


def teacher_stats(teacher: np.ndarray) -> dict[str, float]:
    """Finite fraction and min/median/max/mean/std of the teacher disparity (unitless, [0, 1])."""
    teacher = np.asarray(teacher, dtype=np.float32)
    return _value_stats(teacher[np.isfinite(teacher)], teacher.size, "teacher")


def sparse_stats(sparse: np.ndarray) -> dict[str, float]:
    """LiDAR ``sparse_coverage`` (fraction of pixels with a return), ``sparse_returns`` (count)
    and median/max return depth in metres (0 = no return)."""
    sparse = np.asarray(sparse, dtype=np.float32)
    returns = sparse[valid_depth(sparse)]
    return {
        "sparse_coverage": returns.size / sparse.size,
        "sparse_returns": float(returns.size),
        "sparse_median": float(np.median(returns)) if returns.size else math.nan,
        "sparse_max": float(returns.max()) if returns.size else math.nan,
    }


def pairs_stats(pairs: np.ndarray) -> dict[str, float]:
    """Number of ordinal pairs (rows without NaN; NaN rows are the store's padding)."""
    return {"pairs_count": float((~np.isnan(pairs).any(axis=1)).sum())}


def teacher_alignment(teacher: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """Teacher quality against ground truth after least-squares scale-and-shift in disparity space.

    ``teacher_absrel`` and ``teacher_delta1`` over depth in ``(1e-3, TEACHER_EVAL_MAX_DEPTH)`` m;
    NaN when there is no valid depth or the teacher is constant (the fit is undetermined).
    """
    teacher = np.asarray(teacher, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    mask = np.isfinite(teacher)
    try:
        r = metrics.evaluate(teacher, depth, mask=mask, align="scale_shift_disparity",
                             max_depth=TEACHER_EVAL_MAX_DEPTH, on_empty="nan")
    except metrics.MetricError:
        return {"teacher_absrel": math.nan, "teacher_delta1": math.nan}
    return {"teacher_absrel": r["abs_rel"], "teacher_delta1": r["delta1"]}


def histogram(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Counts of finite ``values`` in ``bins`` (values outside the bins are dropped)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts, _ = np.histogram(values[np.isfinite(values)], bins=bins)
    return counts
