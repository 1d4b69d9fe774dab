"""Ray casting procedural scenes with exact depth: primitives, materials, lighting, cameras.

Scenes are triangle meshes ray cast with Open3D's ``RaycastingScene``. Coordinates are the
camera's at rest (metres; x right, y down, z forward); the camera sits at the origin and may be
turned by yaw (about y), pitch (about x, positive looks down) and roll (about z). Each ray's
direction has camera-frame ``z = 1`` before the turn, and a rotation keeps lengths, so the hit
distance ``t`` along it *is* the z-depth of the hit in the turned camera's frame (the depth
maps' convention). Pixel ``(v, u)`` centres are at integer positions, matching
:class:`depthdata.sample.Intrinsics`.

Shading: ambient + two-sided Lambertian from a directional light, optionally a point lamp
falling off with the squared distance, a Blinn-Phong highlight for glossy materials, an
exposure (low light) and seeded sensor noise. Each material has an albedo and a procedural
texture in world coordinates (checkers, stripes, value noise, bricks or plain) scaled per
object, so images carry the monocular cues a network learns from: perspective texture
gradients, occlusion edges and shading. The layouts themselves are :mod:`depthdata.demo.scenes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from depthdata.sample import Intrinsics

#: procedural texture kinds a material may use
TEXTURES = ("checker", "stripes", "noise", "bricks", "plain")


@dataclass
class Scene:
    """Meshes plus one material per mesh: albedo RGB in [0, 1], texture ``(kind, period m)``,
    texture contrast (0 = flat, 1 = full) and gloss (strength of the specular highlight)."""

    meshes: list[o3d.t.geometry.TriangleMesh] = field(default_factory=list)
    albedo: list[tuple[float, float, float]] = field(default_factory=list)
    texture: list[tuple[str, float]] = field(default_factory=list)
    contrast: list[float] = field(default_factory=list)
    gloss: list[float] = field(default_factory=list)
    #: colour where no surface is hit (sky); depth there is NaN
    background: tuple[float, float, float] = (0.55, 0.7, 0.9)

    def add(self, mesh: o3d.geometry.TriangleMesh, albedo, texture: tuple[str, float], contrast: float = 1.0,
            gloss: float = 0.0) -> None:
        if texture[0] not in TEXTURES:
            raise ValueError(f"unknown texture {texture[0]!r}; use one of {TEXTURES}")
        self.meshes.append(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        self.albedo.append(tuple(float(c) for c in albedo))
        self.texture.append((str(texture[0]), float(texture[1])))
        self.contrast.append(float(contrast))
        self.gloss.append(float(gloss))


@dataclass(frozen=True)
class Lighting:
    """How a scene is lit and exposed. The defaults are a bright, even daylight.

    ``direction`` points towards the directional light (y down, so negative y is above);
    ``lamp`` is a point light's position (metres, camera-at-rest frame) whose irradiance is
    ``lamp_power / d²``; ``exposure`` scales the image (< 0.5 is low light); ``noise`` is the
    std of Gaussian sensor noise in 8-bit units, added after exposure as a real sensor does;
    ``tint`` colours the light.
    """

    direction: tuple[float, float, float] = (0.4, -1.0, -0.3)
    ambient: float = 0.35
    diffuse: float = 0.65
    lamp: tuple[float, float, float] | None = None
    lamp_power: float = 0.0
    exposure: float = 1.0
    noise: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Camera:
    """Intrinsics and orientation (radians): yaw about y, pitch about x (positive looks down),
    roll about z."""

    intrinsics: Intrinsics
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def rotation(self) -> np.ndarray:
        """Camera frame → rest frame (float32 3×3): yaw · pitch · roll."""
        cy, sy = np.cos(self.yaw), np.sin(self.yaw)
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        cr, sr = np.cos(self.roll), np.sin(self.roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        # (0, 0, 1) → (0, sin p, cos p): forward tilts towards +y, which is down
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        return (r_yaw @ r_pitch @ r_roll).astype(np.float32)


def intrinsics_from_fov(size: tuple[int, int], hfov_deg: float, offset: tuple[float, float] = (0.0, 0.0)) -> Intrinsics:
    """Square-pixel intrinsics of an ``(H, W)`` image with horizontal field of view ``hfov_deg``
    and the principal point ``offset`` ``(dy, dx)`` pixels from the image centre."""
    h, w = size
    f = (w / 2) / np.tan(np.radians(hfov_deg) / 2)
    return Intrinsics(float(f), float(f), (w - 1) / 2 + float(offset[1]), (h - 1) / 2 + float(offset[0]))


def _box(size, center) -> o3d.geometry.TriangleMesh:
    """Axis-aligned box of ``size`` (x, y, z) metres centred at ``center``."""
    m = o3d.geometry.TriangleMesh.create_box(*size)
    m.translate(np.asarray(center, float) - np.asarray(size, float) / 2)
    return m


def _sphere(radius, center) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=24)
    m.translate(np.asarray(center, float))
    return m


def _cylinder(radius, height, center) -> o3d.geometry.TriangleMesh:
    """Upright (along y) cylinder of ``radius`` and ``height`` metres centred at ``center``."""
    m = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=20)
    m.rotate(o3d.geometry.get_rotation_matrix_from_xyz((np.pi / 2, 0, 0)), center=(0, 0, 0))
    m.translate(np.asarray(center, float))
    return m


def _hash01(cells: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer lattice cell (N×3 int64)."""
    c = cells.astype(np.uint64)
    h = (c[:, 0] * np.uint64(73856093)) ^ (c[:, 1] * np.uint64(19349663)) ^ (c[:, 2] * np.uint64(83492791)) \
        ^ np.uint64(seed * 2654435761 % 2**32)
    h ^= h >> np.uint64(13)
    h *= np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return (h % np.uint64(1 << 16)).astype(np.float32) / float(1 << 16)


