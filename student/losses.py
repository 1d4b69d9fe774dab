"""Distillation losses on relative disparity (MiDaS, Ranftl et al. 2020; DIW, Chen et al. 2016).

All maps are ``B×1×H×W`` tensors. ``pred`` and ``target`` are relative **disparity** (larger =
nearer; the student's output and the store's ``teacher`` field, both unitless). ``weight`` is a
per-pixel weight, a bool mask or float confidence in [0, 1] (0 = ignore). Sparse LiDAR is depth
in **metres** with 0 = no return. Pair coordinates are 0-based pixels, y first.

Every loss is a mean over the pixels/pairs it uses and is exactly zero (with a gradient path)
when a batch has nothing to compare, so optional terms can always be added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _zero(like: torch.Tensor) -> torch.Tensor:
    # Keeps the graph connected so `.backward()` works on a batch without any usable target.
    return like.sum() * 0.0


def align_lsq(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``s·pred + t`` with per-image ``(s, t)`` minimising ``Σ w (s·pred + t − target)²``.

    Closed form of the 2×2 normal equations (MiDaS eq. 4). An image whose prediction is
    constant over its weighted pixels gets ``s = 0``, ``t`` = weighted mean of the target.
    """
    w = weight.float()
    dims = (1, 2, 3)
    a00 = (w * pred * pred).sum(dims)
    a01 = (w * pred).sum(dims)
    a11 = w.sum(dims)
    b0 = (w * pred * target).sum(dims)
    b1 = (w * target).sum(dims)
    det = a00 * a11 - a01 * a01
    ok = det > 1e-12 * a11.clamp_min(1.0) ** 2
    safe = torch.where(ok, det, torch.ones_like(det))
    s = torch.where(ok, (a11 * b0 - a01 * b1) / safe, torch.zeros_like(det))
    t = torch.where(ok, (a00 * b1 - a01 * b0) / safe, b1 / a11.clamp_min(1e-12))
    return s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1)


def _normalise_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x − median) / mean|x − median|`` over ``mask`` of one ``1×H×W`` map (MiDaS eq. 6-7)."""
    vals = x[mask]
    med = vals.median()
    scale = (vals - med).abs().mean().clamp_min(1e-6)
    return (x - med) / scale


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, mode: str = "lsq") -> torch.Tensor:
    """Scale-and-shift-invariant L1 on disparity, averaged over images with weighted pixels.

    ``mode="lsq"``: the prediction is least-squares aligned to the target (:func:`align_lsq`)
    and the weighted mean ``|aligned − target|`` is taken. ``mode="median"``: prediction and
    target are each shifted by their median and divided by their mean absolute deviation
    (robust to outliers; invariant to positive scales only). Both are 0 for a prediction that
    is an exact affine function of the target (positive scale for ``"median"``).
    """
    w = weight.float()
    per_image = w.sum((1, 2, 3))
    if mode == "lsq":
        err = (w * (align_lsq(pred, target, w) - target).abs()).sum((1, 2, 3))
        used = per_image > 0
        return (err[used] / per_image[used]).mean() if used.any() else _zero(pred)
    if mode != "median":
        raise ValueError(f"ssi_loss mode must be 'lsq' or 'median', got {mode!r}")
    errs = []
    for b in range(pred.shape[0]):
        m = w[b] > 0
        if m.sum() >= 2:
            diff = _normalise_median(pred[b], m) - _normalise_median(target[b], m)
            errs.append((w[b] * diff.abs()).sum() / per_image[b])
    return torch.stack(errs).mean() if errs else _zero(pred)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale gradient matching (MiDaS eq. 11) of the residual ``pred − target``.

    At scale ``k`` the maps are subsampled every ``2**k`` pixels and the absolute x and y
    differences of the residual between neighbouring pixels that both have weight are summed;
    each scale is divided by its weighted pixel count and the scales are summed. Pass an
    *aligned* prediction (the residual of an affine-ambiguous one is meaningless). A constant
    offset between prediction and target has zero gradient, so it costs nothing.
    """
    total = _zero(pred)
    w = weight.float()
    for k in range(scales):
        step = 2 ** k
        r = (pred - target)[..., ::step, ::step]
        m = w[..., ::step, ::step]
        n = m.sum()
        if n <= 0:
            continue
        gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * m[..., :, 1:] * m[..., :, :-1]
        gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * m[..., 1:, :] * m[..., :-1, :]
        total = total + (gx.sum() + gy.sum()) / n
    return total


