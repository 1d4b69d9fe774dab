"""Faster shard decoding inside DataLoader worker processes, with zarrs.

Local stores are normally read without zarr at all, a sample at a time straight from their
shard files (:mod:`depthdata.stream.chunks`); this module serves the local stores that reader
does not take (a layout or codec it does not read exactly), which go through zarr whole shards
at a time.

zarr-python 3.1 decodes a whole shard one inner chunk at a time through asyncio thread hops,
into a fresh shard-sized buffer that it then copies into the destination: about 2 ms of CPU per
480×640 sample (rgb + depth + teacher), ~6× the decompression itself. The zarrs codec pipeline
(Rust, plugged into zarr through ``zarr.config``) reads the same shard in about 0.8 ms
(``benchmarks/bench_stream.py`` runs both; tests compare their bytes).

It is switched on only in DataLoader worker processes that read a local store:

* zarrs keeps a Rayon thread pool; a process forked after that pool exists deadlocks on its
  first read. DataLoader workers are forked from the trainer, so the trainer process itself
  must never start the pool: it keeps zarr's own pipeline, and each worker enables zarrs
  after the fork, with one thread (the workers are the parallelism, as ``torch`` does by
  setting one intra-op thread per worker).
* zarrs supports local, object_store and HTTP stores; remote fsspec stores (and the local
  cache in front of them) stay on zarr's pipeline.

``DEPTHDATA_ZARRS=0`` turns it off (for comparison, or if a zarrs release misbehaves).
"""

from __future__ import annotations

import logging
import os

import zarr

log = logging.getLogger(__name__)

PIPELINE = "zarrs.ZarrsCodecPipeline"


def enable_in_worker() -> bool:
    """Use zarrs for arrays opened from now on in this (worker) process; ``False`` when turned
    off or not installed. Call only in a process that will not fork again."""
    if os.environ.get("DEPTHDATA_ZARRS", "1") == "0":
        return False
    try:
        import zarrs  # noqa: F401  (registers the pipeline class)
    except ImportError:
        log.debug("zarrs is not installed; DataLoader workers decode shards with zarr's own pipeline")
        return False
    zarr.config.set({"codec_pipeline.path": PIPELINE, "threading.max_workers": 1})
    return True
