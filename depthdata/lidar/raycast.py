"""Sensor pose, the beams a scan fires into the camera's view, and ray casting with Open3D.

The sensor frame is x forward, y left, z up (:mod:`depthdata.lidar.beams`); the camera frame x
right, y down, z forward (:mod:`depthdata.lidar.camera`). A level sensor with zero rotation
looks along the camera's z axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial.transform import Rotation

from depthdata.lidar.beams import BeamModel
from depthdata.lidar.mesh import Mesh
from depthdata.sample import Intrinsics

#: Camera-frame images of the sensor's x (forward), y (left), z (up) axes, as columns.
SENSOR_TO_CAMERA_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

#: Beams whose direction projects up to this fraction of the image size outside it are still
#: cast: the sensor sits away from the camera, so near surfaces seen at the image border are
#: reached by beams pointing slightly outside the camera's field of view.
RAY_MARGIN = 0.1


@dataclass(frozen=True)
class SensorPose:
    """Sensor origin in the camera frame (metres) and the rotation taking sensor-frame vectors
    to camera-frame vectors."""

    origin: np.ndarray
    rotation: np.ndarray


def sensor_pose(offset_m: tuple[float, float, float], rotation_deg: tuple[float, float, float]) -> SensorPose:
    """Pose from a camera-frame offset (metres) and (roll, pitch, yaw) degrees about the
    sensor's own x, y, z axes, applied in that order (positive pitch tilts the beams down)."""
    extra = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    return SensorPose(np.asarray(offset_m, dtype=np.float64), SENSOR_TO_CAMERA_AXES @ extra)


def beam_directions(model: BeamModel, azimuth_phase_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions (sensor frame) of one full revolution, ``N×3``, and each one's beam
    index (0 = top beam). Azimuths are ``phase + k·step`` degrees."""
    elev = np.radians(np.asarray(model.elevations_deg))
    az = np.radians(azimuth_phase_deg + model.azimuth_step_deg * np.arange(model.azimuths_per_rev))
    e, a = np.meshgrid(elev, az, indexing="ij")
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    beam = np.repeat(np.arange(len(elev)), len(az))
    return dirs, beam


def frustum_rays(model: BeamModel, pose: SensorPose, intrinsics: Intrinsics, height: int, width: int,
                 azimuth_phase_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rays ``N×6`` float32 ``(origin, unit direction)`` in the camera frame for the beams
    whose direction falls inside the camera's view (plus :data:`RAY_MARGIN`), and their beam
    indices."""
    dirs, beam = beam_directions(model, azimuth_phase_deg)
    d = dirs @ pose.rotation.T
    ahead = d[:, 2] > 1e-6
    d, beam = d[ahead], beam[ahead]
    u = intrinsics.fx * d[:, 0] / d[:, 2] + intrinsics.cx
    v = intrinsics.fy * d[:, 1] / d[:, 2] + intrinsics.cy
    mx, my = RAY_MARGIN * width, RAY_MARGIN * height
    inside = (u >= -0.5 - mx) & (u <= width - 0.5 + mx) & (v >= -0.5 - my) & (v <= height - 0.5 + my)
    d, beam = d[inside], beam[inside]
    rays = np.concatenate([np.broadcast_to(pose.origin, d.shape), d], axis=1).astype(np.float32)
    return rays, beam


def reachable(mesh: Mesh, pose: SensorPose, model: BeamModel) -> Mesh:
    """The triangles a beam of ``model`` can hit: those whose elevation range seen from the
    sensor contains a beam's elevation.

    Why: building Embree's BVH costs time in proportion to the triangles, and a beam sweeps a
    cone of fixed elevation, so a dense pixel mesh has most of its triangles between two cones.
    Pruning them gives the same hits several times faster. The elevation over a triangle
    exceeds its corners' range by at most about ``size²`` radians, where ``size`` (its
    angular extent seen from the sensor) is bounded by its corners' elevation range plus
    azimuth range; the range is widened by that plus float32 rounding.
    """
    if mesh.empty:
        return mesh
    # float32 and per-column arithmetic: this runs on ~600k triangles per image, and numpy's
    # small-axis reductions and tiny matmuls are several times slower than elementwise ops
    p = mesh.vertices - pose.origin.astype(np.float32)
    rot = pose.rotation.astype(np.float32)
    x, y, z = (p[:, 0] * rot[0, k] + p[:, 1] * rot[1, k] + p[:, 2] * rot[2, k] for k in range(3))
    elev = np.arctan2(z, np.hypot(x, y))[mesh.triangles]
    azim = np.arctan2(y, x)[mesh.triangles]

    def span(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.minimum(np.minimum(a[:, 0], a[:, 1]), a[:, 2]),
                np.maximum(np.maximum(a[:, 0], a[:, 1]), a[:, 2]))

    emin, emax = span(elev)
    amin, amax = span(azim)
    size = (emax - emin) + (amax - amin)
    slack = size * size + np.float32(1e-5)
    beams = np.sort(np.radians(np.asarray(model.elevations_deg))).astype(np.float32)
    lo = np.searchsorted(beams, emin - slack, side="left")
    hi = np.searchsorted(beams, emax + slack, side="right")
    return Mesh(mesh.vertices, mesh.triangles[hi > lo])


def cast(mesh: Mesh, rays: np.ndarray, threads: int = 0) -> np.ndarray:
    """Distance (metres, along unit directions) to the first hit of each ray; ``inf`` = miss.
    ``threads``: Embree build and trace threads (0 = Open3D's choice)."""
    if mesh.empty or len(rays) == 0:
        return np.full(len(rays), np.inf, np.float32)
    scene = o3d.t.geometry.RaycastingScene(nthreads=threads)
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(mesh.triangles, np.uint32)))
    return scene.cast_rays(o3d.core.Tensor(rays), nthreads=threads)["t_hit"].numpy()
