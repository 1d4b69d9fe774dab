"""The canonical record every source yields and every later stage consumes.

Conventions (checked at construction, see :meth:`Sample.validate`):

* ``rgb``: ``uint8`` array ``H×W×3`` in RGB channel order.
* ``depth``: ``float32`` array ``H×W`` in **metres**; invalid pixels are ``NaN``. Valid pixels
  are finite and non-negative. Consumers treat ``0`` as invalid too (see :func:`valid_depth`):
  some formats encode holes as 0, never as a magic large number.
* ``pairs``: ``float32`` array ``P×5`` of ordinal point pairs, columns
  ``(y_a, x_a, y_b, x_b, order)``. Coordinates are **0-based** pixel positions in *this*
  image (after any resizing; pixel centres at integers, so ``0 <= y <= H-1``). ``order`` is
  ``+1`` when point A is farther than B, ``-1`` when A is closer (DIW's ``>`` / ``<``), ``0``
  when equal.
* ``intrinsics``: pinhole camera of this image in pixels (see :class:`Intrinsics`).
* ``meta``: JSON-serialisable dict; ``dataset``, ``split`` and ``source_uri`` are required, plus
  optional ``scene``, ``original_size`` (H, W before resizing) and per-source fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from depthdata.errors import SampleError

PAIR_COLUMNS = ("y_a", "x_a", "y_b", "x_b", "order")
REQUIRED_META = ("dataset", "split", "source_uri")


def make_sample_id(dataset: str, split: str, key: str) -> str:
    """Stable, human-readable id: ``dataset/split/key``.

    ``key`` is the source's own stable key (a relative path without extension, an index into a
    ``.mat`` file, ...), so re-reading the same source always gives the same id.
    """
    for name, part in (("dataset", dataset), ("split", split), ("key", key)):
        if not part or not isinstance(part, str):
            raise ValueError(f"sample id part {name!r} must be a non-empty string, got {part!r}")
    for name, part in (("dataset", dataset), ("split", split)):
        if "/" in part:
            raise ValueError(f"sample id part {name!r} must not contain '/': {part!r}")
    return f"{dataset}/{split}/{key}"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of the image they belong to.

    ``fx``/``fy`` are focal lengths in pixels; ``(cx, cy)`` the principal point in 0-based
    pixel coordinates with pixel centres at integers. A point ``(X, Y, Z)`` in camera
    coordinates (metres; x right, y down, z forward) projects to ``u = fx·X/Z + cx``,
    ``v = fy·Y/Z + cy``.
    """

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise ValueError(f"intrinsics must be finite, got {vals}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    def matrix(self) -> np.ndarray:
        """The 3×3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, sy: float, sx: float, oy: float = 0.0, ox: float = 0.0) -> "Intrinsics":
        """Intrinsics after the image is scaled by ``(sy, sx)`` then shifted by ``(oy, ox)`` px.

        Uses the pixel-centre convention: a pixel at ``u`` maps to ``(u + 0.5)·sx - 0.5 + ox``.
        """
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5 + ox,
            cy=(self.cy + 0.5) * sy - 0.5 + oy,
        )

    def to_list(self) -> list[float]:
        return [float(self.fx), float(self.fy), float(self.cx), float(self.cy)]


@dataclass(frozen=True)
class Sample:
    """One record. Construction validates it and raises :class:`SampleError` on violation."""

    sample_id: str
    rgb: np.ndarray
    depth: np.ndarray | None = None
    pairs: np.ndarray | None = None
    intrinsics: Intrinsics | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def with_(self, **changes: Any) -> "Sample":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def validate(self) -> None:
        sid = self.sample_id if isinstance(self.sample_id, str) else repr(self.sample_id)
        if not isinstance(self.sample_id, str) or not self.sample_id:
            raise SampleError(sid, "sample_id must be a non-empty string")
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray):
            raise SampleError(sid, f"rgb must be a numpy array, got {type(rgb).__name__}")
        if rgb.dtype != np.uint8:
            raise SampleError(sid, f"rgb must be uint8, got {rgb.dtype}")
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise SampleError(sid, f"rgb must be H×W×3, got shape {rgb.shape}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise SampleError(sid, f"rgb is empty: shape {rgb.shape}")
        h, w = rgb.shape[:2]
        if self.depth is not None:
            _check_depth(sid, self.depth, (h, w))
        if self.pairs is not None:
            _check_pairs(sid, self.pairs, (h, w))
        if self.intrinsics is not None and not isinstance(self.intrinsics, Intrinsics):
            raise SampleError(sid, f"intrinsics must be Intrinsics, got {type(self.intrinsics).__name__}")
        if not isinstance(self.meta, dict):
            raise SampleError(sid, f"meta must be a dict, got {type(self.meta).__name__}")
        missing = [k for k in REQUIRED_META if k not in self.meta]
        if missing:
            raise SampleError(sid, f"meta lacks required keys {missing}")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise SampleError(sid, f"meta is not JSON-serialisable: {exc}") from None


def _check_depth(sid: str, depth: Any, shape: tuple[int, int]) -> None:
    if not isinstance(depth, np.ndarray):
        raise SampleError(sid, f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.dtype != np.float32:
        raise SampleError(sid, f"depth must be float32 metres, got {depth.dtype}")
    if depth.shape != shape:
        raise SampleError(sid, f"depth shape {depth.shape} differs from the image's {shape}")
    if np.isinf(depth).any():
        raise SampleError(sid, "depth has infinite values (invalid pixels must be NaN)")
    # NaN compares False, so holes pass without building a finite mask (a 480×640 mask and
    # gather cost ~0.6 ms, 10 % of reading a sample; benchmarks/bench_sources.py)
    if (depth < 0).any():
        raise SampleError(sid, f"depth has negative values (min {float(np.nanmin(depth)):.4g} m)")


def _check_pairs(sid: str, pairs: Any, shape: tuple[int, int]) -> None:
    if not isinstance(pairs, np.ndarray):
        raise SampleError(sid, f"pairs must be a numpy array, got {type(pairs).__name__}")
    if pairs.dtype != np.float32 or pairs.ndim != 2 or pairs.shape[1] != 5:
        raise SampleError(sid, f"pairs must be float32 P×5 {PAIR_COLUMNS}, got {pairs.dtype} {pairs.shape}")
    if not np.isfinite(pairs).all():
        raise SampleError(sid, "pairs have non-finite values")
    h, w = shape
    ys = pairs[:, [0, 2]]
    xs = pairs[:, [1, 3]]
    if (ys < 0).any() or (ys > h - 1).any() or (xs < 0).any() or (xs > w - 1).any():
        raise SampleError(sid, f"pair coordinates outside the {h}×{w} image (0-based, y first)")
    if not np.isin(pairs[:, 4], (-1.0, 0.0, 1.0)).all():
        raise SampleError(sid, "pair order must be +1 (A farther), -1 (A closer) or 0")


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Boolean mask of usable depth pixels: finite and strictly positive."""
    return np.isfinite(depth) & (depth > 0)
