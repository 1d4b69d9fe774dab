"""LiDAR synthesis: seconds per 480×640 image on one thread for ``grid`` and ``poisson`` (octree
depth 8 and 9), side by side, and how far their sparse depths disagree.

Scene: a procedural room of planes (floor, ceiling, three walls) with two boxes and a sphere,
rendered to exact depth with Open3D's ray caster through a 65°-wide pinhole camera. HDL-64E,
noise and dropout off, the default roof-rig offset, one seed for all cases (same beams).

Cases (alternating A B A B after a warm-up):

* ``grid``, ``poisson8``, ``poisson9``: :func:`depthdata.lidar.synth.synthesize`, ``threads=1``;
* ``bare_o3d_poisson8``: only the Open3D calls the ``poisson`` path makes, on pre-computed
  points and rays: ``estimate_normals``, ``orient_normals_towards_camera_location``,
  ``create_from_point_cloud_poisson(depth=8)``, ``remove_vertices_by_mask`` (density trim
  only), then a ``RaycastingScene`` of that mesh and ``cast_rays`` (no frustum crop, no
  triangle pruning).

Peak memory per worker: each mesher runs once in a fresh process; the peak resident memory
during the call (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), its
rise over the resident memory before the call, and the peak of Python-side (numpy)
allocations (tracemalloc).
"""

from __future__ import annotations

import os

# one thread everywhere, set before numpy / Open3D load their thread pools
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from benchmarks.harness import alternate, goal, summary, write  # noqa: E402
from depthdata.lidar.beams import PRESETS  # noqa: E402
from depthdata.lidar.camera import backproject, depth_mask  # noqa: E402
from depthdata.lidar.config import LidarConfig  # noqa: E402
from depthdata.lidar.raycast import frustum_rays, sensor_pose  # noqa: E402
from depthdata.lidar.synth import synthesize  # noqa: E402
from depthdata.sample import Intrinsics  # noqa: E402

H, W = 480, 640
K = Intrinsics(fx=(W / 2) / np.tan(np.radians(65 / 2)), fy=(W / 2) / np.tan(np.radians(65 / 2)),
               cx=(W - 1) / 2, cy=(H - 1) / 2)
SEED = 11


def room_depth() -> np.ndarray:
    """Exact depth (metres) of a furnished room; camera frame x right, y down, z forward, camera
    1.5 m above the floor, 1 m in front of the room's near wall."""
    scene = o3d.t.geometry.RaycastingScene()

    def add(mesh: o3d.geometry.TriangleMesh) -> None:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))

    def box(x0, y0, z0, x1, y1, z1):
        b = o3d.geometry.TriangleMesh.create_box(x1 - x0, y1 - y0, z1 - z0)
        add(b.translate((x0, y0, z0)))

    box(-4.0, -1.5, -1.0, 4.0, 1.5, 9.0)             # the room: seen from inside
    box(-2.5, 0.7, 3.0, -0.5, 1.5, 4.5)               # a low table-like block on the floor
    box(2.0, -0.5, 5.0, 3.5, 1.5, 6.0)                # a cabinet by the right wall
    add(o3d.geometry.TriangleMesh.create_sphere(0.6, 64).translate((0.8, 0.9, 6.5)))
    v, u = np.mgrid[0:H, 0:W]
    dirs = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u, float)], -1)
    rays = np.concatenate([np.zeros_like(dirs), dirs], -1).astype(np.float32)
    # directions have z = 1, so the hit distance is the depth
    return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float32)


def config(mesher: str, depth: int = 8) -> LidarConfig:
    return LidarConfig(beam_model="hdl64e", mesher=mesher, poisson_depth=depth, range_noise_scale=0.0)


def bare_poisson(points: np.ndarray, rays: np.ndarray, cfg: LidarConfig) -> np.ndarray:
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(cfg.poisson_normal_knn))
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=cfg.poisson_depth, n_threads=1)
    dens = np.asarray(densities)
    mesh.remove_vertices_by_mask(dens < np.quantile(dens, cfg.poisson_density_quantile))
    scene = o3d.t.geometry.RaycastingScene(nthreads=1)
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)["t_hit"].numpy()


