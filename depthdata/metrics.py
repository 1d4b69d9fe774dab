"""Monocular-depth evaluation metrics, alignment helpers and evaluation masks.

Conventions (all functions):

* Depth arrays are ``H×W`` floats in **metres**. Disparity (inverse depth, e.g. the teacher
  field or an LPCVC model output) is unitless and affine-ambiguous; functions that accept it
  say so with a flag or a ``space`` argument.
* A metric is computed over the *evaluated pixels*: ``mask`` (when given) AND ground truth
  finite and strictly positive. The predicted depth at those pixels must be finite and strictly
  positive, else :class:`MetricError` is raised (a silent skip would flatter the model).
* No evaluated pixel raises :class:`EmptyMaskError`; :func:`evaluate` can return NaN metrics
  instead (``on_empty="nan"``) for batch loops.
* Pixel coordinates are 0-based, y first, pixel centres at integers (``depthdata.sample``).
* Logarithms are natural unless the name says ``log10``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

from depthdata.errors import DepthdataError
from depthdata.sample import Intrinsics

#: Default valid ground-truth range in metres, open interval (NYU evaluation convention).
MIN_DEPTH = 1e-3
MAX_DEPTH = 10.0
#: Eigen et al. crop of a 480×640 NYU image: rows [45, 471), cols [41, 601), 0-based.
EIGEN_CROP_480x640 = (45, 471, 41, 601)
#: Alignment modes accepted by :func:`evaluate`.
ALIGN_MODES = (None, "median", "scale_shift_depth", "scale_shift_disparity")
#: Keys of :func:`evaluate`'s result that are metrics (the rest: ``n_valid``, ``scale``, ``shift``).
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "mae", "delta1", "delta2", "delta3", "silog")


class MetricError(DepthdataError):
    """Inputs that cannot be evaluated: mismatched shapes, invalid predictions, bad pairs."""


class EmptyMaskError(MetricError):
    """No pixel is left to evaluate after masking."""


# -- masks ----------------------------------------------------------------------------------

def valid_mask(gt: np.ndarray, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> np.ndarray:
    """Pixels whose ground truth lies in the open interval ``(min_depth, max_depth)`` metres.

    NaN and non-positive depths are always invalid.
    """
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt > max(min_depth, 0.0)) & (gt < max_depth)


def eigen_crop(shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the Eigen crop for an image of ``shape`` ``(H, W)``.

    At 480×640 it is exactly rows 45:471 and cols 41:601 (0-based, end exclusive). At other
    resolutions every bound is scaled proportionally (``bound·H/480`` for rows, ``bound·W/640``
    for columns) and rounded to the nearest pixel, halves up (at 240×320: rows 23:236, cols
    21:301), so the crop covers the same part of the view.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise MetricError(f"eigen_crop: image shape must be positive, got {shape}")
    top, bottom, left, right = EIGEN_CROP_480x640

    def half_up(v: float) -> int:
        # Python's round() rounds halves to even, which would shift some bounds inward and others outward.
        return int(math.floor(v + 0.5))

    mask = np.zeros((h, w), dtype=bool)
    mask[half_up(top * h / 480): half_up(bottom * h / 480), half_up(left * w / 640): half_up(right * w / 640)] = True
    return mask


# -- input checks ---------------------------------------------------------------------------

def _check_inputs(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, what: str = "") -> None:
    """Raise :class:`MetricError` unless pred, gt (and mask) are H×W maps of one shape."""
    prefix = f"{what}: " if what else ""
    if pred.shape != gt.shape:
        raise MetricError(f"{prefix}prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred.ndim != 2:
        raise MetricError(f"{prefix}expected H×W depth maps, got shape {pred.shape}")
    if mask is not None and (np.shape(mask) != gt.shape or np.asarray(mask).dtype != bool):
        raise MetricError(f"{prefix}mask must be a bool array of shape {gt.shape}, "
                          f"got {np.asarray(mask).dtype} {np.shape(mask)}")


def _selection(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, what: str = "") -> np.ndarray:
    """Bool mask of the evaluated pixels after validating the inputs; raises when it is empty."""
    _check_inputs(pred, gt, mask, what)
    with np.errstate(invalid="ignore"):
        sel = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        sel &= np.asarray(mask)
    if not sel.any():
        raise EmptyMaskError(f"{what + ': ' if what else ''}no valid ground-truth pixel to evaluate")
    return sel


def _evaluated(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(pred, gt)`` at the evaluated pixels as float64 vectors; the prediction must be positive."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    sel = _selection(pred, gt, mask, what)
    p = pred[sel].astype(np.float64)
    bad = ~np.isfinite(p) | (p <= 0)
    if bad.any():
        prefix = f"{what}: " if what else ""
        raise MetricError(f"{prefix}{int(bad.sum())} of {p.size} evaluated predicted depths are not finite "
                          "and positive (clip predictions to the valid range first)")
    return p, gt[sel].astype(np.float64)


# -- metrics (metres in, see module docstring for the evaluated pixels) ---------------------

# Each takes the evaluated (pred, gt) vectors in metres, both strictly positive.
_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "abs_rel": lambda p, g: float(np.mean(np.abs(p - g) / g)),
    "sq_rel": lambda p, g: float(np.mean((p - g) ** 2 / g)),
    "rmse": lambda p, g: float(np.sqrt(np.mean((p - g) ** 2))),
    "rmse_log": lambda p, g: float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
    "log10": lambda p, g: float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
    "mae": lambda p, g: float(np.mean(np.abs(p - g))),
    "delta1": lambda p, g: float(np.mean(np.maximum(p / g, g / p) < 1.25)),
    "delta2": lambda p, g: float(np.mean(np.maximum(p / g, g / p) < 1.25 ** 2)),
    "delta3": lambda p, g: float(np.mean(np.maximum(p / g, g / p) < 1.25 ** 3)),
    # np.std is sqrt(mean((d − mean d)²)): algebraically sqrt(mean(d²) − (mean d)²) but without
    # the cancellation that can make the latter's radicand slightly negative.
    "silog": lambda p, g: float(np.std(np.log(p) - np.log(g))),
}


def abs_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute relative error ``mean(|p − g| / g)`` (unitless)."""
    return _METRICS["abs_rel"](*_evaluated(pred, gt, mask))


