"""Procedural layouts, cameras and lighting: rooms and streets that vary enough to learn from.

:func:`room_scene` and :func:`street_scene` build a :class:`~depthdata.demo.render.Scene` in the
camera-at-rest frame (floor or road at ``y = cam_h``, y down). Rooms come as plain boxes, rooms
with a partition wall, or corridors, furnished with 0–11 objects (cabinets, tables, beds,
spheres, cylinders, pictures on the walls); streets have sidewalks, building rows with gaps,
sometimes a building closing the street, cars, trucks, trees and poles, under a day, overcast or
dusk sky. Materials vary in albedo, texture kind, scale and contrast, and gloss.

:func:`random_view` draws a camera (field of view, height, yaw, pitch, small roll) and
:func:`random_lighting` a light (sun or lamp, colour, low light with sensor noise);
:func:`random_render` puts the three together. Everything is deterministic by generator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthdata.sample import Intrinsics
from depthdata.demo.render import Camera, Lighting, Render, Scene, _box, _cylinder, _sphere, intrinsics_from_fov, render

KINDS = ("room", "street")


def _colour(rng: np.random.Generator, lo=0.25, hi=0.95):
    return rng.uniform(lo, hi, 3)


def _material(rng: np.random.Generator, period=(0.15, 0.8), glossy: float = 0.3) -> dict:
    """Albedo, texture, contrast and gloss of one surface."""
    kind = str(rng.choice(["checker", "stripes", "noise", "bricks", "plain"], p=[0.25, 0.15, 0.3, 0.1, 0.2]))
    return {"albedo": _colour(rng), "texture": (kind, float(rng.uniform(*period))),
            "contrast": float(rng.uniform(0.4, 1.0)),
            "gloss": float(rng.uniform(0, 0.35)) if rng.random() < glossy else 0.0}


def _add(s: Scene, mesh, m: dict) -> None:
    s.add(mesh, m["albedo"], m["texture"], m["contrast"], m["gloss"])


def room_scene(rng: np.random.Generator, cam_h: float | None = None, layout: str | None = None) -> Scene:
    """An indoor room (walls, floor, ceiling) with furniture, ≤ ~15 m deep; camera at the origin,
    ``cam_h`` metres above the floor. ``layout``: ``box``, ``partition`` or ``corridor``
    (default: drawn)."""
    s = Scene(background=(0.0, 0.0, 0.0))
    layout = layout or str(rng.choice(["box", "box", "partition", "corridor"]))
    cam_h = float(rng.uniform(1.2, 1.6)) if cam_h is None else cam_h
    if layout == "corridor":
        width, depth = rng.uniform(1.6, 2.8), rng.uniform(7.0, 14.0)
    else:
        width, depth = rng.uniform(3.0, 7.0), rng.uniform(3.5, 9.0)
    height = max(rng.uniform(2.3, 3.4), cam_h + 0.4)
    floor_y = cam_h  # y points down
    back = -rng.uniform(0.5, 1.5)  # the wall behind the camera (z)
    x0 = -width * rng.uniform(0.3, 0.7)
    x1 = x0 + width
    t = 0.1  # wall thickness
    cz = (back + depth) / 2
    floor = _material(rng, (0.3, 1.2), glossy=0.4)
    floor["albedo"] = _colour(rng, 0.2, 0.75)
    _add(s, _box((width, t, depth - back), (x0 + width / 2, floor_y + t / 2, cz)), floor)
    ceiling = {"albedo": np.full(3, rng.uniform(0.75, 0.95)), "texture": ("noise", float(rng.uniform(0.5, 2.0))),
               "contrast": float(rng.uniform(0.0, 0.3)), "gloss": 0.0}
    _add(s, _box((width, t, depth - back), (x0 + width / 2, floor_y - height - t / 2, cz)), ceiling)
    wall = _material(rng)
    walls = [_box((width, height, t), (x0 + width / 2, floor_y - height / 2, depth + t / 2)),
             _box((width, height, t), (x0 + width / 2, floor_y - height / 2, back - t / 2)),
             _box((t, height, depth - back), (x0 - t / 2, floor_y - height / 2, cz)),
             _box((t, height, depth - back), (x1 + t / 2, floor_y - height / 2, cz))]
    for mesh in walls:
        # walls often share one paint; sometimes one is an accent wall
        _add(s, mesh, wall if rng.random() < 0.6 else _material(rng))
    if layout == "partition":
        z = rng.uniform(2.0, max(2.1, depth - 1.5))
        reach = width * rng.uniform(0.3, 0.7)
        side = rng.choice([-1, 1])
        x = x0 + reach / 2 if side < 0 else x1 - reach / 2
        _add(s, _box((reach, height, 0.12), (x, floor_y - height / 2, z)), _material(rng))
    n_objects = int(rng.integers(0, 5 if layout == "corridor" else 12))
    for _ in range(n_objects):
        _furniture(s, rng, x0, x1, floor_y, min(depth, 9.0), height)
    for _ in range(int(rng.integers(0, 4))):  # pictures/doors: texture without depth
        pw, ph = rng.uniform(0.4, 1.5), rng.uniform(0.4, 2.0)
        m = _material(rng, (0.05, 0.3))
        if rng.random() < 0.5:
            px = rng.uniform(x0 + pw / 2, max(x0 + pw / 2 + 1e-3, x1 - pw / 2))
            _add(s, _box((pw, ph, 0.03), (px, floor_y - rng.uniform(ph / 2, height - ph / 2), depth - 0.02)), m)
        else:
            wx = x0 + 0.02 if rng.random() < 0.5 else x1 - 0.02
            _add(s, _box((0.03, ph, pw), (wx, floor_y - rng.uniform(ph / 2, height - ph / 2),
                                          rng.uniform(1.0, depth - pw / 2))), m)
    return s


def _furniture(s: Scene, rng: np.random.Generator, x0: float, x1: float, floor_y: float, depth: float,
               height: float) -> None:
    kind = str(rng.choice(["box", "cabinet", "table", "bed", "sphere", "cylinder"]))
    m = _material(rng)
    z_near = 0.8

    def spot(sx, sz):
        cx = rng.uniform(x0 + sx / 2, max(x0 + sx / 2 + 1e-3, x1 - sx / 2))
        cz = rng.uniform(min(z_near + sz / 2, depth - sz / 2), depth - sz / 2)
        return cx, cz

    if kind == "box":
        sx, sy, sz = rng.uniform(0.3, 1.4), rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.2)
        cx, cz = spot(sx, sz)
        _add(s, _box((sx, sy, sz), (cx, floor_y - sy / 2, cz)), m)
    elif kind == "cabinet":
        sx, sy, sz = rng.uniform(0.4, 1.2), rng.uniform(1.4, min(2.4, height - 0.1)), rng.uniform(0.3, 0.6)
        cx, cz = spot(sx, sz)
        _add(s, _box((sx, sy, sz), (cx, floor_y - sy / 2, cz)), m)
    elif kind == "table":
        sx, sy, sz = rng.uniform(0.6, 1.8), rng.uniform(0.65, 0.8), rng.uniform(0.5, 1.0)
        cx, cz = spot(sx, sz)
        _add(s, _box((sx, 0.05, sz), (cx, floor_y - sy, cz)), m)
        leg = 0.05
        for dx in (-1, 1):
            for dz in (-1, 1):
                _add(s, _box((leg, sy, leg), (cx + dx * (sx / 2 - leg), floor_y - sy / 2, cz + dz * (sz / 2 - leg))), m)
    elif kind == "bed":
        sx, sy, sz = rng.uniform(1.0, 1.8), rng.uniform(0.4, 0.6), rng.uniform(1.8, 2.2)
        cx, cz = spot(sx, sz)
        _add(s, _box((sx, sy, sz), (cx, floor_y - sy / 2, cz)), m)
    elif kind == "sphere":
        r = rng.uniform(0.15, 0.5)
        cx, cz = spot(2 * r, 2 * r)
        _add(s, _sphere(r, (cx, floor_y - r, cz)), m)
    else:
        r, hh = rng.uniform(0.1, 0.4), rng.uniform(0.3, 1.5)
        cx, cz = spot(2 * r, 2 * r)
        _add(s, _cylinder(r, hh, (cx, floor_y - hh / 2, cz)), m)


#: sky colours: clear day, overcast, dusk
SKIES = ((0.55, 0.7, 0.92), (0.72, 0.74, 0.78), (0.85, 0.6, 0.45))


def street_scene(rng: np.random.Generator, cam_h: float | None = None) -> Scene:
    """An outdoor street: road, sidewalks, building rows with gaps (sometimes one closing the
    street), cars, trucks, trees and poles under the sky; road surface at ``y = cam_h``."""
    sky = np.asarray(SKIES[int(rng.integers(len(SKIES)))]) * rng.uniform(0.85, 1.1)
    s = Scene(background=tuple(np.clip(sky, 0, 1)))
    cam_h = float(rng.uniform(1.4, 1.8)) if cam_h is None else cam_h
    half = rng.uniform(4.0, 11.0)  # half street width, m
    road = {"albedo": np.full(3, rng.uniform(0.25, 0.45)) + rng.uniform(-0.03, 0.03, 3),
            "texture": (str(rng.choice(["stripes", "noise", "plain"])), float(rng.uniform(1.0, 4.0))),
            "contrast": float(rng.uniform(0.3, 1.0)), "gloss": float(rng.uniform(0, 0.2))}
    _add(s, _box((400, 0.1, 400), (0, cam_h + 0.05, 150)), road)
    walk = rng.uniform(1.5, 4.0)
    curb = rng.uniform(0.1, 0.2)
    pave = _material(rng, (0.4, 1.2))
    for side in (-1, 1):
        _add(s, _box((walk, curb, 300), (side * (half + walk / 2), cam_h - curb / 2, 140)), pave)
    for side in (-1, 1):
        z = rng.uniform(-5.0, 8.0)
        setback = rng.uniform(0, 3)
        while z < 160:
            length, h, d = rng.uniform(8, 30), rng.uniform(4, 35), rng.uniform(8, 15)
            if rng.random() < 0.15:  # a gap: side street or empty lot
                z += length
                continue
            x = side * (half + walk + setback + d / 2 + rng.uniform(0, 1.5))
            m = _material(rng, (0.8, 3.5))
            _add(s, _box((d, h, length), (x, cam_h - h / 2, z + length / 2)), m)
            z += length + rng.uniform(0, 6)
    if rng.random() < 0.4:  # a building closing the street (T-junction)
        zf, h = rng.uniform(35, 130), rng.uniform(6, 40)
        _add(s, _box((4 * half + 60, h, 10), (0, cam_h - h / 2, zf + 5)), _material(rng, (1.0, 4.0)))
    for _ in range(int(rng.integers(0, 9))):
        truck = rng.random() < 0.15
        w, hh, ln = (2.5, rng.uniform(2.8, 3.6), rng.uniform(6, 10)) if truck else \
            (rng.uniform(1.6, 2.0), rng.uniform(1.3, 1.8), rng.uniform(3.8, 5.0))
        x = rng.uniform(-half + w / 2 + 0.2, half - w / 2 - 0.2)
        z = rng.uniform(4, 60)
        car = {"albedo": _colour(rng, 0.05, 1.0), "texture": ("plain", 1.0), "contrast": 0.0,
               "gloss": float(rng.uniform(0.1, 0.5))}
        _add(s, _box((w, hh * 0.55, ln), (x, cam_h - 0.25 - hh * 0.275, z)), car)  # body above the wheels
        _add(s, _box((w * 0.9, hh * 0.45, ln * 0.55), (x, cam_h - 0.25 - hh * 0.55 - hh * 0.225 + 0.05, z)), car)
        for dz in (-1, 1):
            wheel = _cylinder(0.3, w + 0.05, (0, 0, 0))
            wheel.rotate(np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float), center=(0, 0, 0))  # axle along x
            wheel.translate((x, cam_h - 0.3, z + dz * ln * 0.32))
            _add(s, wheel, {"albedo": (0.05, 0.05, 0.05), "texture": ("plain", 1.0), "contrast": 0.0, "gloss": 0.0})
    for _ in range(int(rng.integers(0, 9))):
        side = rng.choice([-1, 1])
        x, z = side * (half + rng.uniform(0.5, walk - 0.3)), rng.uniform(3, 80)
        trunk_h, r = rng.uniform(2.0, 4.0), rng.uniform(1.0, 2.5)
        _add(s, _cylinder(0.15, trunk_h, (x, cam_h - curb - trunk_h / 2, z)),
             {"albedo": (0.35, 0.25, 0.15), "texture": ("noise", 0.2), "contrast": 0.5, "gloss": 0.0})
        _add(s, _sphere(r, (x, cam_h - curb - trunk_h - r * 0.8, z)),
             {"albedo": (rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.6), rng.uniform(0.1, 0.25)),
              "texture": ("noise", float(rng.uniform(0.2, 0.5))), "contrast": 0.8, "gloss": 0.0})
    for _ in range(int(rng.integers(0, 7))):
        side = rng.choice([-1, 1])
        ph = rng.uniform(3.0, 8.0)
        _add(s, _cylinder(0.08, ph, (side * (half + 0.3), cam_h - curb - ph / 2, rng.uniform(3, 90))),
             {"albedo": np.full(3, rng.uniform(0.2, 0.6)), "texture": ("plain", 1.0), "contrast": 0.0, "gloss": 0.2})
    return s


@dataclass(frozen=True)
class ViewRanges:
    """Ranges a camera is drawn from: horizontal field of view (degrees), height above the
    floor or road (m), yaw, pitch (positive looks down) and roll (rad)."""

    hfov_deg: tuple[float, float]
    height_m: tuple[float, float]
    yaw: tuple[float, float]
    pitch: tuple[float, float]
    roll: tuple[float, float] = (-0.05, 0.05)


VIEWS = {
    "room": ViewRanges(hfov_deg=(50.0, 85.0), height_m=(0.8, 2.0), yaw=(-0.6, 0.6), pitch=(-0.2, 0.35)),
    "street": ViewRanges(hfov_deg=(50.0, 95.0), height_m=(1.2, 3.0), yaw=(-0.3, 0.3), pitch=(-0.12, 0.15)),
}


def random_view(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> tuple[Camera, float]:
    """A camera for a ``kind`` scene (``room`` or ``street``) rendering ``size`` ``(H, W)``,
    and its height above the floor (m)."""
    r = VIEWS[kind]
    intr = intrinsics_from_fov(size, rng.uniform(*r.hfov_deg), tuple(rng.uniform(-0.03, 0.03, 2) * size[1]))
    cam = Camera(intr, yaw=float(rng.uniform(*r.yaw)), pitch=float(rng.uniform(*r.pitch)),
                 roll=float(rng.uniform(*r.roll)))
    return cam, float(rng.uniform(*r.height_m))


def random_lighting(rng: np.random.Generator, kind: str, low_light: float = 0.2) -> Lighting:
    """Sun (streets) or sun/ceiling lamp (rooms) from a random direction and colour; with
    probability ``low_light`` a dim exposure with sensor noise (night, unlit room)."""
    direction = (float(rng.uniform(-1, 1)), float(-rng.uniform(0.3, 1.0)), float(rng.uniform(-1, 1)))
    ambient = float(rng.uniform(0.2, 0.5))
    lamp, power = None, 0.0
    if kind == "room" and rng.random() < 0.5:
        lamp = (float(rng.uniform(-1.5, 1.5)), -float(rng.uniform(0.6, 1.4)), float(rng.uniform(1.0, 5.0)))
        power = float(rng.uniform(0.5, 3.0))
    tint = tuple(float(c) for c in np.clip(1 + rng.uniform(-0.12, 0.12, 3), 0.8, 1.2))
    if rng.random() < low_light:
        exposure, noise = float(rng.uniform(0.12, 0.4)), float(rng.uniform(1.5, 6.0))
    else:
        exposure, noise = float(rng.uniform(0.8, 1.15)), float(rng.uniform(0.0, 1.5))
    return Lighting(direction=direction, ambient=ambient, diffuse=float(rng.uniform(0.4, 0.8)), lamp=lamp,
                    lamp_power=power, exposure=exposure, noise=noise, tint=tint)


def random_render(rng: np.random.Generator, kind: str, size: tuple[int, int], low_light: float = 0.2,
                  intrinsics: Intrinsics | None = None) -> Render:
    """One ``kind`` scene (``room`` or ``street``) from a random camera under random light.
    ``intrinsics`` fixes the lens (a dataset's camera) instead of drawing a field of view."""
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; use one of {KINDS}")
    cam, height = random_view(rng, kind, size)
    scene = room_scene(rng, cam_h=height) if kind == "room" else street_scene(rng, cam_h=height)
    light = random_lighting(rng, kind, low_light)
    return render(scene, intrinsics or cam.intrinsics, size, yaw=cam.yaw, pitch=cam.pitch, roll=cam.roll,
                  lighting=light, rng=rng)
