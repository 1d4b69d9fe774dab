"""``verify`` against random single-byte corruptions of every kind of file in a store: a flip
that changes what a reader would see is reported (naming the store, group or file), and no flip
ends in a traceback of some library's own error type."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from depthdata.errors import StoreError
from depthdata.store import Store
from depthdata.store.verify import verify_store

H, W, N, S = 4, 5, 6, 3


def build(url: str) -> None:
    store = Store.create(url)
    ids = [f"d/train/{i}" for i in range(N)]
    g = store.create_group("d", "train", ids, [f"file:///src/{i}.png" for i in range(N)], H, W, S)
    g.ensure_fields(["rgb", "depth", "teacher", "teacher_conf"])
    rng = np.random.default_rng(0)
    for k in range(g.num_shards):
        n = len(g.shard_range(k))
        g.write_shard(k, "ingest", {"rgb": rng.integers(0, 255, (n, H, W, 3), np.uint8),
                                    "depth": rng.uniform(0.5, 9, (n, H, W)).astype(np.float32)},
                      [{"status": "ok", "reason": "", "depth_median": 1.5} for _ in range(n)], config={"kind": "x"})
        g.write_shard(k, "teacher", {"teacher": rng.uniform(0, 1, (n, H, W)).astype(np.float16),
                                     "teacher_conf": rng.uniform(0, 1, (n, H, W)).astype(np.float16)},
                      [{"status": "ok", "reason": "", "teacher_revision": "local"} for _ in range(n)],
                      config={"model": "m", "revision": "local"})
    store.commit()


def norm(v):
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


def reader_view(url: str):
    """Everything a reader of the store sees, comparable with ==; raises if it cannot be read."""
    store = Store.open(url)
    view = {"meta": store.meta}
    for path in store.group_paths():
        g = store.group(path)
        view[path] = {
            "plan": [norm(list(r.values())) for r in g.plan_table().to_pylist()],
            "fields": g.fields(),
            "data": {f: g.array(f)[:].tobytes() for f in g.fields()},
            "manifests": {st: [norm(list(r.values())) for r in g.manifest(st).to_pylist()] for st in g.stages()},
            "footers": {st: [g.shard_status(k, st).complete for k in range(g.num_shards)] for st in g.stages()},
        }
    return view


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("flips")
    url = str(root / "s.zarr")
    build(url)
    return url, reader_view(url)


def files_of(url: str) -> list[Path]:
    return sorted(p for p in Path(url).rglob("*") if p.is_file())


def test_every_single_byte_flip_that_changes_what_a_reader_sees_is_reported(pristine, tmp_path):
    url, view = pristine
    kinds = {}
    for f in files_of(url):
        rel = f.relative_to(url).as_posix()
        kind = ("plan" if "/_plan-" in rel else "version" if rel.startswith("_versions/")
                else "consolidated" if "consolidated-" in rel
                else "part" if rel.startswith("_manifest") else "zarr.json" if rel.endswith("zarr.json") else "data")
        kinds.setdefault(kind, []).append(rel)
    assert set(kinds) == {"plan", "version", "consolidated", "part", "zarr.json", "data"}
    rng = np.random.default_rng(1)
    flips = changed = 0
    for kind, rels in sorted(kinds.items()):
        for rel in rels:
            size = (Path(url) / rel).stat().st_size
            for pos in rng.choice(size, size=min(size, 4), replace=False):
                copy = tmp_path / f"c{flips}.zarr"
                shutil.copytree(url, copy)
                target = copy / rel
                data = bytearray(target.read_bytes())
                data[int(pos)] ^= 0x5A
                target.write_bytes(bytes(data))
                flips += 1
                try:
                    same = reader_view(str(copy)) == view
                except Exception:  # noqa: BLE001 - a reader that fails sees something else
                    same = False
                try:
                    report = verify_store(str(copy))
                    reported = not report.ok
                    where = " ".join(str(p) for p in report.problems + report.incomplete)
                except StoreError as exc:  # the store as a whole cannot be opened: said plainly
                    reported, where = True, str(exc)
                if not same:
                    changed += 1
                    assert reported, f"flip at byte {pos} of {rel} ({kind}) changes what readers see, verify says OK"
                shutil.rmtree(copy)
    assert flips >= 40 and changed >= flips // 2