def _value_noise(p: np.ndarray, period: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at points ``p`` (N×3 metres): lattice values at spacing
    ``period``, trilinearly interpolated with a smoothstep."""
    q = p / period
    base = np.floor(q).astype(np.int64)
    f = q - base
    f = f * f * (3 - 2 * f)
    out = np.zeros(len(p), np.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                wgt = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * \
                    (f[:, 2] if dz else 1 - f[:, 2])
                out += wgt * _hash01(base + np.array([dx, dy, dz]), seed)
    return out


def texture_value(kind: str, period: float, p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Texture brightness in [0.5, 1] at world points ``p`` (N×3) before contrast is applied."""
    if kind == "checker":
        return 0.75 + 0.25 * (np.floor(p / period).astype(np.int64).sum(1) % 2)
    if kind == "stripes":
        return 0.8 + 0.2 * np.sin(p[:, 0] * 6.2832 / period + p[:, 2] * 3.1416 / period)
    if kind == "noise":
        # two octaves: blotches plus grain, like wood, plaster or asphalt
        return 0.5 + 0.35 * _value_noise(p, period, seed) + 0.15 * _value_noise(p, period / 4, seed + 1)
    if kind == "bricks":
        row_h = period / 2
        row = np.floor(p[:, 1] / row_h)
        along = p[:, 0] + p[:, 2] + 0.5 * period * (row % 2)  # every other row offset by half a brick
        fy, fx = p[:, 1] / row_h - row, along / period - np.floor(along / period)
        mortar = (fy < 0.1) | (fx < 0.05)
        return np.where(mortar, 0.55, 0.9 + 0.1 * _hash01(np.stack([row, np.floor(along / period), 0 * row], 1)
                                                             .astype(np.int64), seed)).astype(np.float32)
    return np.ones(len(p), np.float32)


@dataclass(frozen=True)
class Render:
    rgb: np.ndarray  # uint8 H×W×3
    depth: np.ndarray  # float32 H×W, metres (z-depth); NaN where nothing is hit
    intrinsics: Intrinsics


def render(scene: Scene, intrinsics: Intrinsics, size: tuple[int, int], yaw: float = 0.0,
           light=(0.4, -1.0, -0.3), pitch: float = 0.0, roll: float = 0.0, lighting: Lighting | None = None,
           rng: np.random.Generator | None = None) -> Render:
    """Ray cast ``scene`` into an image of ``size`` ``(H, W)`` seen by a camera turned by
    ``yaw``/``pitch``/``roll`` (rad; see :class:`Camera`). ``lighting`` defaults to daylight from
    ``light``; sensor noise (``lighting.noise > 0``) draws from ``rng``."""
    lighting = lighting or Lighting(direction=tuple(light))
    if lighting.noise > 0 and rng is None:
        raise ValueError("sensor noise needs an rng (renders are deterministic by seed)")
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    d_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                      np.ones_like(u)], -1).reshape(-1, 3)
    rot = Camera(intrinsics, yaw, pitch, roll).rotation()
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
    light_dir = np.asarray(lighting.direction, np.float32) / np.linalg.norm(lighting.direction)
    # |n·l|: walls seen from inside have normals pointing away from the camera
    irradiance = lighting.ambient + lighting.diffuse * np.abs(normals @ light_dir)
    if lighting.lamp is not None and lighting.lamp_power > 0:
        to_lamp = np.asarray(lighting.lamp, np.float32) - p
        dist2 = np.maximum((to_lamp ** 2).sum(1), 1e-2)
        irradiance = irradiance + lighting.lamp_power * np.abs((normals * to_lamp).sum(1)) / dist2 ** 1.5
    tex = np.ones(len(t), np.float32)
    gloss = np.zeros(len(t), np.float32)
    for k, (kind, period) in enumerate(scene.texture):
        m = obj == k
        if not m.any():
            continue
        c = scene.contrast[k]
        tex[m] = 1.0 - c * (1.0 - texture_value(kind, period, p[m], seed=k))
        gloss[m] = scene.gloss[k]
    shade = np.where(valid, irradiance * tex, 1.0)
    rgb = albedo * shade[:, None] * np.asarray(lighting.tint, np.float32)
    if gloss.any():
        # Blinn-Phong highlight with the normal turned towards the camera
        view = -d_world / np.linalg.norm(d_world, axis=1, keepdims=True)
        n = normals * np.sign((normals * view).sum(1, keepdims=True) + 1e-12)
        half = light_dir + view
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-6)
        spec = np.maximum((n * half).sum(1), 0) ** 24
        rgb = rgb + np.where(valid, gloss * spec, 0)[:, None]
    rgb = rgb * 255 * lighting.exposure
    if lighting.noise > 0:
        rgb = rgb + rng.normal(0.0, lighting.noise, rgb.shape)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, w, 3)
    depth = np.where(valid, t, np.nan).astype(np.float32).reshape(h, w)
    return Render(rgb=rgb, depth=depth, intrinsics=intrinsics)
