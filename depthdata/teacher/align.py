"""Scale-and-shift alignment of an affine-ambiguous prediction to a target (pure numpy/scipy).

The teacher predicts disparity up to an unknown scale and shift, so comparing it with metric
ground truth means fitting ``target ≈ scale · pred + shift`` first. Ground truth has holes,
edges where depth jumps and sensor outliers, so :func:`fit_scale_shift` is robust by default:

1. a start that outliers barely move: median and MAD matching (as MiDaS evaluates);
2. ``scipy.optimize.least_squares`` with a Cauchy loss whose scale is the MAD of the start's
   residuals (σ = 1.4826·MAD);
3. plain least-squares refits on the inliers (|residual − median| ≤ 3σ, σ re-estimated each
   time) until the inlier set is stable, so that on outlier-free data the answer is the
   exact least-squares solution.

:func:`align_disparity_to_depth` does this in disparity space (target = 1 / depth) and scores
the aligned depth against the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from depthdata.sample import valid_depth

#: residuals beyond this many robust σ are outliers for the final refit
INLIER_SIGMAS = 3.0
#: consistent estimator of σ from the MAD for Gaussian noise
MAD_TO_SIGMA = 1.4826
#: fewest pixels a fit is attempted on (two unknowns, plus slack against degenerate picks)
MIN_PIXELS = 16
#: at most this many trimmed least-squares refits (they stop when the inlier set is stable)
REFITS = 5


@dataclass(frozen=True)
class ScaleShift:
    """``target ≈ scale · pred + shift``, fitted on ``n`` pixels of which ``inliers`` were kept."""

    scale: float
    shift: float
    n: int
    inliers: int

    def apply(self, pred: np.ndarray) -> np.ndarray:
        return self.scale * pred + self.shift


@dataclass(frozen=True)
class Alignment:
    """A disparity map aligned to metric ground truth and how well it matches.

    ``depth_m`` = 1 / max(scale·disp + shift, 1/cap_m) (float32 metres; NaN where ``disp`` is
    NaN), with ``cap_m`` the farthest valid ground-truth depth so that a non-positive aligned
    disparity becomes the far cap rather than a negative depth. ``absrel`` = mean(|d̂ − d| / d)
    and ``delta1`` = fraction of max(d̂/d, d/d̂) < 1.25, both over valid ground-truth pixels.
    """

    fit: ScaleShift
    cap_m: float
    depth_m: np.ndarray
    absrel: float
    delta1: float


def aligned_depth(disparity: np.ndarray, scale: float, shift: float, cap_m: float) -> np.ndarray:
    """Metric depth (float32 metres) from disparity and a fitted alignment:
    ``1 / max(scale·disp + shift, 1/cap_m)``. This is how the manifest's ``align_scale``,
    ``align_shift`` and ``align_cap_m`` turn the stored ``teacher`` field into metres."""
    if not cap_m > 0:
        raise ValueError(f"cap_m must be positive metres, got {cap_m}")
    aligned_disp = np.maximum(scale * np.asarray(disparity, dtype=np.float64) + shift, 1.0 / cap_m)
    return (1.0 / aligned_disp).astype(np.float32)


def _lstsq(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    a = np.stack([pred, np.ones_like(pred)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(a, target, rcond=None)
    return float(scale), float(shift)


def _mad(x: np.ndarray) -> float:
    return float(np.median(np.abs(x - np.median(x))))


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                    robust: bool = True) -> ScaleShift:
    """Fit ``target ≈ scale · pred + shift`` over ``mask`` (and finite pixels of both).

    ``robust=False`` is plain least squares. Raises ``ValueError`` with fewer than
    :data:`MIN_PIXELS` usable pixels or a constant ``pred`` (scale undetermined).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    use = np.isfinite(pred) & np.isfinite(target)
    if mask is not None:
        use &= mask
    p, t = pred[use], target[use]
    n = int(p.size)
    if n < MIN_PIXELS:
        raise ValueError(f"only {n} usable pixels for a scale-and-shift fit (need {MIN_PIXELS})")
    if np.ptp(p) == 0:
        raise ValueError("prediction is constant over the usable pixels: scale is undetermined")
    if not robust:
        scale, shift = _lstsq(p, t)
        return ScaleShift(scale, shift, n, n)

    mad_p = _mad(p)
    scale0 = _mad(t) / mad_p if mad_p > 0 else _lstsq(p, t)[0]
    shift0 = float(np.median(t - scale0 * p))
    # σ floor relative to the target's spread: on exact data the MAD is 0, and the Cauchy
    # fit's stopping tolerance leaves residuals of about 1e-8 of the target's magnitude
    floor = 1e-6 * max(_mad(t), float(np.median(np.abs(t))), 1e-12)
    sigma = max(MAD_TO_SIGMA * _mad(t - (scale0 * p + shift0)), floor)
    sol = least_squares(lambda x: x[0] * p + x[1] - t, x0=[scale0, shift0], loss="cauchy", f_scale=sigma,
                        method="trf", x_scale="jac")
    scale, shift = float(sol.x[0]), float(sol.x[1])
    inl = None
    for _ in range(REFITS):
        resid = scale * p + shift - t
        centred = resid - np.median(resid)
        new_inl = np.abs(centred) <= INLIER_SIGMAS * max(MAD_TO_SIGMA * _mad(resid), floor)
        if inl is not None and np.array_equal(new_inl, inl):
            break
        if new_inl.sum() < MIN_PIXELS or np.ptp(p[new_inl]) == 0:
            break
        inl = new_inl
        scale, shift = _lstsq(p[inl], t[inl])
    return ScaleShift(scale, shift, n, int(inl.sum()) if inl is not None else n)


def align_disparity_to_depth(disparity: np.ndarray, depth_m: np.ndarray, robust: bool = True) -> Alignment:
    """Align relative ``disparity`` (larger = nearer) to ground-truth ``depth_m`` (metres; NaN
    or 0 = invalid) in disparity space, and score the aligned depth (see :class:`Alignment`)."""
    disparity = np.asarray(disparity, dtype=np.float64)
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = valid_depth(depth) & np.isfinite(disparity)
    target = np.zeros_like(depth)
    target[valid] = 1.0 / depth[valid]
    fit = fit_scale_shift(disparity, target, valid, robust=robust)
    cap_m = float(depth[valid].max())
    aligned = aligned_depth(disparity, fit.scale, fit.shift, cap_m)
    d_hat, d = aligned[valid].astype(np.float64), depth[valid]
    absrel = float(np.mean(np.abs(d_hat - d) / d))
    delta1 = float(np.mean(np.maximum(d_hat / d, d / d_hat) < 1.25))
    return Alignment(fit=fit, cap_m=cap_m, depth_m=aligned, absrel=absrel, delta1=delta1)