def sq_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Squared relative error ``mean((p − g)² / g)`` (metres)."""
    return _METRICS["sq_rel"](*_evaluated(pred, gt, mask))


def rmse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error ``sqrt(mean((p − g)²))`` in metres."""
    return _METRICS["rmse"](*_evaluated(pred, gt, mask))


def rmse_log(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``sqrt(mean((ln p − ln g)²))`` (natural log, unitless)."""
    return _METRICS["rmse_log"](*_evaluated(pred, gt, mask))


def log10_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute base-10 log error ``mean(|log10 p − log10 g|)``."""
    return _METRICS["log10"](*_evaluated(pred, gt, mask))


def mae(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error ``mean(|p − g|)`` in metres."""
    return _METRICS["mae"](*_evaluated(pred, gt, mask))


def delta_accuracy(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, k: int = 1) -> float:
    """Threshold accuracy δ<1.25^k: fraction of pixels with ``max(p/g, g/p) < 1.25**k`` (in [0, 1])."""
    p, g = _evaluated(pred, gt, mask)
    return float(np.mean(np.maximum(p / g, g / p) < 1.25 ** k))


def silog(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Scale-invariant log RMSE of Eigen et al. (2014), λ = 1, natural log, **not** ×100.

    ``sqrt(mean(d²) − (mean d)²)`` with ``d = ln p − ln g``: invariant to a global scale of the
    prediction. (The KITTI benchmark reports ``100 ×`` this value; BTS/AdaBins use λ = 0.85 and
    ``×10`` — neither is what this returns.)
    """
    return _METRICS["silog"](*_evaluated(pred, gt, mask))


# -- alignment --------------------------------------------------------------------------------

def median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``pred × median(gt) / median(pred)`` over the evaluated pixels (LPCVC / Monodepth scoring).

    ``pred`` is depth up to an unknown scale; the result is depth in metres, same shape.
    """
    p, g = _evaluated(pred, gt, mask)
    return np.asarray(pred, dtype=np.float64) * (np.median(g) / np.median(p))


def fit_scale_shift(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimising ``sum((s·x + t − y)²)`` over two equal-length vectors."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise MetricError(f"scale-and-shift fit needs two equal-length vectors of >= 2 values, got {x.size}, {y.size}")
    if np.ptp(x) == 0:
        raise MetricError("scale-and-shift fit is undetermined: the prediction is constant over the evaluated pixels")
    design = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(s), float(t)


def align_scale_shift(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
                      space: str = "depth", positive_scale: bool = False) -> tuple[np.ndarray, float, float]:
    """Least-squares scale-and-shift alignment; returns ``(aligned_depth_m, scale, shift)``.

    * ``space="depth"``: ``pred`` is depth up to scale and shift; fits ``s·pred + t ≈ gt`` and
      returns ``s·pred + t`` metres.
    * ``space="disparity"``: ``pred`` is disparity up to scale and shift (larger = nearer, e.g.
      the teacher field); fits ``s·pred + t ≈ 1/gt`` (1/m) and returns depth ``1/(s·pred + t)``
      metres, ``+inf`` where the aligned disparity is ``<= 0`` (the fit puts it at or beyond
      infinity; :func:`evaluate` clips that to its ``max_depth``).

    Evaluated pixels as in the module docstring, except that ``pred`` may be any finite value
    (disparity can be 0).

    ``positive_scale``: least squares with ``s ≥ 0``. A prediction whose fit needs a negative
    scale has near and far reversed; a free fit would quietly undo that, the constrained one
    gives ``s = 0`` and ``t`` = the mean target, so it scores as the best constant prediction.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt)
    if space not in ("depth", "disparity"):
        raise MetricError(f"alignment space must be 'depth' or 'disparity', got {space!r}")
    sel = _selection(pred, gt, mask)
    x = pred[sel]
    # A shift can move any finite value into range, so only finiteness is required here.
    if not np.isfinite(x).all():
        raise MetricError(f"{int((~np.isfinite(x)).sum())} of {x.size} evaluated predictions are not finite")
    y = gt[sel].astype(np.float64)
    target = y if space == "depth" else 1.0 / y
    s, t = fit_scale_shift(x, target)
    if positive_scale and s < 0:
        s, t = 0.0, float(np.mean(target))
    if space == "depth":
        return s * pred + t, s, t
    disp = s * pred + t
    with np.errstate(divide="ignore"):
        depth = np.where(disp > 0, 1.0 / disp, np.inf)
    return depth, s, t


# -- ordinal pairs (WHDR) --------------------------------------------------------------------

def ordinal_errors(pred: np.ndarray, pairs: np.ndarray, pred_is_disparity: bool = False,
                   sampling: str = "round") -> tuple[int, int]:
    """``(wrong, total)`` ordinal pairs for one image; sum them over a dataset for its WHDR.

    ``pairs`` is ``P×5`` ``(y_a, x_a, y_b, x_b, order)``, 0-based pixel coordinates in ``pred``'s
    frame (resize the prediction to the pairs' image size first), ``order = +1`` when A is
    farther, ``-1`` when A is closer. Rows containing NaN (the store's padding) are ignored, and
    so are ``order = 0`` rows (DIW has none; WHDR is defined on ordered pairs).

    The prediction is read at the pair coordinates with ``sampling="round"`` (nearest pixel,
    halves rounded up) or ``"bilinear"``. With ``pred_is_disparity`` the predicted order flips
    (larger disparity = nearer). A pair is wrong when the predicted order disagrees with
    ``order``; predicted ties and non-finite predictions count as wrong.
    """
    pred = np.asarray(pred, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.float64)
    if pred.ndim != 2:
        raise MetricError(f"WHDR: prediction must be H×W, got shape {pred.shape}")
    if pairs.ndim != 2 or pairs.shape[1] != 5:
        raise MetricError(f"WHDR: pairs must be P×5 (y_a, x_a, y_b, x_b, order), got shape {pairs.shape}")
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    if not np.isin(pairs[:, 4], (-1.0, 0.0, 1.0)).all():
        raise MetricError("WHDR: pair order must be +1 (A farther), -1 (A closer) or 0")
    pairs = pairs[pairs[:, 4] != 0]
    if len(pairs) == 0:
        raise EmptyMaskError("WHDR: no ordered pair to evaluate")
    h, w = pred.shape
    ys, xs = pairs[:, [0, 2]], pairs[:, [1, 3]]
    if (ys < 0).any() or (ys > h - 1).any() or (xs < 0).any() or (xs > w - 1).any():
        raise MetricError(f"WHDR: pair coordinates outside the {h}×{w} prediction "
                          "(0-based, y first; resize the prediction to the pairs' image size)")
    if sampling == "round":
        yi = np.floor(ys + 0.5).astype(int)
        xi = np.floor(xs + 0.5).astype(int)
        values = pred[yi, xi]
    elif sampling == "bilinear":
        values = map_coordinates(pred, [ys.ravel(), xs.ravel()], order=1, mode="nearest").reshape(ys.shape)
    else:
        raise MetricError(f"WHDR: sampling must be 'round' or 'bilinear', got {sampling!r}")
    a, b = values[:, 0], values[:, 1]
    predicted = np.sign(a - b)  # +1: A deeper (farther) for depth
    if pred_is_disparity:
        predicted = -predicted
    right = np.isfinite(predicted) & (predicted == pairs[:, 4])
    return int((~right).sum()), int(len(pairs))


def whdr(pred: np.ndarray, pairs: np.ndarray, pred_is_disparity: bool = False, sampling: str = "round") -> float:
    """Weighted Human Disagreement Rate of one image: wrong / ordered pairs, in [0, 1].

    See :func:`ordinal_errors` for the pair format, sampling and the tie rule.
    """
    wrong, total = ordinal_errors(pred, pairs, pred_is_disparity, sampling)
    return wrong / total


# -- point clouds (LPCVC F-score) -------------------------------------------------------------

def backproject(depth: np.ndarray, intrinsics: Intrinsics, mask: np.ndarray) -> np.ndarray:
    """Camera-frame points ``N×3`` (metres; x right, y down, z forward) of the ``mask`` pixels.

    ``X = (u − cx)·Z/fx``, ``Y = (v − cy)·Z/fy``, ``Z = depth``, with ``u`` the 0-based column
    and ``v`` the row (pixel centres at integers).
    """
    v, u = np.nonzero(mask)
    z = np.asarray(depth, dtype=np.float64)[v, u]
    return np.stack([(u - intrinsics.cx) * z / intrinsics.fx, (v - intrinsics.cy) * z / intrinsics.fy, z], axis=1)


def fscore(pred: np.ndarray, gt: np.ndarray, intrinsics: Intrinsics, mask: np.ndarray | None = None,
           threshold: float = 0.1) -> dict[str, float]:
    """LPCVC 2025 point-cloud F-score of a metric depth prediction.

    Both depth maps (metres) are back-projected over the same evaluated pixels. Precision is the
    fraction of predicted points whose nearest ground-truth point is within ``threshold`` metres
    (distance ``<=`` threshold), recall the fraction of ground-truth points with a predicted point
    that close. Returns ``{"precision", "recall"}`` in [0, 1] and ``"fscore"`` =
    ``2PR/(P+R)·100`` in [0, 100] (0 when P + R = 0).
    """
    if not isinstance(intrinsics, Intrinsics):
        raise MetricError(f"F-score: intrinsics must be depthdata.sample.Intrinsics, got {type(intrinsics).__name__}")
    if not threshold > 0:
        raise MetricError(f"F-score: threshold must be positive metres, got {threshold}")
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _evaluated(pred, gt, mask, "F-score")
    sel = _selection(pred, gt, mask)
    pred_pts = backproject(pred, intrinsics, sel)
    gt_pts = backproject(gt, intrinsics, sel)
    d_pred, _ = cKDTree(gt_pts).query(pred_pts, k=1)
    d_gt, _ = cKDTree(pred_pts).query(gt_pts, k=1)
    precision = float(np.mean(d_pred <= threshold))
    recall = float(np.mean(d_gt <= threshold))
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall) * 100
    return {"precision": precision, "recall": recall, "fscore": f}


