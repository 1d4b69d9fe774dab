"""The embedded demo: small, faithful copies of every source format, and a catalog reading them.

``write_demo_data`` renders rooms (NYU-like, Kinect camera) and streets (SYNTHIA camera) with
exact depth and writes them in the real layouts; DIW pairs are sampled from the exact depth;
the unlabeled set is scikit-image's bundled photographs. Everything is deterministic by seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import yaml
from tqdm import tqdm

from depthdata.demo.formats import (write_densedepth, write_diw, write_nyu_labeled, write_nyu_splits,
                                    write_synthia_rand)
from depthdata.demo.render import Render
from depthdata.demo.scenes import random_render
from depthdata.sources.nyuv2 import LABELED_MAT, SPLITS_MAT, kinect_intrinsics
from depthdata.sources.synthia import SYNTHIA_SIZE, synthia_intrinsics

log = logging.getLogger(__name__)

ROOM_TYPES = ("bedroom", "kitchen", "living_room", "office", "bathroom")
#: scikit-image's bundled photographs (no download needed): colour JPEGs plus a grayscale
#: and an RGBA PNG, so the images reader's conversions are exercised
PHOTOS = {"astronaut.jpg": "astronaut", "coffee.jpg": "coffee", "chelsea.jpg": "chelsea",
          "rocket.jpg": "rocket", "camera.png": "camera", "logo.png": "logo"}
#: minimum relative depth difference of a sampled DIW pair (so the order is unambiguous)
DIW_MIN_RATIO = 1.15


#: share of demo renders that are low light (dim exposure, sensor noise)
DEMO_LOW_LIGHT = 0.15


def _rooms(rng: np.random.Generator, n: int, size: tuple[int, int], desc: str) -> list[Render]:
    # the dataset's own camera, so that its readers' intrinsics describe the pixels exactly
    intr = kinect_intrinsics(*size)
    return [random_render(rng, "room", size, DEMO_LOW_LIGHT, intrinsics=intr)
            for _ in tqdm(range(n), desc=desc, leave=False)]


def _streets(rng: np.random.Generator, n: int, size: tuple[int, int], desc: str) -> list[Render]:
    intr = synthia_intrinsics(*size)
    return [random_render(rng, "street", size, DEMO_LOW_LIGHT, intrinsics=intr)
            for _ in tqdm(range(n), desc=desc, leave=False)]


def sample_pair(depth: np.ndarray, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], str]:
    """A DIW pair from exact depth: 1-based ``(y_A, x_A, y_B, x_B)`` and ``'>'`` when A is farther.

    Both points have valid depth and differ by at least ``DIW_MIN_RATIO``×.
    """
    ys, xs = np.nonzero(np.isfinite(depth))
    for _ in range(1000):
        a, b = rng.integers(0, len(ys), 2)
        da, db = depth[ys[a], xs[a]], depth[ys[b], xs[b]]
        if max(da, db) >= DIW_MIN_RATIO * min(da, db):
            return (int(ys[a]) + 1, int(xs[a]) + 1, int(ys[b]) + 1, int(xs[b]) + 1), ">" if da > db else "<"
    raise ValueError("depth map has no pair of points with distinct depth")


def write_demo_data(out_dir: str | os.PathLike[str], seed: int = 0, n_per_dataset: int = 16,
                    size: tuple[int, int] = (240, 320)) -> dict[str, str]:
    """Write every demo dataset under ``out_dir``; returns dataset name → root folder.

    ``size`` ``(H, W)`` is the NYU-like render size (Kinect aspect); SYNTHIA frames keep
    SYNTHIA's 760:1280 aspect at width ``W``. Names: ``nyu`` (labeled .mat + splits.mat),
    ``nyu_densedepth`` (DenseDepth CSV tree), ``synthia`` (RAND tree), ``diw`` (train + test
    CSVs), ``photos`` (scikit-image photographs).
    """
    if n_per_dataset < 3:
        raise ValueError("n_per_dataset must be at least 3 (NYU needs train and test samples)")
    out = Path(out_dir)
    h, w = size
    street_size = (round(w * SYNTHIA_SIZE[0] / SYNTHIA_SIZE[1]), w)
    rngs = [np.random.default_rng([seed, k]) for k in range(5)]
    paths = {}

    nyu = out / "nyu_v2"
    nyu.mkdir(parents=True, exist_ok=True)
    rooms = _rooms(rngs[0], n_per_dataset, size, "nyu rooms")
    types = [ROOM_TYPES[i % len(ROOM_TYPES)] for i in range(n_per_dataset)]
    scenes = [f"{t}_{i // len(ROOM_TYPES) + 1:04d}" for i, t in enumerate(types)]
    write_nyu_labeled(str(nyu / LABELED_MAT), np.stack([r.rgb for r in rooms]), np.stack([r.depth for r in rooms]),
                      scenes, types)
    # every third sample (1-based 3, 6, ...) is a test sample, as the real split interleaves scenes
    idx = np.arange(1, n_per_dataset + 1)
    write_nyu_splits(str(nyu / SPLITS_MAT), idx[idx % 3 != 0].tolist(), idx[idx % 3 == 0].tolist())
    paths["nyu"] = str(nyu)

    dd = out / "nyu_densedepth"
    rooms = _rooms(rngs[1], n_per_dataset, size, "densedepth rooms")
    n_test = max(1, n_per_dataset // 4)
    train = [(f"{ROOM_TYPES[i % 2]}_{i // 4 + 1:04d}", i % 4 + 1, r.rgb, r.depth)
             for i, r in enumerate(rooms[n_test:])]
    write_densedepth(str(dd), train, [(r.rgb, r.depth) for r in rooms[:n_test]])
    paths["nyu_densedepth"] = str(dd)

    syn = out / "synthia_rand"
    streets = _streets(rngs[2], n_per_dataset, street_size, "synthia streets")
    write_synthia_rand(str(syn), [(r.rgb, r.depth) for r in streets])
    paths["synthia"] = str(syn)

    diw = out / "diw"
    renders = _rooms(rngs[3], (n_per_dataset + 1) // 2, size, "diw rooms") + \
        _streets(rngs[3], n_per_dataset // 2, street_size, "diw streets")
    records = [(r.rgb, *sample_pair(r.depth, rngs[4])) for r in renders]
    n_test = max(1, len(records) // 4)
    write_diw(str(diw), "DIW_train_val.csv", "DIW_train_val", records[n_test:])
    write_diw(str(diw), "DIW_test.csv", "DIW_test", records[:n_test])
    paths["diw"] = str(diw)

    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name, fn in PHOTOS.items():
        img = getattr(skimage.data, fn)()
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if name.endswith(".jpg") else []
        if not cv2.imwrite(str(photos / name), img, params):
            raise OSError(f"could not write {photos / name}")
    paths["photos"] = str(photos)
    log.info("wrote demo data (seed %d, %d per dataset) under %s", seed, n_per_dataset, out)
    return paths


def write_demo_catalog(out_dir: str | os.PathLike[str], data_paths: dict[str, str],
                       resolution: tuple[int, int] = (120, 160), store_url: str = "demo.zarr",
                       shard_size: int | str = 4, random_teacher: bool = False, demo_teacher: bool = False) -> str:
    """Write ``out_dir/catalog.yaml`` reading the demo datasets; returns its path.

    ``shard_size`` is small by default so the demo's few samples make enough shards to keep
    every worker busy (a real build sizes shards to ~96 MiB). ``demo_teacher`` lets the build
    fall back to the demo teacher shipped with depthdata (trained on procedural scenes) when the
    real weights are not on the machine (what the demo does); ``random_teacher`` to the tiny random
    teacher (for tests where label values do not matter; the demo teacher comes first when both
    are set).

    Datasets ``nyu`` (nyuv2, labeled .mat), ``nyu_densedepth`` (nyuv2, DenseDepth CSV tree),
    ``synthia``, ``diw`` and ``photos`` (images), all
    stored at ``resolution`` ``[H, W]``; roots are relative to the catalog's folder.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def rel(name: str) -> str:
        return os.path.relpath(Path(data_paths[name]).resolve(), out)

    def res() -> list[int]:  # a fresh list each time keeps YAML free of anchors
        return [int(resolution[0]), int(resolution[1])]

    doc = {
        "version": 1,
        "store": {"url": store_url, "shard_size": shard_size},
        "datasets": {
            "nyu": {"kind": "nyuv2", "root": rel("nyu"), "resolution": res(), "resize": "resize",
                    "options": {"layout": "labeled_mat"}},
            "nyu_densedepth": {"kind": "nyuv2", "root": rel("nyu_densedepth"), "resolution": res(),
                               "resize": "resize", "options": {"layout": "densedepth"}},
            "synthia": {"kind": "synthia", "root": rel("synthia"), "resolution": res(), "resize": "center_crop",
                        "options": {"layout": "rand", "max_depth": 150.0}},
            "diw": {"kind": "diw", "root": rel("diw"), "resolution": res(), "resize": "fit_pad"},
            "photos": {"kind": "images", "root": rel("photos"), "resolution": res(), "resize": "center_crop"},
        },
    }
    teacher = {}
    if demo_teacher:
        teacher["allow_demo_teacher"] = True
    if random_teacher:
        teacher["allow_random_init"] = True
    if teacher:
        doc["teacher"] = teacher
    path = out / "catalog.yaml"
    path.write_text("# depthdata demo catalog, written by depthdata.demo.write_demo_catalog\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return str(path)
