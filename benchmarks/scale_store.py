"""A store of N tiny samples with all three stages' manifests, written through the store API
(``Store.create_group``, ``Group.write_shard``, ``Group.consolidate``: the same calls, files and
rows a build makes), without running sources, the teacher or LiDAR synthesis.

Run as ``python -m benchmarks.scale_store URL N SHARD_SIZE``. It runs in its own process so that
the zarrs codec pipeline it uses to write fast (28× zarr's own for 8×8 samples; see
``depthdata/stream/fastread.py`` for why the library keeps zarrs to DataLoader workers) never
touches the process that measures the readers.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

H = W = 8  # pixels: tiny, so the manifest (not the data) is what grows


def _value(dtype: str, i: int) -> object:
    """A plausible value of a manifest column for sample ``i`` (the readers only need types)."""
    return {"string": f"v{i % 7}", "int64": i % 1000, "double": (i % 997) * 0.01, "bool": i % 2 == 0}[dtype]


def _rows(stage, idx: range, sources: list[str]) -> list[dict[str, object]]:
    rows = []
    for i in idx:
        row: dict[str, object] = {c.name: _value(c.dtype, i) for c in stage.columns}
        row.update(status="ok", reason="")
        if "source_uri" in row:
            row["source_uri"] = sources[i]
        rows.append(row)
    return rows


def write_store(url: str, n: int, shard_size: int) -> None:
    import zarr
    import zarrs  # noqa: F401  (registers the pipeline)

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    from depthdata.pipeline import STAGES
    from depthdata.store import Store, field_spec

    t0 = time.perf_counter()
    store = Store.create(url)
    ids = [f"scale/train/{i:08d}.png" for i in range(n)]
    sources = [f"file:///data/scale/{i:08d}.png" for i in range(n)]
    group = store.create_group("scale", "train", ids, sources, H, W, shard_size)
    fields = [f for st in STAGES.values() for f in st.fields if f != "pairs"]
    group.ensure_fields(fields)
    for name, stage in STAGES.items():
        for k in range(group.num_shards):
            idx = group.shard_range(k)
            data = {}
            for f in stage.fields:
                if f == "pairs":
                    continue
                spec = field_spec(f)
                data[f] = np.full((len(idx), *spec.shape(H, W)), 1, spec.dtype)
            group.write_shard(k, name, data, _rows(stage, idx, sources), config={"benchmark": True})
        group.consolidate(name)
    print(f"wrote {n} samples in {group.num_shards} shards × {len(STAGES)} stages in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    url, n, shard_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    assert math.ceil(n / shard_size) >= 1
    write_store(url, n, shard_size)
