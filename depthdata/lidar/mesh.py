"""Meshing a metric depth map into a triangle mesh in the camera frame (metres).

Two meshers, selected by ``LidarConfig.mesher``:

* :func:`grid_mesh` triangulates the pixel grid directly (two triangles per 2×2 cell) and
  drops triangles spanning a depth discontinuity. Fast, and exact on piecewise-planar scenes
  up to the pixel sampling.
* :func:`poisson_mesh` runs Open3D's screened Poisson reconstruction on the back-projected
  points (normals oriented toward the camera), trims low-density vertices and crops the
  result to the camera frustum and the observed depth range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from depthdata.lidar.camera import backproject, project
from depthdata.sample import Intrinsics

#: Poisson vertices projecting this fraction of the image size outside it are cropped. The
#: margin keeps faces that straddle the image border, whose hits still land inside it.
FRUSTUM_MARGIN = 0.02


@dataclass(frozen=True)
class Mesh:
    """Triangle mesh in the camera frame: ``vertices`` V×3 float32 metres, ``triangles`` T×3 int32."""

    vertices: np.ndarray
    triangles: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.triangles) == 0


def grid_mesh(depth_m: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics, max_rel_jump: float) -> Mesh:
    """Two triangles per 2×2 pixel cell whose corners are all valid (``mask``) and whose
    largest corner depth is at most ``1 + max_rel_jump`` times the smallest.

    Hand-written with numpy: Open3D has no organised-grid triangulation, and this is a few
    vectorised index operations. Vertex ``i`` is pixel ``(i // W, i % W)``.
    """
    h, w = depth_m.shape
    points = backproject(depth_m, intrinsics)
    points[~mask] = 0.0
    idx = np.arange(h * w, dtype=np.int32).reshape(h, w)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    z = np.where(mask, depth_m, np.nan).reshape(-1)[tris]
    # column-wise min/max: numpy's reductions over a length-3 axis are several times slower
    z0, z1, z2 = z[:, 0], z[:, 1], z[:, 2]
    with np.errstate(invalid="ignore"):
        # comparisons with NaN are False, so triangles touching an invalid pixel drop out
        keep = np.maximum(np.maximum(z0, z1), z2) <= np.minimum(np.minimum(z0, z1), z2) * np.float32(1.0 + max_rel_jump)
    return Mesh(points.reshape(-1, 3).astype(np.float32), tris[keep])


def poisson_mesh(depth_m: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics, octree_depth: int,
                 normal_knn: int, density_quantile: float, depth_margin: float, threads: int = 0) -> Mesh:
    """Screened Poisson surface of the valid pixels' points.

    Normals come from ``normal_knn`` nearest neighbours, oriented toward the camera (the
    origin), so the surface's outside faces the camera. Vertices below the
    ``density_quantile`` of Poisson's density (where the solver extrapolated with little
    support), beyond the observed depth range widened by ``depth_margin`` (a fraction), or
    outside the image (plus :data:`FRUSTUM_MARGIN`) are removed with their faces.
    ``threads``: 0 = Open3D's choice.
    """
    h, w = depth_m.shape
    points = backproject(depth_m, intrinsics)[mask]
    if len(points) < max(normal_knn, 4):
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(normal_knn))
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=octree_depth, n_threads=threads if threads > 0 else -1)
    verts = np.asarray(mesh.vertices)
    if len(verts) == 0:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    dens = np.asarray(densities)
    z = verts[:, 2]
    zmin, zmax = points[:, 2].min(), points[:, 2].max()
    remove = (dens < np.quantile(dens, density_quantile)) if density_quantile > 0 else np.zeros(len(verts), bool)
    remove |= (z < zmin * (1.0 - depth_margin)) | (z > zmax * (1.0 + depth_margin))
    front = ~remove
    u, v = project(verts[front], intrinsics)
    mx, my = FRUSTUM_MARGIN * w, FRUSTUM_MARGIN * h
    outside = (u < -0.5 - mx) | (u > w - 0.5 + mx) | (v < -0.5 - my) | (v > h - 0.5 + my)
    remove[np.flatnonzero(front)[outside]] = True
    mesh.remove_vertices_by_mask(remove)
    return Mesh(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.int32))
