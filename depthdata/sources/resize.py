"""Bring a record to the catalog's stored resolution, keeping every coordinate consistent.

Modes (``DatasetConfig.resize``):

* ``resize``: scale each axis independently to ``(H, W)`` (aspect ratio may change);
* ``fit_pad``: scale uniformly so the whole image fits, centre it, pad the rest
  (pad: ``rgb`` 0, ``depth`` NaN);
* ``center_crop``: scale uniformly so the image covers ``(H, W)``, cut the centre.

Coordinates use the pixel-centre convention of :meth:`depthdata.sample.Intrinsics.scaled`: a
0-based position ``u`` maps to ``(u + 0.5)·s − 0.5 + offset``. OpenCV's resize samples with the
same convention, so intrinsics and ordinal pairs keep pointing at the same scene points.

RGB is resampled with area averaging when shrinking and bilinear when enlarging. Depth
(metres) is never interpolated across holes: ``nearest`` picks one source pixel (exact pixel
centres, ``cv2.INTER_NEAREST_EXACT``); ``valid_mean`` averages only the valid pixels under each
output pixel's footprint and leaves the output NaN when fewer than half of them are valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from depthdata.sample import Sample, valid_depth

ResizeMode = Literal["resize", "fit_pad", "center_crop"]
DepthFilter = Literal["nearest", "valid_mean"]
MODES: tuple[str, ...] = get_args(ResizeMode)
DEPTH_FILTERS: tuple[str, ...] = get_args(DepthFilter)


@dataclass(frozen=True)
class Geometry:
    """How an ``h×w`` image becomes ``H×W``: scale to ``scaled_size`` then place at ``offset``.

    ``offset`` ``(oy, ox)`` is where the scaled image's top-left pixel lands in the output, in
    pixels: positive = padding before it, negative = cropped away.
    """

    scale: tuple[float, float]  # (sy, sx), scaled size / original size
    scaled_size: tuple[int, int]  # (h', w') of the intermediate scaled image
    offset: tuple[int, int]  # (oy, ox)
    out_size: tuple[int, int]  # (H, W)

    def map_points(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel positions in the original image → positions in the output image."""
        sy, sx = self.scale
        oy, ox = self.offset
        return (y + 0.5) * sy - 0.5 + oy, (x + 0.5) * sx - 0.5 + ox