def sparse_loss(pred: torch.Tensor, sparse_m: torch.Tensor, valid: torch.Tensor, min_points: int = 8) -> torch.Tensor:
    """L1 against sparse LiDAR, unitless: mean ``|z·(s·pred + t) − 1|`` over the returns.

    ``sparse_m`` is depth in metres (0 = no return) and ``valid`` marks returns. The student's
    relative disparity is least-squares aligned per image to the metric inverse depth ``1/z``
    (1/m) of the returns; the error is then relative to that inverse depth, so near and far
    returns count alike and the value does not depend on the scene's scale. Images with fewer
    than ``min_points`` returns are skipped.
    """
    m = valid & (sparse_m > 0)
    counts = m.sum((1, 2, 3))
    use = counts >= min_points
    if not use.any():
        return _zero(pred)
    z = torch.where(m, sparse_m, torch.ones_like(sparse_m))
    inv = torch.where(m, 1.0 / z, torch.zeros_like(z))
    aligned = align_lsq(pred[use], inv[use], m[use])
    err = ((z[use] * aligned - 1.0).abs() * m[use]).sum((1, 2, 3)) / counts[use]
    return err.mean()


def ranking_loss(pred: torch.Tensor, pairs: torch.Tensor, pairs_valid: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """Ordinal ranking loss of DIW pairs on disparity.

    ``pairs`` is ``B×P×5`` ``(y_a, x_a, y_b, x_b, order)``, ``order = +1`` when A is farther
    (so A's disparity should be smaller), ``-1`` when A is closer, ``0`` equal. With
    ``d = sharpness·(pred_A − pred_B)`` (coordinates rounded to the nearest pixel) a pair costs
    ``softplus(order·d)`` when ordered and ``d²`` when equal; the mean over valid pairs is
    returned. ``sharpness`` compensates for disparity living in [0, 1].
    """
    if not pairs_valid.any():
        return _zero(pred)
    b, _, h, w = pred.shape
    p = torch.nan_to_num(pairs, nan=0.0)
    ya = torch.floor(p[..., 0] + 0.5).long().clamp(0, h - 1)
    xa = torch.floor(p[..., 1] + 0.5).long().clamp(0, w - 1)
    yb = torch.floor(p[..., 2] + 0.5).long().clamp(0, h - 1)
    xb = torch.floor(p[..., 3] + 0.5).long().clamp(0, w - 1)
    flat = pred.view(b, h * w)
    d = sharpness * (flat.gather(1, ya * w + xa) - flat.gather(1, yb * w + xb))
    order = p[..., 4]
    cost = torch.where(order == 0, d * d, F.softplus(order * d))
    return cost[pairs_valid].mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms of :func:`distill_loss` (0 switches a term off)."""

    ssi: float = 1.0
    grad: float = 0.5
    sparse: float = 0.5
    rank: float = 0.5
    use_conf: bool = True
    ssi_mode: str = "lsq"


def distill_loss(pred: torch.Tensor, batch: dict, w: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of a batch from :class:`depthdata.stream.ShardDataset` and its terms.

    Uses ``teacher`` (with ``teacher_valid``, times ``teacher_conf`` when ``use_conf`` and it is
    present), and ``sparse`` / ``pairs`` when the batch has them.
    """
    target = batch["teacher"]
    weight = batch["teacher_valid"].float()
    if w.use_conf and "teacher_conf" in batch:
        weight = weight * batch["teacher_conf"].clamp(0, 1)
    terms: dict[str, torch.Tensor] = {"ssi": ssi_loss(pred, target, weight, w.ssi_mode)}
    if w.grad:
        terms["grad"] = gradient_loss(align_lsq(pred, target, weight), target, weight)
    if w.sparse and "sparse" in batch:
        terms["sparse"] = sparse_loss(pred, batch["sparse"], batch["sparse_valid"])
    if w.rank and "pairs" in batch:
        terms["rank"] = ranking_loss(pred, batch["pairs"], batch["pairs_valid"])
    weights = {"ssi": w.ssi, "grad": w.grad, "sparse": w.sparse, "rank": w.rank}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
