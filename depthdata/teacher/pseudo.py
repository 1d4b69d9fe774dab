"""Pseudo-metric depth from relative disparity, for images without ground truth.

The teacher's output is affine-ambiguous disparity normalised per image to ``[0, 1]`` (larger =
nearer). To mesh an unlabeled image the LiDAR stage needs metres, so we pick a plausible scene
depth range ``[near_m, far_m]`` and map disparity linearly in *inverse depth* (the space in
which the teacher is affine-correct)::

    depth_m = 1 / (a · disp + b),   b = 1 / far_m,   a = 1 / near_m − 1 / far_m

so ``disp = 1`` lands at ``near_m`` and ``disp = 0`` at ``far_m``. ``near_m`` and ``far_m`` are
drawn log-uniformly from configurable ranges with a seeded generator: the same seed gives the
same metres, and :func:`pseudo_metric_range` returns the drawn pair for the lineage record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: default draw ranges in metres: near plane of a hand-held / car camera, far plane from a
#: room's back wall to a street's vanishing distance
DEFAULT_NEAR_RANGE_M = (0.5, 3.0)
DEFAULT_FAR_RANGE_M = (10.0, 80.0)


@dataclass(frozen=True)
class PseudoMetricRange:
    """The drawn mapping: disparity 1 → ``near_m``, disparity 0 → ``far_m`` (metres)."""

    near_m: float
    far_m: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(int(rng_or_seed))


def _check_range(name: str, rng_m: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(rng_m[0]), float(rng_m[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must be 0 < low <= high metres, got {rng_m}")
    return lo, hi


def pseudo_metric_range(rng_or_seed: np.random.Generator | int,
                        near_range_m: tuple[float, float] = DEFAULT_NEAR_RANGE_M,
                        far_range_m: tuple[float, float] = DEFAULT_FAR_RANGE_M) -> PseudoMetricRange:
    """Draw ``(near_m, far_m)`` log-uniformly from the two ranges (metres).

    Draws exactly two numbers from the generator (near first), so a caller that passes a
    generator gets the same range that :func:`pseudo_metric` with the same generator state uses.
    """
    near_lo, near_hi = _check_range("near_range_m", near_range_m)
    far_lo, far_hi = _check_range("far_range_m", far_range_m)
    if far_lo <= near_hi:
        raise ValueError(f"far_range_m {far_range_m} must lie beyond near_range_m {near_range_m}")
    g = _rng(rng_or_seed)
    u = g.random(2)
    near = float(np.exp(np.log(near_lo) + u[0] * (np.log(near_hi) - np.log(near_lo))))
    far = float(np.exp(np.log(far_lo) + u[1] * (np.log(far_hi) - np.log(far_lo))))
    return PseudoMetricRange(near_m=near, far_m=far)


def disparity01_to_depth(disparity01: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """``1 / (a·disp + b)`` with disparity 1 at ``near_m`` and 0 at ``far_m`` (float32 metres).

    NaN disparity (a pixel the teacher did not fill) stays NaN; values are clipped to ``[0, 1]``
    first so float16 rounding cannot push depth outside ``[near_m, far_m]``.
    """
    if not 0 < near_m < far_m:
        raise ValueError(f"need 0 < near_m < far_m, got near_m={near_m}, far_m={far_m}")
    d = np.clip(np.asarray(disparity01, dtype=np.float64), 0.0, 1.0)
    b = 1.0 / far_m
    a = 1.0 / near_m - b
    return (1.0 / (a * d + b)).astype(np.float32)


def pseudo_metric(disparity01: np.ndarray, rng_or_seed: np.random.Generator | int,
                  near_range_m: tuple[float, float] = DEFAULT_NEAR_RANGE_M,
                  far_range_m: tuple[float, float] = DEFAULT_FAR_RANGE_M) -> np.ndarray:
    """Pseudo-metric depth (float32 metres, same shape) from normalised disparity (larger = nearer).

    ``near_m``/``far_m`` are drawn by :func:`pseudo_metric_range` with the same arguments; record
    the seed and those arguments (or the drawn range) as lineage. Deterministic for an int seed.
    """
    r = pseudo_metric_range(rng_or_seed, near_range_m, far_range_m)
    return disparity01_to_depth(disparity01, r.near_m, r.far_m)