def disagreement(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Median relative difference |a - b| / b at pixels where both have a return, and their count."""
    both = (a > 0) & (b > 0)
    return float(np.median(np.abs(a[both] - b[both]) / b[both])), int(both.sum())


def _status_mib(key: str) -> float:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # the file says kB
    raise RuntimeError(f"no {key} in /proc/self/status")


def _memory_worker(mesher: str, depth: int, queue) -> None:
    o3d.utility.set_max_threads(1)
    d = room_depth()
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS, so it measures this call's peak
    tracemalloc.start()
    synthesize(d, K, config(mesher, depth), SEED, threads=1)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _status_mib("VmHWM")
    queue.put((peak, peak - before, traced / 2**20))


def memory(mesher: str, depth: int = 8) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(mesher, depth, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats after one warm-up")
    args = ap.parse_args()
    o3d.utility.set_max_threads(1)
    depth = room_depth()
    assert np.isfinite(depth).all(), "the room must enclose the camera"
    mask = depth_mask(depth, 120.0)
    points = backproject(depth, K)[mask]
    # azimuth phase 0 instead of the one synthesize draws for SEED: same ray count and cost
    rays, _ = frustum_rays(PRESETS["hdl64e"], sensor_pose(LidarConfig().sensor_offset_m, (0, 0, 0)), K, H, W, 0.0)
    outputs: dict[str, np.ndarray] = {}

    def run(name: str, cfg: LidarConfig):
        def fn() -> None:
            outputs[name], _ = synthesize(depth, K, cfg, SEED, threads=1)
        return fn

    cases = {
        "grid": run("grid", config("grid")),
        "poisson8": run("poisson8", config("poisson", 8)),
        "bare_o3d_poisson8": lambda: bare_poisson(points, rays, config("poisson", 8)),
        "poisson9": run("poisson9", config("poisson", 9)),
    }
    times = alternate(cases, repeats=args.repeats, warmup=1)
    results = [summary(name, t, "s/image") for name, t in times.items()]
    med = {name: float(np.median(t)) for name, t in times.items()}

    agree8, n8 = disagreement(outputs["poisson8"], outputs["grid"])
    agree9, n9 = disagreement(outputs["poisson9"], outputs["grid"])
    results += [
        {"case": "median |poisson8 - grid| / grid", "median": agree8, "min": agree8, "max": agree8,
         "unit": f"fraction ({n8} common pixels)"},
        {"case": "median |poisson9 - grid| / grid", "median": agree9, "min": agree9, "max": agree9,
         "unit": f"fraction ({n9} common pixels)"},
    ]
    for name, ret in (("grid", outputs["grid"]), ("poisson8", outputs["poisson8"])):
        cov = float((ret > 0).mean())
        results.append({"case": f"coverage {name}", "median": cov, "min": cov, "max": cov, "unit": "fraction of pixels"})
    for mesher, d, label in (("grid", 8, "grid"), ("poisson", 8, "poisson8"), ("poisson", 9, "poisson9")):
        peak, rise, traced = memory(mesher, d)
        results += [
            {"case": f"peak RSS {label}", "median": peak, "min": peak, "max": peak,
             "unit": "MiB (whole worker process, during the call)"},
            {"case": f"RSS rise {label}", "median": rise, "min": rise, "max": rise, "unit": "MiB (over the process before the call)"},
            {"case": f"tracemalloc peak {label}", "median": traced, "min": traced, "max": traced, "unit": "MiB (numpy/Python side)"},
        ]
    goals = [
        goal("poisson8 s / grid s", med["poisson8"] / med["grid"], ">= 10"),
        goal("median relative disagreement poisson8 vs grid", agree8, "<= 0.01"),
        goal("poisson8 s / bare Open3D calls s", med["poisson8"] / med["bare_o3d_poisson8"], "<= 1.1"),
    ]
    write("lidar", {"height": H, "width": W, "beam_model": "hdl64e", "hfov_deg": 65, "threads": 1,
                    "repeats": args.repeats, "points": int(len(points)), "rays": int(len(rays)),
                    "scene": "room 8×3×10 m, two boxes, a sphere; camera 1.5 m above the floor"},
          results, goals, open3d=o3d.__version__, numpy=np.__version__)


if __name__ == "__main__":
    main()
