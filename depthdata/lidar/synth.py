"""One image's synthetic LiDAR scan: :func:`synthesize` is a pure function of its inputs.

depth (metres) → mesh in the camera frame → beams of one revolution inside the camera's view,
cast from the sensor pose → range noise and dropout → points back in the camera frame →
z-buffered projection → sparse depth image (float32 metres, z in the camera frame, 0 = no
return) of the input's resolution.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from depthdata.errors import DepthdataError
from depthdata.lidar.beams import beam_model_for
from depthdata.lidar.camera import depth_mask, sample_intrinsics, zbuffer
from depthdata.lidar.config import LidarConfig
from depthdata.sample import Intrinsics


class LidarInputError(DepthdataError):
    """The depth map handed to the synthesiser cannot be used (wrong shape or type)."""


def _doc(text: str) -> Any:
    # the manifest column's description, read by the stage's column table (docs are generated)
    return field(metadata={"doc": text})


@dataclass(frozen=True)
class SynthStats:
    """Per-sample statistics and lineage of one scan (manifest row columns)."""

    returns: int = _doc("pixels of the sparse image holding a return")
    coverage: float = _doc("returns / (H·W)")
    mean_range_m: float = _doc("mean sensor range of the returns, metres; NaN without returns")
    rays: int = _doc("beams cast inside the camera's view")
    hits: int = _doc("beams that hit the mesh")
    dropped: int = _doc("hits lost to dropout")
    triangles: int = _doc("triangles of the mesh")
    reason: str = _doc("why there are no returns (empty when there are)")
    seed: int = _doc("the sample's own seed (from `lidar.seed` and the sample id)")
    beam_model: str = _doc("beam-model preset name")
    mesher: str = _doc("meshing method (`grid` or `poisson`)")
    fx: float = _doc("focal length x used, pixels of the stored image")
    fy: float = _doc("focal length y used, pixels")
    cx: float = _doc("principal point x used, 0-based pixels")
    cy: float = _doc("principal point y used, 0-based pixels")
    intrinsics_sampled: bool = _doc("the intrinsics were drawn from `hfov_deg` / `principal_jitter` "
                                    "(unknown at the source)")
    azimuth_phase_deg: float = _doc("azimuth phase of the scan, degrees")
    seconds: float = _doc("time to synthesise the sample, seconds")

    def row(self) -> dict[str, Any]:
        return asdict(self)


def sample_seed(seed: int, sample_id: str, purpose: str = "lidar") -> int:
    """Per-sample seed (63-bit) from the stage seed and the sample id, so results do not
    depend on shard layout; ``purpose`` gives independent streams for other draws."""
    digest = hashlib.blake2b(f"{purpose}:{seed}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def synthesize(depth_m: np.ndarray, intrinsics: Intrinsics | None, config: LidarConfig, seed: int,
               threads: int = 0) -> tuple[np.ndarray, SynthStats]:
    """Sparse LiDAR depth of one ``H×W`` depth map in metres (NaN or 0 = invalid).

    ``intrinsics`` of the depth map's pixels, or ``None`` to draw them from ``seed``.
    Returns the sparse image (float32 metres, 0 = no return, same ``H×W``) and its stats. A
    depth map without usable pixels gives zero returns and a ``reason``, not an error.
    ``threads``: Open3D threads for Poisson and ray casting (0 = Open3D's choice).
    """
    # Open3D loads with the first scan, not with this module: planning a build and the stage's
    # column table need SynthStats only, and a process that imported Open3D has a changed environment
    from depthdata.lidar.mesh import grid_mesh, poisson_mesh
    from depthdata.lidar.raycast import cast, frustum_rays, reachable, sensor_pose

    t0 = time.perf_counter()
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2 or depth_m.shape[0] < 2 or depth_m.shape[1] < 2:
        raise LidarInputError(f"depth must be an H×W array of at least 2×2 pixels, got shape {depth_m.shape}")
    if not np.issubdtype(depth_m.dtype, np.floating):
        raise LidarInputError(f"depth must be floating-point metres, got {depth_m.dtype}")
    depth_m = depth_m.astype(np.float32, copy=False)
    h, w = depth_m.shape
    model = beam_model_for(config)
    rng_cam, rng_phase, rng_noise, rng_drop = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    sampled = intrinsics is None
    if intrinsics is None:
        intrinsics = sample_intrinsics(h, w, rng_cam, config.hfov_deg, config.principal_jitter)
    phase = float(rng_phase.uniform(0.0, model.azimuth_step_deg))
    counts = {"rays": 0, "hits": 0, "dropped": 0, "triangles": 0}

    def finish(reason: str, sparse: np.ndarray | None = None,
               ranges: np.ndarray | None = None) -> tuple[np.ndarray, SynthStats]:
        sparse = np.zeros((h, w), np.float32) if sparse is None else sparse
        returns = int(np.count_nonzero(sparse))
        stats = SynthStats(
            returns=returns, coverage=returns / (h * w),
            mean_range_m=float(ranges.mean()) if returns else float("nan"),
            **counts, reason=reason if returns == 0 else "", seed=int(seed), beam_model=model.name,
            mesher=config.mesher, fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy,
            intrinsics_sampled=sampled, azimuth_phase_deg=phase, seconds=time.perf_counter() - t0,
        )
        return sparse, stats

    mask = depth_mask(depth_m, config.max_depth_m)
    if not mask.any():
        return finish(f"no valid depth pixels (finite, > 0 and <= {config.max_depth_m:g} m)")
    if config.mesher == "grid":
        mesh = grid_mesh(depth_m, mask, intrinsics, config.grid_max_rel_jump)
    else:
        mesh = poisson_mesh(depth_m, mask, intrinsics, config.poisson_depth, config.poisson_normal_knn,
                            config.poisson_density_quantile, config.poisson_depth_margin, threads)
    counts["triangles"] = len(mesh.triangles)
    if mesh.empty:
        return finish(f"the {config.mesher} mesh is empty (too few valid pixels, or all across depth jumps)")
    pose = sensor_pose(config.sensor_offset_m, config.sensor_rotation_deg)
    rays, _ = frustum_rays(model, pose, intrinsics, h, w, phase)
    counts["rays"] = len(rays)
    if len(rays) == 0:
        return finish(f"no beam of {model.name} points into the camera's view")
    t = cast(reachable(mesh, pose, model), rays, threads).astype(np.float64)
    hit = np.isfinite(t) & (t >= model.min_range_m) & (t <= model.max_range_m)
    counts["hits"] = int(hit.sum())
    if not hit.any():
        return finish(f"no beam hit the scene within {model.min_range_m:g}-{model.max_range_m:g} m")
    rays, r = rays[hit].astype(np.float64), t[hit]
    # draw noise and dropout for every hit (not only kept ones) so that changing one setting
    # does not reshuffle the other's random numbers
    r = r + rng_noise.normal(0.0, model.range_sigma_m * config.range_noise_scale, size=len(r))
    p_drop = config.dropout_random + config.dropout_far * (r / model.max_range_m) ** 2
    keep = (rng_drop.random(len(r)) >= p_drop) & (r > 0)
    counts["dropped"] = int((~keep).sum())
    points = rays[keep, :3] + r[keep, None] * rays[keep, 3:]
    sparse, winners = zbuffer(points, intrinsics, h, w)
    return finish("every return was dropped or fell outside the image", sparse, r[keep][winners])
