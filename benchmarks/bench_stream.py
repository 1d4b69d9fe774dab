"""Streaming into PyTorch: a DataLoader (2 workers) over the store vs a JPEG + 16-bit PNG folder.

Both sides deliver the same samples (480×640 rgb, depth in metres, teacher disparity) as the same
tensors (:func:`depthdata.stream.decode.decode`: uint8 CHW rgb, float32 1×H×W fields, validity
masks), shuffled, batch 8, through a ``DataLoader`` with 2 worker processes:
  * ``store_shard_dataset``: :class:`ShardDataset` through :class:`ResumableLoader`, as the docs
    show it — samples read from the shard files (the default Blosc-LZ4), whole batches made in
    the workers in recycled shared memory;
  * ``store_shard_dataset_per_sample``: the same dataset in a plain ``DataLoader(batch_size=8)``:
    single samples, collated by the DataLoader;
  * ``folder_map_dataset``: a map-style Dataset reading ``<i>_rgb.jpg`` with OpenCV and
    ``<i>_depth.png`` (16-bit mm) / ``<i>_teacher.png`` (16-bit, 1/65535) per item.
A repetition is one full epoch of 576 samples (24 shards) including worker start-up; cases
alternate. First-batch latency (from ``iter(loader)`` to the first batch) is reported per case.
Epochs shorter than a few hundred samples are dominated by worker start-up (new processes
every epoch, first-touch memory), which both cases pay; the latency numbers show that part.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.utils.data as tud
import zarr
from skimage import data as skdata

from benchmarks import harness
from benchmarks.folder_baseline import read_sample, write_sample
from depthdata.store import Store
from depthdata.stream import ResumableLoader, ShardDataset
from depthdata.stream.decode import decode

H, W, SHARD, BATCH, WORKERS, REPEATS = 480, 640, 24, 8, 2, 5
N = int(os.environ.get("BENCH_STREAM_SAMPLES", "576"))  # samples per epoch
PHOTOS = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]


def make_samples(indices: range, seed: int = 0) -> dict[str, np.ndarray]:
    """Samples ``indices``: photographs resized to 480×640 with a room-like depth (metres,
    mm-quantised so the PNG holds exactly the same values) and its normalised disparity as the
    teacher. Made a shard at a time so the benchmark process stays small (its DataLoader
    workers are forked from it every epoch)."""
    rng = np.random.default_rng([seed, indices.start])
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    n = len(indices)
    out = {"rgb": np.empty((n, H, W, 3), np.uint8), "depth": np.empty((n, H, W), np.float32),
           "teacher": np.empty((n, H, W), np.float16)}
    for j, i in enumerate(indices):
        out["rgb"][j] = cv2.resize(PHOTOS[i % 4], (W, H), interpolation=cv2.INTER_AREA)
        depth = np.minimum(2.0 + 6.0 * (H - yy) / H, 4.0 + 0.002 * xx * (1 + i % 3))
        depth[150:300, 200 + i % 200: 350 + i % 200] = 1.5 + 0.1 * (i % 5)
        depth = np.round((depth + rng.normal(0, 0.01, depth.shape)) * 1000) / 1000
        out["depth"][j] = depth
        disp = 1 / depth
        out["teacher"][j] = ((disp - disp.min()) / np.ptp(disp)).astype(np.float16)
    return out


def write_both(url: str, folder: Path) -> None:
    """The same samples into the store (shard by shard) and the folder."""
    store = Store.create(url)
    g = store.create_group("bench", "train", [f"bench/train/{i:05d}" for i in range(N)], ["-"] * N, H, W, SHARD)
    g.ensure_fields(["rgb", "depth", "teacher"])
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(g.num_shards):
        idx = g.shard_range(k)
        s = make_samples(idx)
        g.write_shard(k, "ingest", {"rgb": s["rgb"], "depth": s["depth"]}, [{"status": "ok"}] * len(idx))
        g.write_shard(k, "teacher", {"teacher": s["teacher"]}, [{"status": "ok"}] * len(idx))
        for j, i in enumerate(idx):
            write_sample(folder, i, {name: arr[j] for name, arr in s.items()})


class FolderDataset(tud.Dataset):
    """The baseline: one JPEG + two 16-bit PNGs per sample, decoded with OpenCV."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        files = read_sample(self.folder, i, ("depth", "teacher"))
        files["depth"][files["depth"] == 0] = np.nan
        sample = decode(files)
        sample.update(sample_id=f"bench/train/{i:05d}", index=i)
        return sample


def epoch(loader_factory, first: list[float]) -> int:
    t0 = time.perf_counter()
    n = 0
    for j, batch in enumerate(loader_factory()):
        if j == 0:
            first.append(time.perf_counter() - t0)
        n += len(batch["sample_id"])
    assert n == N, n
    return n


def main() -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    try:
        url = str(tmp / "s.zarr")
        write_both(url, tmp / "folder")
        ds = ShardDataset(url, fields=("rgb", "depth", "teacher"), batch_size=BATCH, streams=WORKERS,
                          shuffle_window=1, tail="pad")
        folder = FolderDataset(tmp / "folder")
        counter = iter(range(10**6))
        cases = ("store_shard_dataset", "store_shard_dataset_per_sample", "folder_map_dataset")
        firsts: dict[str, list[float]] = {c: [] for c in cases}
        resumable = ResumableLoader(ds, num_workers=WORKERS)

        def store_loader():
            resumable.set_epoch(next(counter))
            return resumable

        def per_sample_loader():
            ds.set_epoch(next(counter))
            return tud.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)

        def folder_loader():
            return tud.DataLoader(folder, batch_size=BATCH, shuffle=True, num_workers=WORKERS)

        times = harness.alternate({
            "store_shard_dataset": lambda: epoch(store_loader, firsts["store_shard_dataset"]),
            "store_shard_dataset_per_sample": lambda: epoch(per_sample_loader,
                                                            firsts["store_shard_dataset_per_sample"]),
            "folder_map_dataset": lambda: epoch(folder_loader, firsts["folder_map_dataset"]),
        }, repeats=REPEATS, warmup=1)
        results = [harness.rate(c, t, N) for c, t in times.items()]
        # the warm-up's first batch is dropped with it
        results += [harness.summary(f"first_batch_{c}", [1000 * s for s in f[1:]], "ms") for c, f in firsts.items()]
        med = {c: float(np.median(t)) for c, t in times.items()}
        goals = [harness.goal("store_shard_dataset / folder_map_dataset samples/s",
                              med["folder_map_dataset"] / med["store_shard_dataset"], ">= 1.5")]
        # not a goal: what whole batches in recycled shared memory add over single samples, same run
        results.append(harness.summary("batches_in_workers_over_single_samples", [
            slow / fast for slow, fast in zip(times["store_shard_dataset_per_sample"], times["store_shard_dataset"])],
            "ratio"))
        harness.write("stream", {"height": H, "width": W, "samples": N, "shard_size": SHARD, "batch_size": BATCH,
                                 "num_workers": WORKERS, "repeats": REPEATS, "fields": ["rgb", "depth", "teacher"],
                                 "store_compressor": "blosc-lz4 5 (default)", "jpeg_quality": 95}, results, goals,
                      zarr=zarr.__version__, opencv=cv2.__version__)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
