"""Streaming against its peers: ShardDataset vs MosaicML Streaming and WebDataset (issue #16).

The same samples (``benchmarks/stream_peers_data.py``: 576 of 480×640 ``rgb`` + ``depth``, once
rendered scenes as a demo build stores them, once real photographs with real measured depth)
are read shuffled by a ``DataLoader`` with 2 worker processes, batch 8, and every reader
delivers the same trainer-facing batch: ``rgb`` uint8 B×3×H×W, ``depth`` float32 B×1×H×W
(invalid = 0), ``depth_valid`` bool B×1×H×W, plus the sample ids.

* ``shard_dataset``: :class:`ShardDataset` + :class:`ResumableLoader` as the docs show them, on
  a store built with the catalog's defaults (Blosc-LZ4, ``shard_size: auto``);
* ``shard_dataset_raw_store``: the same on a store built with ``compressor: none``;
* ``mosaicml_streaming``: ``StreamingDataset`` over MDS shards (ndarray columns, no compression,
  the same samples per shard), its documented shuffle, the trainer-facing dict made in
  ``__getitem__`` and collated by the ``DataLoader`` in the workers;
* ``webdataset``: ``WebDataset`` over tars of ``.npy`` files (shard shuffle, a 64-sample shuffle
  buffer, the default ``.npy`` decoder), per-sample dicts collated by the ``DataLoader``
  (``webdataset_batched``: batched in the pipeline instead, as WebDataset's docs suggest; the
  faster of the two is the peer).
* ``mosaicml_streaming_persistent_workers``: MosaicML with ``persistent_workers=True`` (workers
  started once, not per epoch). Reported, not a goal peer: ``ResumableLoader`` starts its
  workers every epoch like the other cases (persistent workers would keep a stale resume point).

The peers' per-sample conversion is written the fast way (a permuted view of the image that
the collate copies once; one pass for the mask and one for the cleaned depth). A repetition is
one epoch including worker start-up; cases alternate (5 repetitions after a warm-up epoch
each). First-batch latency is the time from ``iter(loader)`` to the first batch. Peak RSS and
peak private memory (USS) per worker are sampled (every 20 ms, ``/proc``) in one extra untimed
epoch per case.

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.utils.data as tud

from benchmarks import harness
from benchmarks.stream_peers_data import SHARD, H, W, prepare
from depthdata.stream import ResumableLoader, ShardDataset

N = int(os.environ.get("BENCH_PEERS_SAMPLES", "576"))
BATCH, WORKERS = 8, 2
REPEATS = int(os.environ.get("BENCH_PEERS_REPEATS", "5"))
KINDS = tuple(os.environ.get("BENCH_PEERS_KINDS", "rendered,photos").split(","))
CODECS = {"default": ("blosc-lz4", 5), "none": ("none", 0)}
PEERS = ("mosaicml_streaming", "webdataset", "webdataset_batched")


def trainer_sample(key: str, rgb: np.ndarray, depth: np.ndarray) -> dict:
    """The trainer-facing sample from decoded arrays, as cheaply as a careful user writes it."""
    valid = depth > 0  # NaN compares False
    valid &= depth < np.inf
    clean = np.where(valid, depth, np.float32(0))
    return {"rgb": torch.from_numpy(rgb).permute(2, 0, 1), "depth": torch.from_numpy(clean)[None],
            "depth_valid": torch.from_numpy(valid)[None], "sample_id": key}


def mosaic_dataset(local: str):
    from streaming import StreamingDataset

    class TrainerFacing(StreamingDataset):
        def __getitem__(self, i: int) -> dict:
            s = super().__getitem__(i)
            return trainer_sample(s["sample_id"], s["rgb"], s["depth"])

    return TrainerFacing(local=local, remote=None, shuffle=True, shuffle_seed=0, batch_size=BATCH)


def _wds_sample(s: dict) -> dict:
    return trainer_sample(s["__key__"], s["rgb.npy"], s["depth.npy"])


def webdataset_pipeline(tars: list[str], batched: bool):
    import webdataset as wds

    ds = wds.WebDataset(tars, shardshuffle=len(tars), seed=0, empty_check=False).shuffle(64).decode().map(_wds_sample)
    return ds.batched(BATCH) if batched else ds


class RssSampler:
    """Peak memory of each DataLoader worker while running: resident set size (which counts the
    pages a forked worker shares with the benchmark process) and private memory (USS: what the
    worker itself added). Workers are the children forked from this process (same command
    line), not helpers it started otherwise (multiprocessing's resource tracker)."""

    def __init__(self, period: float = 0.02):
        self.period, self.peak, self._stop = period, {}, threading.Event()
        self._cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _workers(self) -> list[int]:
        out = []
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            try:
                children = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            for pid in children:
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes() == self._cmdline:
                        out.append(pid)
                except OSError:  # the child ended since the listing: not a worker to sample
                    pass
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._workers():
                try:
                    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
                except OSError:
                    continue
                kb = {line.split(":")[0]: int(line.split()[1]) for line in lines if line.endswith("kB")}
                rss, uss = kb.get("Rss", 0), kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
                old = self.peak.get(pid, (0, 0))
                self.peak[pid] = (max(old[0], rss), max(old[1], uss))
            time.sleep(self.period)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peaks_mib(self) -> tuple[list[float], list[float]]:
        """Peak RSS and peak USS of each worker, MiB."""
        return [p[0] / 1024 for p in self.peak.values()], [p[1] / 1024 for p in self.peak.values()]


def epoch(make: Callable[[], Iterable], first: list[float]) -> None:
    t0 = time.perf_counter()
    n = 0
    for j, batch in enumerate(make()):
        if j == 0:
            first.append(time.perf_counter() - t0)
        # a peer's workers may end on a partial batch (its shards split unevenly between them)
        assert batch["rgb"].shape[1:] == (3, H, W) and batch["depth"].dtype == torch.float32, batch["rgb"].shape
        assert batch["depth_valid"].dtype == torch.bool
        n += len(batch["sample_id"])
    assert n == N, n


#: DataLoaders whose workers outlive an epoch (stopped before another case's memory is sampled)
PERSISTENT: list[tud.DataLoader] = []


def stop_persistent_workers() -> None:
    for loader in PERSISTENT:
        it = loader._iterator
        if it is not None:
            it._shutdown_workers()
            loader._iterator = None


def cases_for(kind: str) -> dict[str, Callable[[], Iterable]]:
    paths = prepare(kind, N, CODECS)
    tars = json.loads(paths["wds"])
    counter = iter(range(10**6))

    def shard_loader(codec: str):
        # as docs/streaming.md shows it: the dataset knows the batch size, ResumableLoader
        # builds the DataLoader, one loader for the run and set_epoch per epoch (a new order)
        ds = ShardDataset(paths[f"store_{codec}"], fields=("rgb", "depth"), batch_size=BATCH, seed=0)
        loader = ResumableLoader(ds, num_workers=WORKERS)

        def make():
            loader.set_epoch(next(counter))
            return loader
        return make

    mosaic = mosaic_dataset(paths["mds"])
    mosaic_persistent = tud.DataLoader(mosaic, batch_size=BATCH, num_workers=WORKERS, persistent_workers=True)
    PERSISTENT.append(mosaic_persistent)
    wds_plain, wds_batched = webdataset_pipeline(tars, False), webdataset_pipeline(tars, True)
    return {
        "shard_dataset": shard_loader("default"),
        "shard_dataset_raw_store": shard_loader("none"),
        "mosaicml_streaming": lambda: tud.DataLoader(mosaic, batch_size=BATCH, num_workers=WORKERS),
        "mosaicml_streaming_persistent_workers": lambda: mosaic_persistent,
        "webdataset": lambda: tud.DataLoader(wds_plain, batch_size=BATCH, num_workers=WORKERS),
        "webdataset_batched": lambda: tud.DataLoader(wds_batched, batch_size=None, num_workers=WORKERS),
    }


def main() -> None:
    try:
        import webdataset  # noqa: F401
        from streaming.base.util import clean_stale_shared_memory
    except ImportError as exc:  # `make bench` goes on; the last results stay as they are
        print(f"bench_stream_peers skipped: {exc.name} is missing; install the peers with pip install -e '.[bench]'")
        return

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    clean_stale_shared_memory()
    results, goals = [], []
    params = {"height": H, "width": W, "samples": N, "shard_size": SHARD, "batch_size": BATCH,
              "num_workers": WORKERS, "repeats": REPEATS, "fields": ["rgb", "depth"],
              "store_compressor": "blosc-lz4 5 (default); none for *_raw_store", "data": list(KINDS)}
    for kind in KINDS:
        cases = cases_for(kind)
        firsts: dict[str, list[float]] = {c: [] for c in cases}
        times = harness.alternate({c: (lambda c=c: epoch(cases[c], firsts[c])) for c in cases},
                                  repeats=REPEATS, warmup=1)
        rates = {c: N / statistics.median(t) for c, t in times.items()}
        first_ms = {c: 1000 * statistics.median(f[1:]) for c, f in firsts.items()}  # the warm-up's dropped
        for c, t in times.items():
            results.append(harness.rate(f"{kind}/{c}", t, N))
        for c, f in firsts.items():
            results.append(harness.summary(f"{kind}/first_batch/{c}", [1000 * s for s in f[1:]], "ms"))
        for c in cases:  # memory: one more epoch each, untimed, with the sampler on
            stop_persistent_workers()  # only this case's workers are alive while sampling
            with RssSampler() as sampler:
                epoch(cases[c], [])
            rss, uss = sampler.peaks_mib()
            results.append(harness.summary(f"{kind}/peak_rss_per_worker/{c}", rss, "MiB"))
            results.append(harness.summary(f"{kind}/peak_private_per_worker/{c}", uss, "MiB"))
        best = max(PEERS, key=lambda c: rates[c])
        goals.append(harness.goal(f"{kind}: shard_dataset / fastest peer ({best}) samples/s",
                                  rates["shard_dataset"] / rates[best], ">= 1.2"))
        fastest_start = min(PEERS, key=lambda c: first_ms[c])
        goals.append(harness.goal(f"{kind}: shard_dataset / quickest peer ({fastest_start}) first-batch latency",
                                  first_ms["shard_dataset"] / first_ms[fastest_start], "<= 1.0"))
        stop_persistent_workers()
        PERSISTENT.clear()
        for c in cases:
            print(f"{kind:9s} {c:26s} {rates[c]:7.1f} samples/s  first batch {first_ms[c]:6.1f} ms", flush=True)
    harness.write("stream_peers", params, results, goals,
                  mosaicml_streaming=importlib.metadata.version("mosaicml-streaming"),
                  webdataset=importlib.metadata.version("webdataset"),
                  zarr=importlib.metadata.version("zarr"), numpy=np.__version__)


if __name__ == "__main__":
    main()
