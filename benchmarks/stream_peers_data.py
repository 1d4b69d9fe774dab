"""The samples of ``bench_stream_peers.py``, written once per data set in each reader's format.

Two data sets of 480×640 ``rgb`` + ``depth`` (metres, NaN = invalid):

* ``rendered``: the demo's ray-cast rooms and streets (:mod:`depthdata.demo.render`, what a
  ``depthdata demo`` build at 480×640 stores): flat colours and smooth, exact depth, which
  compress well.
* ``photos``: real photographs — scikit-image's bundled ``astronaut``, ``coffee``, ``chelsea``,
  ``rocket`` and the Middlebury 2014 ``motorcycle`` stereo pair (left and right views), and
  matplotlib's ``grace_hopper.jpg`` — each sample a random 3:4 crop (random scale, flip) resized
  to 480×640, with real measured depth: the Middlebury motorcycle disparity (bundled with
  scikit-image, holes where the stereo match failed) turned into metres with that scene's
  calibration, cropped and flipped the same way. Camera noise and texture make these much less
  compressible than renders.

Each data set is written as a depthdata store (the catalog's default compressor and
``shard_size: auto``, committed like a build), as MosaicML Streaming MDS shards (ndarray
columns, no compression) and as WebDataset tars of ``.npy`` files, with the same samples per
shard. Everything lands under ``benchmarks/.stream-peers/`` (git-ignored) and is reused while
the parameters are the same.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from depthdata.store import Store, auto_shard_size

H, W = 480, 640
ROOT = Path(__file__).parent / ".stream-peers"
#: what ``shard_size: auto`` gives a 480×640 ingest with every later field (rgb, depth, teacher,
#: teacher_conf, sparse): ``depthdata.ingest`` sizes shards the same way
SHARD = auto_shard_size(H, W, ["rgb", "depth", "teacher", "teacher_conf", "sparse"])
#: Middlebury 2014 "Motorcycle" calibration at full resolution (2964 px wide): focal length and
#: disparity offset in pixels, baseline in metres; scikit-image's copy is 741 px wide (1/4)
MOTORCYCLE = {"f": 3979.911, "doffs": 124.343, "baseline": 0.193001, "scale": 741 / 2964}


@functools.cache
def _photos() -> list[np.ndarray]:
    import matplotlib.cbook
    import matplotlib.image
    from skimage import data as skdata

    left, right, _ = skdata.stereo_motorcycle()
    hopper = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), left, right,
            np.asarray(hopper)[..., :3]]


@functools.cache
def _motorcycle_depth() -> np.ndarray:
    from skimage import data as skdata

    _, _, disp = skdata.stereo_motorcycle()
    c = MOTORCYCLE
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = c["baseline"] * c["f"] * c["scale"] / (disp + c["doffs"] * c["scale"])
    depth[~np.isfinite(disp)] = np.nan
    return depth.astype(np.float32)


def _crop(img: np.ndarray, rng: np.random.Generator, interpolation: int, box=None) -> tuple[np.ndarray, tuple]:
    """A random 3:4 window (60–100 % of the largest that fits), maybe flipped, resized to H×W."""
    h, w = img.shape[:2]
    if box is None:
        ch = min(h, w * H // W)
        ch = int(ch * rng.uniform(0.6, 1.0))
        cw = ch * W // H
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        box = (top, left, ch, cw, bool(rng.random() < 0.5))
    top, left, ch, cw, flip = box
    out = cv2.resize(img[top: top + ch, left: left + cw], (W, H), interpolation=interpolation)
    return (out[:, ::-1] if flip else out), box


def photo_samples(start: int, stop: int, seed: int = 0) -> dict[str, np.ndarray]:
    photos, depth = _photos(), _motorcycle_depth()
    n = stop - start
    out = {"rgb": np.empty((n, H, W, 3), np.uint8), "depth": np.empty((n, H, W), np.float32)}
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        img = photos[i % len(photos)]
        out["rgb"][j], _ = _crop(img, rng, cv2.INTER_AREA if img.shape[0] > H else cv2.INTER_LINEAR)
        # the depth map is one scene: its own window, nearest-neighbour so holes stay holes
        out["depth"][j], _ = _crop(depth, rng, cv2.INTER_NEAREST)
    return out


def rendered_samples(start: int, stop: int, seed: int = 0) -> dict[str, np.ndarray]:
    from depthdata.demo.render import render, room_scene, street_scene
    from depthdata.sources.nyuv2 import kinect_intrinsics
    from depthdata.sources.synthia import synthia_intrinsics

    n = stop - start
    out = {"rgb": np.empty((n, H, W, 3), np.uint8), "depth": np.empty((n, H, W), np.float32)}
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        if i % 2:  # streets, as the demo's SYNTHIA-like set (its cameras, this size)
            r = render(street_scene(rng), synthia_intrinsics(H, W), (H, W), yaw=float(rng.uniform(-0.25, 0.25)))
        else:
            r = render(room_scene(rng), kinect_intrinsics(H, W), (H, W), yaw=float(rng.uniform(-0.5, 0.5)))
        out["rgb"][j], out["depth"][j] = r.rgb, r.depth
    return out


MAKERS = {"rendered": rendered_samples, "photos": photo_samples}


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, SHARD):
        yield start, min(n, start + SHARD)


def _write_store(url: str, kind: str, n: int, shards: list[dict[str, np.ndarray]], codec: tuple[str, int]) -> None:
    store = Store.create(url)
    ids = [f"{kind}/train/{i:05d}" for i in range(n)]
    g = store.create_group(kind, "train", ids, [f"bench://{kind}/{i}" for i in range(n)], H, W, SHARD,
                           compressor=codec)
    g.ensure_fields(["rgb", "depth"])
    for k, s in enumerate(shards):
        g.write_shard(k, "ingest", s, [{"status": "ok"}] * len(s["rgb"]))
    store.commit()  # as a build ends: readers open the newest committed version


def _write_mds(folder: Path, kind: str, shards: list[dict[str, np.ndarray]]) -> None:
    from streaming import MDSWriter

    columns = {"sample_id": "str", "rgb": f"ndarray:uint8:{H},{W},3", "depth": f"ndarray:float32:{H},{W}"}
    # one MDS shard per store shard: size_limit just above SHARD raw samples
    per_sample = H * W * 3 + H * W * 4 + 64
    i = 0
    with MDSWriter(out=str(folder), columns=columns, compression=None, size_limit=per_sample * SHARD + 4096) as w:
        for s in shards:
            for rgb, depth in zip(s["rgb"], s["depth"]):
                w.write({"sample_id": f"{kind}/train/{i:05d}", "rgb": rgb, "depth": depth})
                i += 1


def _write_wds(folder: Path, kind: str, shards: list[dict[str, np.ndarray]]) -> None:
    folder.mkdir(parents=True)
    i = 0
    for k, s in enumerate(shards):
        with tarfile.open(folder / f"shard-{k:05d}.tar", "w") as tar:
            for rgb, depth in zip(s["rgb"], s["depth"]):
                for ext, arr in (("rgb.npy", rgb), ("depth.npy", depth)):
                    buf = io.BytesIO()
                    np.save(buf, arr)
                    info = tarfile.TarInfo(f"{kind}-{i:05d}.{ext}")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                i += 1


def prepare(kind: str, n: int, codecs: dict[str, tuple[str, int]]) -> dict[str, str]:
    """Write ``n`` samples of data set ``kind`` in every format (once); returns format → location:
    ``store_<codec name>`` for each of ``codecs``, ``mds``, ``wds`` (a list of tar paths, JSON)."""
    folder = ROOT / f"{kind}-{n}-{H}x{W}-s{SHARD}"
    stamp = folder / "done.json"
    wanted = {"codecs": {k: list(v) for k, v in codecs.items()}}
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shards = [MAKERS[kind](a, b) for a, b in _chunks(n)]
        for name, codec in codecs.items():
            _write_store(str(folder / f"store_{name}.zarr"), kind, n, shards, codec)
        _write_mds(folder / "mds", kind, shards)
        _write_wds(folder / "wds", kind, shards)
        stamp.write_text(json.dumps(wanted))
    out = {f"store_{name}": str(folder / f"store_{name}.zarr") for name in codecs}
    out["mds"] = str(folder / "mds")
    out["wds"] = json.dumps(sorted(str(p) for p in (folder / "wds").glob("shard-*.tar")))
    return out
