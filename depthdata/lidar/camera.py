"""Camera model: sampled intrinsics, depth validity, back-projection and projection.

Camera frame: x right, y down, z forward, metres. Pixel coordinates are 0-based with pixel
centres at integers (:class:`depthdata.sample.Intrinsics`). Depth is the z coordinate in
metres (not the range along the ray).
"""

from __future__ import annotations

import math

import numpy as np

from depthdata.sample import Intrinsics, valid_depth


def sample_intrinsics(height: int, width: int, rng: np.random.Generator, hfov_deg: tuple[float, float],
                      principal_jitter: float) -> Intrinsics:
    """Square-pixel intrinsics with a horizontal field of view drawn uniformly from
    ``hfov_deg`` (degrees) and the principal point jittered uniformly by up to
    ``principal_jitter`` × width / height pixels around the image centre."""
    hfov = math.radians(rng.uniform(*hfov_deg))
    f = (width / 2.0) / math.tan(hfov / 2.0)
    jx, jy = rng.uniform(-principal_jitter, principal_jitter, size=2)
    return Intrinsics(fx=f, fy=f, cx=float((width - 1) / 2.0 + jx * width), cy=float((height - 1) / 2.0 + jy * height))


def depth_mask(depth_m: np.ndarray, max_depth_m: float) -> np.ndarray:
    """Pixels usable for meshing: finite, > 0 and <= ``max_depth_m`` metres."""
    return valid_depth(depth_m) & (depth_m <= max_depth_m)


def backproject(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Every pixel as a camera-frame point: ``H×W×3`` float64 metres (invalid depth stays NaN/0).

    Written with numpy rather than Open3D's ``create_from_depth_image`` because the grid
    mesher needs the point of every pixel at its pixel index, which Open3D does not keep.
    """
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth_m.astype(np.float64)
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=-1)


def project(points: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points ``N×3`` (metres, z > 0) to pixel coordinates ``(u, v)`` (float)."""
    z = points[:, 2]
    return intrinsics.fx * points[:, 0] / z + intrinsics.cx, intrinsics.fy * points[:, 1] / z + intrinsics.cy


def zbuffer(points: np.ndarray, intrinsics: Intrinsics, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse depth image ``H×W`` float32 metres (0 = no return) of camera-frame points, and
    the indices into ``points`` of the points that made it into the image.

    Each point lands on its nearest pixel centre; where several land on one pixel the nearest
    (smallest z) wins. Points behind the camera or outside the image are dropped.
    """
    out = np.zeros((height, width), np.float32)
    ahead = np.flatnonzero(points[:, 2] > 0)
    if len(ahead) == 0:
        return out, ahead
    u, v = project(points[ahead], intrinsics)
    col, row = np.rint(u), np.rint(v)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    idx = ahead[inside]
    flat = (row[inside] * width + col[inside]).astype(np.int64)
    z = points[idx, 2]
    # sort by pixel, then by depth: the first entry of each pixel is the nearest point
    order = np.lexsort((z, flat))
    flat, z, idx = flat[order], z[order], idx[order]
    first = np.ones(len(flat), bool)
    first[1:] = flat[1:] != flat[:-1]
    out.reshape(-1)[flat[first]] = z[first]
    return out, idx[first]