def plan(in_size: tuple[int, int], out_size: tuple[int, int], mode: str) -> Geometry:
    """The :class:`Geometry` of ``mode`` taking ``in_size`` ``(h, w)`` to ``out_size`` ``(H, W)``."""
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(MODES)}")
    h, w = in_size
    H, W = out_size
    if min(h, w, H, W) < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    if mode == "resize":
        sh, sw = H, W
    else:
        pick = min if mode == "fit_pad" else max
        s = pick(H / h, W / w)
        # Rounding can leave the covering side one pixel short; clamp so fit never exceeds and
        # cover never falls below the target.
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        sh, sw = (min(sh, H), min(sw, W)) if mode == "fit_pad" else (max(sh, H), max(sw, W))
    offset = ((H - sh) // 2, (W - sw) // 2)
    return Geometry(scale=(sh / h, sw / w), scaled_size=(sh, sw), offset=offset, out_size=(H, W))


def _place(img: np.ndarray, geo: Geometry, fill: float) -> np.ndarray:
    """Pad or crop the scaled image into the output canvas according to ``geo.offset``."""
    H, W = geo.out_size
    oy, ox = geo.offset
    if (oy, ox) == (0, 0) and img.shape[:2] == (H, W):
        return img
    out = np.full((H, W) + img.shape[2:], fill, dtype=img.dtype)
    sh, sw = img.shape[:2]
    # source window [sy0, sy0+n) goes to destination [dy0, dy0+n)
    dy0, sy0 = max(oy, 0), max(-oy, 0)
    dx0, sx0 = max(ox, 0), max(-ox, 0)
    nh, nw = min(H - dy0, sh - sy0), min(W - dx0, sw - sx0)
    out[dy0:dy0 + nh, dx0:dx0 + nw] = img[sy0:sy0 + nh, sx0:sx0 + nw]
    return out


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB to ``size`` ``(h, w)``: area averaging when shrinking, bilinear when enlarging."""
    import cv2  # here, not at import: the catalog imports this module's modes, and cv2 rewrites the environment

    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    interp = cv2.INTER_AREA if h * w < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def resize_depth(depth: np.ndarray, size: tuple[int, int], depth_filter: str = "nearest") -> np.ndarray:
    """float32 depth (metres, NaN/0 invalid) to ``size`` ``(h, w)`` without mixing in holes.

    ``nearest``: one source pixel per output pixel (invalid stays invalid, no new values).
    ``valid_mean``: mean of the valid source pixels under the output pixel's area footprint;
    NaN where less than half the footprint is valid. When enlarging, a footprint is smaller
    than a source pixel, so ``valid_mean`` falls back to ``nearest``.
    """
    import cv2  # see resize_rgb

    if depth_filter not in DEPTH_FILTERS:
        raise ValueError(f"unknown depth filter {depth_filter!r}; expected one of {', '.join(DEPTH_FILTERS)}")
    h, w = size
    if depth.shape == (h, w):
        return depth
    shrinking = h <= depth.shape[0] and w <= depth.shape[1]
    if depth_filter == "nearest" or not shrinking:
        out = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return out.astype(np.float32, copy=False)
    valid = valid_depth(depth)
    weight = valid.astype(np.float32)
    summed = cv2.resize(np.where(valid, depth, 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    frac = cv2.resize(weight, (w, h), interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = summed / frac
    out[frac < 0.5] = np.nan
    return out.astype(np.float32, copy=False)


def transform_pairs(pairs: np.ndarray, geo: Geometry) -> tuple[np.ndarray, int]:
    """Map ``P×5`` pairs into the output image; drop pairs with a point outside it.

    Returns the kept pairs (float32) and how many were dropped. A point belongs to the output
    when it falls inside an output pixel (``-0.5 <= y < H - 0.5``); positions are then clamped
    to the pixel-centre range ``[0, H-1]`` (a shrunk border pixel's centre moves by < 0.5 px).
    """
    H, W = geo.out_size
    ya, xa = geo.map_points(pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64))
    yb, xb = geo.map_points(pairs[:, 2].astype(np.float64), pairs[:, 3].astype(np.float64))
    ys = np.stack([ya, yb], 1)
    xs = np.stack([xa, xb], 1)
    inside = ((ys >= -0.5) & (ys < H - 0.5) & (xs >= -0.5) & (xs < W - 0.5)).all(axis=1)
    out = np.stack([ya, xa, yb, xb, pairs[:, 4]], 1)[inside]
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, H - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, W - 1)
    return out.astype(np.float32), int((~inside).sum())


def resize_sample(sample: Sample, size: tuple[int, int], mode: str = "resize",
                  depth_filter: str = "nearest") -> Sample:
    """``sample`` at ``size`` ``(H, W)`` pixels using ``mode`` (see the module doc).

    ``meta["original_size"]`` keeps the size the source delivered (an earlier value is kept if
    the record was already resized); ``meta["resize"]`` records mode, scale and offset;
    ``meta["pairs_dropped"]`` counts pairs cut away by ``center_crop``.
    """
    H, W = int(size[0]), int(size[1])
    h, w = sample.height, sample.width
    geo = plan((h, w), (H, W), mode)
    meta = dict(sample.meta)
    meta.setdefault("original_size", [h, w])
    meta["resize"] = {"mode": mode, "scale": list(geo.scale), "offset": list(geo.offset)}

    rgb = _place(resize_rgb(sample.rgb, geo.scaled_size), geo, 0)
    depth = None
    if sample.depth is not None:
        depth = _place(resize_depth(sample.depth, geo.scaled_size, depth_filter), geo, np.nan)
    pairs = None
    if sample.pairs is not None:
        pairs, dropped = transform_pairs(sample.pairs, geo)
        if dropped:
            meta["pairs_dropped"] = meta.get("pairs_dropped", 0) + dropped
    intr = None
    if sample.intrinsics is not None:
        intr = sample.intrinsics.scaled(geo.scale[0], geo.scale[1], geo.offset[0], geo.offset[1])
    return sample.with_(rgb=np.ascontiguousarray(rgb), depth=depth, pairs=pairs, intrinsics=intr, meta=meta)
