"""Source readers vs a plain OpenCV / h5py loop over the same files, at 480×640.

Each reader (listing + loading every item into a validated ``Sample``) alternates with a
hand-written loop that decodes the same files into the same arrays (RGB uint8 in RGB order,
depth float32 metres) with no checks. Goal per reader: readers / plain ≥ 0.9.

    .venv/bin/python -m benchmarks.bench_sources
"""

from __future__ import annotations

import csv
import os
import tempfile

import cv2
import h5py
import numpy as np

from benchmarks.harness import alternate, goal, rate, write
from depthdata.catalog import DatasetConfig
from depthdata.demo.data import sample_pair
from depthdata.demo.formats import write_densedepth, write_diw, write_nyu_labeled, write_synthia_rand
from depthdata.demo.render import render
from depthdata.demo.scenes import room_scene, street_scene
from depthdata.sources import get_source_class
from depthdata.sources.nyuv2 import kinect_intrinsics
from depthdata.sources.synthia import synthia_intrinsics

H, W = 480, 640
N = 16
REPEATS = 15  # many short alternations: medians stay stable on a shared, noisy machine


def _rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _fixtures(root: str):
    rng = np.random.default_rng(0)
    rooms = [render(room_scene(rng), kinect_intrinsics(H, W), (H, W), yaw=float(rng.uniform(-0.5, 0.5)))
             for _ in range(N)]
    streets = [render(street_scene(rng), synthia_intrinsics(H, W), (H, W)) for _ in range(N)]
    os.makedirs(os.path.join(root, "nyu"))
    write_nyu_labeled(os.path.join(root, "nyu", "nyu_depth_v2_labeled.mat"),
                      np.stack([r.rgb for r in rooms]), np.stack([r.depth for r in rooms]),
                      [f"room_{i:04d}" for i in range(N)], ["room"] * N)
    write_densedepth(os.path.join(root, "dd"), [("room_0001", i + 1, r.rgb, r.depth) for i, r in enumerate(rooms)], [])
    write_synthia_rand(os.path.join(root, "synthia"), [(r.rgb, r.depth) for r in streets])
    write_diw(os.path.join(root, "diw"), "DIW_test.csv", "DIW_test", [(r.rgb, *sample_pair(r.depth, rng)) for r in rooms])
    os.makedirs(os.path.join(root, "photos"))
    for i, r in enumerate(streets):
        cv2.imwrite(os.path.join(root, "photos", f"{i:03d}.jpg"), r.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])


def _reader(kind: str, root: str, split: str, **options):
    src = get_source_class(kind)(kind, DatasetConfig(kind=kind, root=root, options=options), root)

    def run():
        return [src.load(split, it) for it in src.items(split)]
    return run


def _plain_nyu(root: str):
    path = os.path.join(root, "nyu", "nyu_depth_v2_labeled.mat")
    f = h5py.File(path, "r")

    def run():
        out = []
        for i in range(f["images"].shape[0]):
            rgb = np.ascontiguousarray(f["images"][i].transpose(2, 1, 0))
            depth = f["depths"][i].T.astype(np.float32)
            depth[depth == 0] = np.nan
            out.append((rgb, depth))
        return out
    return run


def _plain_dd(root: str):
    base = os.path.join(root, "dd")

    def run():
        out = []
        with open(os.path.join(base, "data", "nyu2_train.csv")) as fh:
            for rgb_rel, d_rel in csv.reader(fh):
                depth = cv2.imread(os.path.join(base, d_rel), cv2.IMREAD_UNCHANGED).astype(np.float32) * (10 / 255)
                depth[depth == 0] = np.nan
                out.append((_rgb(os.path.join(base, rgb_rel)), depth))
        return out
    return run


def _plain_synthia(root: str):
    base = os.path.join(root, "synthia")

    def run():
        out = []
        for f in sorted(os.listdir(os.path.join(base, "RGB"))):
            depth = cv2.imread(os.path.join(base, "Depth", "Depth", f), cv2.IMREAD_UNCHANGED)[..., 0].astype(np.float32) / 100
            depth[(depth == 0) | (depth > 655)] = np.nan
            out.append((_rgb(os.path.join(base, "RGB", f)), depth))
        return out
    return run


def _plain_diw(root: str):
    base = os.path.join(root, "diw")

    def run():
        with open(os.path.join(base, "DIW_test.csv")) as fh:
            lines = fh.read().splitlines()
        out = []
        for k in range(0, len(lines), 2):
            ya, xa, yb, xb, order, _, _ = lines[k + 1].split(",")
            pair = np.array([[int(ya) - 1, int(xa) - 1, int(yb) - 1, int(xb) - 1, 1 if order == ">" else -1]], np.float32)
            out.append((_rgb(os.path.join(base, lines[k])), pair))
        return out
    return run


def _plain_images(root: str):
    base = os.path.join(root, "photos")

    def run():
        return [_rgb(os.path.join(base, f)) for f in sorted(os.listdir(base))]
    return run


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_sources_") as root:
        _fixtures(root)
        cases = {
            "nyuv2_labeled_mat": (_reader("nyuv2", os.path.join(root, "nyu"), "all"), _plain_nyu(root), "h5py"),
            "nyuv2_densedepth": (_reader("nyuv2", os.path.join(root, "dd"), "train"), _plain_dd(root), "opencv"),
            "synthia_rand": (_reader("synthia", os.path.join(root, "synthia"), "train"), _plain_synthia(root), "opencv"),
            "diw": (_reader("diw", os.path.join(root, "diw"), "test"), _plain_diw(root), "opencv"),
            "images": (_reader("images", os.path.join(root, "photos"), "train"), _plain_images(root), "opencv"),
        }
        results, goals = [], []
        for name, (reader, plain, base) in cases.items():
            assert len(reader()) == len(plain()) == N
            times = alternate({"reader": reader, "plain": plain}, repeats=REPEATS, warmup=1)
            r = rate(f"{name}_reader", times["reader"], N)
            p = rate(f"{name}_plain_{base}", times["plain"], N)
            results += [r, p]
            goals.append(goal(f"{name}_reader / {name}_plain_{base}", r["median"] / p["median"], ">= 0.9"))
            print(f"{name}: reader {r['median']:.1f} vs plain {p['median']:.1f} samples/s")
    write("sources", {"height": H, "width": W, "samples": N, "repeats": REPEATS}, results, goals,
          opencv=cv2.__version__, h5py=h5py.__version__)


if __name__ == "__main__":
    main()
