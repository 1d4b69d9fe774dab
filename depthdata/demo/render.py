"""Procedural scenes with exact depth: rooms and streets of boxes, planes and spheres.

Scenes are triangle meshes ray cast with Open3D's ``RaycastingScene``. Coordinates are the
camera's at rest (metres; x right, y down, z forward); the camera sits at the origin and may be
turned by a yaw angle. Each ray's direction has camera-frame ``z = 1``, so the hit distance
``t`` *is* the z-depth of the hit (the depth maps' convention). Pixel ``(v, u)`` centres are at
integer positions, matching :class:`depthdata.sample.Intrinsics`.

Shading is Lambertian with an ambient term and a procedural texture (checkers or stripes in
world coordinates, scaled per object) so that images carry the monocular cues a network learns
from: perspective texture gradients, occlusion edges and shading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from depthdata.sample import Intrinsics


@dataclass
class Scene:
    """Meshes plus one appearance per mesh: albedo RGB in [0, 1], texture kind and period (m)."""

    meshes: list[o3d.t.geometry.TriangleMesh] = field(default_factory=list)
    albedo: list[tuple[float, float, float]] = field(default_factory=list)
    texture: list[tuple[str, float]] = field(default_factory=list)
    #: colour where no surface is hit (sky); depth there is NaN
    background: tuple[float, float, float] = (0.55, 0.7, 0.9)

    def add(self, mesh: o3d.geometry.TriangleMesh, albedo, texture: tuple[str, float]) -> None:
        self.meshes.append(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        self.albedo.append(tuple(float(c) for c in albedo))
        self.texture.append(texture)


def _box(size, center) -> o3d.geometry.TriangleMesh:
    """Axis-aligned box of ``size`` (x, y, z) metres centred at ``center``."""
    m = o3d.geometry.TriangleMesh.create_box(*size)
    m.translate(np.asarray(center, float) - np.asarray(size, float) / 2)
    return m


def _sphere(radius, center) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=24)
    m.translate(np.asarray(center, float))
    return m


def _colour(rng: np.random.Generator, lo=0.25, hi=0.95):
    return rng.uniform(lo, hi, 3)


def _texture(rng: np.random.Generator):
    return (str(rng.choice(["checker", "stripes", "plain"])), float(rng.uniform(0.15, 0.8)))


def room_scene(rng: np.random.Generator) -> Scene:
    """An indoor room (walls, floor, ceiling) with furniture-like boxes and spheres, ≤ ~9 m deep."""
    s = Scene(background=(0.0, 0.0, 0.0))
    width, height, depth = rng.uniform(3.5, 6.0), rng.uniform(2.5, 3.0), rng.uniform(4.5, 8.0)
    cam_h = rng.uniform(1.2, 1.6)  # camera height above the floor
    floor_y = cam_h  # y points down
    back = -0.8  # the wall behind the camera (z)
    x0 = -width * rng.uniform(0.35, 0.65)
    t = 0.1  # wall thickness
    cz = (back + depth) / 2
    s.add(_box((width, t, depth - back), (x0 + width / 2, floor_y + t / 2, cz)), _colour(rng, 0.3, 0.7), ("checker", 0.5))
    s.add(_box((width, t, depth - back), (x0 + width / 2, floor_y - height - t / 2, cz)), (0.9, 0.9, 0.88), ("plain", 1))
    s.add(_box((width, height, t), (x0 + width / 2, floor_y - height / 2, depth + t / 2)), _colour(rng), _texture(rng))
    s.add(_box((width, height, t), (x0 + width / 2, floor_y - height / 2, back - t / 2)), _colour(rng), _texture(rng))
    for wx in (x0 - t / 2, x0 + width + t / 2):
        s.add(_box((t, height, depth - back), (wx, floor_y - height / 2, cz)), _colour(rng), _texture(rng))
    for _ in range(int(rng.integers(3, 7))):
        sx, sy, sz = rng.uniform(0.3, 1.4), rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.2)
        cx = rng.uniform(x0 + sx / 2, x0 + width - sx / 2)
        z = rng.uniform(min(2.2, depth - sz), depth - sz / 2)
        s.add(_box((sx, sy, sz), (cx, floor_y - sy / 2, z)), _colour(rng), _texture(rng))
    for _ in range(int(rng.integers(1, 3))):
        r = rng.uniform(0.15, 0.45)
        s.add(_sphere(r, (rng.uniform(x0 + r, x0 + width - r), floor_y - r, rng.uniform(1.5, depth - r))),
              _colour(rng), ("stripes", r / 2))
    return s


def street_scene(rng: np.random.Generator) -> Scene:
    """An outdoor street: road plane, building blocks on both sides, cars, tree crowns, sky."""
    s = Scene(background=(0.55, 0.7, 0.92))
    cam_h = rng.uniform(1.4, 1.8)
    half = rng.uniform(6.0, 10.0)  # half street width, m
    s.add(_box((200, 0.1, 200), (0, cam_h + 0.05, 100)), (0.35, 0.35, 0.37), ("stripes", 3.0))
    for side in (-1, 1):
        z = rng.uniform(2.0, 8.0)
        while z < 120:
            length, h, d = rng.uniform(8, 25), rng.uniform(6, 30), rng.uniform(8, 15)
            x = side * (half + d / 2 + rng.uniform(0, 2))
            s.add(_box((d, h, length), (x, cam_h - h / 2, z + length / 2)), _colour(rng, 0.3, 0.9), ("checker", rng.uniform(1, 3)))
            z += length + rng.uniform(1, 6)
    for _ in range(int(rng.integers(2, 6))):
        x = rng.uniform(-half + 1.5, half - 1.5)
        z = rng.uniform(5, 50)
        s.add(_box((1.8, 1.5, 4.2), (x, cam_h - 0.75, z)), _colour(rng, 0.1, 1.0), ("plain", 1))
    for _ in range(int(rng.integers(2, 6))):
        side = rng.choice([-1, 1])
        r = rng.uniform(1.0, 2.2)
        s.add(_sphere(r, (side * (half - 1), cam_h - 3.5 - r, rng.uniform(6, 60))), (0.2, 0.55, 0.2), ("stripes", 0.4))
    return s


@dataclass(frozen=True)
class Render:
    rgb: np.ndarray  # uint8 H×W×3
    depth: np.ndarray  # float32 H×W, metres (z-depth); NaN where nothing is hit
    intrinsics: Intrinsics


def render(scene: Scene, intrinsics: Intrinsics, size: tuple[int, int], yaw: float = 0.0,
           light=(0.4, -1.0, -0.3)) -> Render:
    """Ray cast ``scene`` into an image of ``size`` ``(H, W)``; ``yaw`` turns the camera (rad)."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    d_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                      np.ones_like(u)], -1).reshape(-1, 3)
    c, s_ = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]], np.float32)  # about the y (down) axis
    d_world = d_cam @ rot.T
    rays = np.concatenate([np.zeros_like(d_world), d_world], 1).astype(np.float32)

    rc = o3d.t.geometry.RaycastingScene()
    ids = [rc.add_triangles(m) for m in scene.meshes]
    hit = rc.cast_rays(o3d.core.Tensor(rays))
    t = hit["t_hit"].numpy()
    geom = hit["geometry_ids"].numpy().astype(np.int64)
    normals = hit["primitive_normals"].numpy()
    valid = np.isfinite(t)

    lookup = np.full(max(ids) + 2, -1, np.int64)
    lookup[np.array(ids)] = np.arange(len(ids))
    obj = np.where(valid, lookup[np.where(valid, geom, len(lookup) - 1)], -1)
    albedo = np.array(scene.albedo + [scene.background], np.float32)[obj]
    p = d_world * np.where(valid, t, 0)[:, None]
    light_dir = np.asarray(light, np.float32) / np.linalg.norm(light)
    # |n·l|: walls seen from inside have normals pointing away from the camera
    lambert = np.abs(normals @ light_dir)
    tex = np.ones(len(t), np.float32)
    for k, (kind, period) in enumerate(scene.texture):
        m = obj == k
        if kind == "checker":
            q = np.floor(p[m] / period).astype(np.int64).sum(1) % 2
            tex[m] = 0.75 + 0.25 * q
        elif kind == "stripes":
            tex[m] = 0.8 + 0.2 * np.sin(p[m, 0] * 6.2832 / period + p[m, 2] * 3.1416 / period)
    shade = np.where(valid, (0.35 + 0.65 * lambert) * tex, 1.0)
    rgb = np.clip(albedo * shade[:, None] * 255, 0, 255).astype(np.uint8).reshape(h, w, 3)
    depth = np.where(valid, t, np.nan).astype(np.float32).reshape(h, w)
    return Render(rgb=rgb, depth=depth, intrinsics=intrinsics)