# -- the standard set -------------------------------------------------------------------------

def evaluate(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, align: str | None = None,
             min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH, crop: bool = False,
             on_empty: str = "raise", name: str = "", positive_scale: bool = False) -> dict[str, float]:
    """The standard metric set (:data:`METRIC_NAMES`) of one prediction against ground truth.

    ``gt`` is metres. ``pred`` is, by ``align``:

    * ``None``: metric depth in metres;
    * ``"median"``: depth up to scale (:func:`median_scale`);
    * ``"scale_shift_depth"``: depth up to scale and shift (:func:`align_scale_shift`, depth space);
    * ``"scale_shift_disparity"``: disparity up to scale and shift, e.g. the teacher field
      (aligned in disparity space, then inverted to depth).

    Evaluated pixels: ``mask`` AND :func:`valid_mask` ``(min_depth, max_depth)`` AND, with
    ``crop``, the :func:`eigen_crop`. Alignment is fitted on those pixels; the (aligned)
    prediction is then clipped to ``[min_depth, max_depth]`` — the usual NYU/KITTI protocol, which
    also keeps logs finite. Returns the metrics plus ``n_valid`` (pixels evaluated) and, for the
    alignment modes, ``scale`` and ``shift``. With no pixel to evaluate it raises
    :class:`EmptyMaskError`, or with ``on_empty="nan"`` returns every value NaN and ``n_valid`` 0.
    ``name`` (a sample id or file) prefixes error messages. ``positive_scale`` constrains the
    scale-and-shift fits to a non-negative scale (:func:`align_scale_shift`), so that a reversed
    prediction is not fitted back into order.
    """
    if align not in ALIGN_MODES:
        raise MetricError(f"{name + ': ' if name else ''}unknown align {align!r}; use one of {ALIGN_MODES}")
    if on_empty not in ("raise", "nan"):
        raise MetricError(f"on_empty must be 'raise' or 'nan', got {on_empty!r}")
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    sel = valid_mask(gt, min_depth, max_depth)
    _check_inputs(pred, gt, mask, name)
    if mask is not None:
        sel &= np.asarray(mask)
    if crop:
        sel &= eigen_crop(gt.shape)
    extra: dict[str, float] = {}
    if not sel.any():
        if on_empty == "nan":
            nan = {k: math.nan for k in METRIC_NAMES}
            if align is not None:
                nan.update(scale=math.nan, shift=math.nan)
            return {**nan, "n_valid": 0}
        raise EmptyMaskError(f"{name + ': ' if name else ''}no ground-truth pixel in ({min_depth}, {max_depth}) m "
                             "inside the mask")
    if align == "median":
        p, g = _evaluated(pred, gt, sel, name)
        scale = float(np.median(g) / np.median(p))
        pred = pred * scale
        extra = {"scale": scale, "shift": 0.0}
    elif align in ("scale_shift_depth", "scale_shift_disparity"):
        space = "depth" if align == "scale_shift_depth" else "disparity"
        pred, s, t = align_scale_shift(pred, gt, sel, space, positive_scale)
        extra = {"scale": s, "shift": t}
    pred = np.clip(np.asarray(pred, dtype=np.float64), min_depth, max_depth)
    p, g = _evaluated(pred, gt, sel, name)
    out = {k: fn(p, g) for k, fn in _METRICS.items()}
    return {**out, "n_valid": int(p.size), **extra}
