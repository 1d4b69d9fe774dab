"""Store write/read throughput at 480×640 vs a JPEG + 16-bit PNG folder read with OpenCV.

Fields per sample: rgb uint8, depth float32, teacher float16, sparse float32 (~5% returns).
Cases, alternated in one run:
  * ``zarr_<codec>`` whole-shard reads from a local store, for each compression choice;
  * ``zarr_<codec>_memory``: the *same encoded bytes* in an in-memory Zarr store read by the same
    code — the goal "≥ 70% of an in-memory copy" compares the disk store with this, isolating
    the cost of storage I/O;
  * ``folder_jpeg_png``: cv2.imread of JPEG rgb + 16-bit PNG depth/teacher/sparse (mm / 1/65535).
Bytes on disk are reported per case (unit "MiB").
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import zarr
from skimage import data as skdata

from benchmarks import harness
from benchmarks.folder_baseline import read_sample, write_folder
from depthdata.store import Store

H, W, N, SHARD, REPEATS = 480, 640, 48, 16, 5
CODECS = [("zstd", 1), ("zstd", 3), ("blosc-lz4", 5), ("none", 0)]
FIELDS = ("rgb", "depth", "teacher", "sparse")


def make_samples(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = {"rgb": np.empty((N, H, W, 3), np.uint8), "depth": np.empty((N, H, W), np.float32),
           "teacher": np.empty((N, H, W), np.float16), "sparse": np.zeros((N, H, W), np.float32)}
    for i in range(N):
        out["rgb"][i] = cv2.resize(photos[i % 4], (W, H), interpolation=cv2.INTER_AREA)
        # a room-like depth: floor ramp + wall plane + a box, metres, with sensor noise
        depth = np.minimum(2.0 + 6.0 * (H - yy) / H, 4.0 + 0.002 * xx * (1 + i % 3))
        depth[150:300, 200 + i: 350 + i] = 1.5 + 0.1 * (i % 5)
        depth += rng.normal(0, 0.01, depth.shape).astype(np.float32)
        out["depth"][i] = depth
        out["teacher"][i] = ((1 / depth - (1 / depth).min()) / np.ptp(1 / depth)).astype(np.float16)
        mask = rng.random((H, W)) < 0.05
        out["sparse"][i][mask] = depth[mask]
    return out


def write_store(url: str, samples: dict[str, np.ndarray], codec: str, level: int) -> None:
    store = Store.create(url)
    g = store.create_group("bench", "train", [f"bench/train/{i}" for i in range(N)], ["-"] * N, H, W, SHARD,
                           compressor=(codec, level))
    g.ensure_fields(FIELDS)
    for k in range(g.num_shards):
        idx = g.shard_range(k)
        g.write_shard(k, "ingest", {f: samples[f][idx.start: idx.stop] for f in ("rgb", "depth")},
                      [{"status": "ok"}] * len(idx))
        g.write_shard(k, "teacher", {"teacher": samples["teacher"][idx.start: idx.stop]}, [{}] * len(idx))
        g.write_shard(k, "lidar", {"sparse": samples["sparse"][idx.start: idx.stop]}, [{}] * len(idx))


def read_group(store: Store) -> int:
    """Samples read, shard by shard, every field."""
    g = store.group("bench/train")
    return sum(len(g.read_shard(k, FIELDS)["rgb"]) for k in range(g.num_shards))


def read_store(url: str) -> int:
    return read_group(Store.open(url))


def read_memory_copy(mem: zarr.storage.MemoryStore) -> int:
    """The same read code (``Group.read_shard``) over the same encoded bytes held in memory."""
    return read_group(Store("memory-copy", zarr.open_group(mem, mode="r"), fs=None, fs_root="", storage_options={}))


def read_folder(folder: Path) -> int:
    for i in range(N):
        sample = read_sample(folder, i, FIELDS)
        assert sample["rgb"].shape == (H, W, 3) and sample["depth"].shape == sample["sparse"].shape == (H, W)
    return N


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def to_memory(url: str) -> zarr.storage.MemoryStore:
    mem: dict = {}
    root = Path(url)
    for p in root.rglob("*"):
        if p.is_file() and "_manifest" not in p.parts:
            mem[str(p.relative_to(root))] = zarr.core.buffer.cpu.Buffer.from_bytes(p.read_bytes())
    return zarr.storage.MemoryStore(mem)


def main() -> None:
    cv2.setNumThreads(1)
    samples = make_samples()
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        write_cases = {}
        for codec, level in CODECS:
            name = f"zarr_{codec}_{level}"

            def w(url=str(tmp / f"{name}.zarr"), codec=codec, level=level):
                shutil.rmtree(url, ignore_errors=True)
                write_store(url, samples, codec, level)
            write_cases[name] = w

        def wf():
            shutil.rmtree(tmp / "folder", ignore_errors=True)
            write_folder(tmp / "folder", samples)
        write_cases["folder_jpeg_png"] = wf
        wtimes = harness.alternate(write_cases, repeats=3, warmup=0)

        read_cases = {}
        memories = {}
        for codec, level in CODECS:
            name = f"zarr_{codec}_{level}"
            url = str(tmp / f"{name}.zarr")
            memories[name] = to_memory(url)
            read_cases[name] = lambda url=url: read_store(url)
            read_cases[f"{name}_memory"] = lambda m=memories[name]: read_memory_copy(m)
        read_cases["folder_jpeg_png"] = lambda: read_folder(tmp / "folder")
        rtimes = harness.alternate(read_cases, repeats=REPEATS, warmup=1)

        results = [harness.rate(f"write_{c}", t, N) for c, t in wtimes.items()]
        results += [harness.rate(f"read_{c}", t, N) for c, t in rtimes.items()]
        for codec, level in CODECS:
            name = f"zarr_{codec}_{level}"
            mib = du(tmp / f"{name}.zarr") / 2**20
            results.append({"case": f"disk_{name}", "median": mib, "min": mib, "max": mib, "unit": "MiB"})
        mib = du(tmp / "folder") / 2**20
        results.append({"case": "disk_folder_jpeg_png", "median": mib, "min": mib, "max": mib, "unit": "MiB"})

        med = {c: float(np.median(t)) for c, t in rtimes.items()}
        goals = []
        for codec, level in CODECS:
            name = f"zarr_{codec}_{level}"
            goals.append(harness.goal(f"read {name} / folder_jpeg_png", med["folder_jpeg_png"] / med[name], ">= 1.5"))
            goals.append(harness.goal(f"read {name} / {name}_memory", med[f"{name}_memory"] / med[name], ">= 0.7"))
        harness.write("store_read_write", {"height": H, "width": W, "samples": N, "shard_size": SHARD,
                                           "repeats": REPEATS, "fields": list(FIELDS)}, results, goals,
                      zarr=zarr.__version__, opencv=cv2.__version__)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
