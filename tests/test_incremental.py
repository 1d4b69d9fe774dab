"""Incremental, versioned builds: a source that grows, changes or loses items is appended to as new
shards (old ones untouched), every build commits a version, and readers can pin one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthdata.catalog import load_catalog
from depthdata.cli import main as cli_main
from depthdata.errors import StoreError
from depthdata.ingest import stage as ingest
from depthdata.pipeline import commit, open_store, run_local
from depthdata.store import Store
from depthdata.store.verify import verify_store
from depthdata.stream import ResumableLoader, ShardDataset
from depthdata.teacher.stage import stage as teacher

S = 2  # shard size
H, W = 10, 12


def colour(i: int) -> tuple[int, int, int]:
    return (7 * i + 3, 255 - 9 * i, (41 * i) % 256)


def write_image(root: Path, i: int, rgb: tuple[int, int, int] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    img = np.empty((20, 24, 3), np.uint8)
    img[:] = rgb or colour(i)
    path = root / f"img{i:02d}.png"
    cv2.imwrite(str(path), img[:, :, ::-1])  # OpenCV writes BGR
    return path


def make_catalog(tmp: Path, n: int, resolution=(H, W)) -> Path:
    for i in range(n):
        write_image(tmp / "pics", i)
    cat = tmp / "catalog.yaml"
    cat.write_text(textwrap.dedent(f"""
        store: {{url: store.zarr, shard_size: {S}}}
        teacher: {{allow_random_init: true, device: cpu}}
        datasets:
          pics: {{kind: images, root: pics, resolution: [{resolution[0]}, {resolution[1]}]}}
    """))
    return cat


def build(cat: Path) -> dict:
    """Ingest and teacher over every shard in this process, then commit: what a build does."""
    catalog = load_catalog(cat)
    store = open_store(catalog, create=True)
    written = {}
    for st in (ingest, teacher):
        groups = st.prepare(store, catalog, "pics")
        totals = run_local(st, groups, st.settings(catalog, "pics"), progress=False, commit=False)
        written[st.name] = totals.written
    return {"written": written, "version": commit(catalog)}


def file_hashes(store_url: str, exclude_zarr_json: bool = True) -> dict[str, str]:
    out = {}
    for p in sorted(Path(store_url).rglob("*")):
        if p.is_file() and not (exclude_zarr_json and p.name == "zarr.json") and "_build.lock" not in p.name:
            out[p.relative_to(store_url).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def served(url: str, **kw) -> dict[str, tuple[int, int, int]]:
    """sample id → the flat colour the stream serves for it."""
    ds = ShardDataset(url, fields=("rgb",), shuffle=False, streams=1, tail="pad", **kw)
    out = {}
    for s in ds:
        out[s["sample_id"]] = tuple(int(v) for v in s["rgb"][:, 0, 0])
    return out


def sid(i: int) -> str:
    return f"pics/train/img{i:02d}.png"


def test_a_source_that_grows_is_appended_as_new_shards_and_old_files_stay_byte_identical(tmp_path):
    cat = make_catalog(tmp_path, 5)
    url = str(tmp_path / "store.zarr")
    first = build(cat)
    assert first["written"] == {"ingest": 5, "teacher": 5} and first["version"].number == 1
    before = file_hashes(url)
    # a trainer opened the store before the next build: it reads version 1 throughout
    streaming = ShardDataset(url, fields=("rgb",), shuffle=False, streams=1, tail="pad")
    for i in (5, 6, 7):
        write_image(tmp_path / "pics", i)
    second = build(cat)
    assert streaming.version == 1
    assert {s["sample_id"] for s in streaming} == {sid(i) for i in range(5)}
    # only the 3 new samples went through ingest and the teacher
    assert second["written"] == {"ingest": 3, "teacher": 3}
    v2 = second["version"]
    assert (v2.number, v2.added, v2.removed, v2.samples, v2.parent) == (2, 3, 0, 8, 1)
    after = file_hashes(url)
    # every file of the first build is still there, byte for byte (shards, parts, plan segment 0)
    assert {k: after.get(k) for k in before if "consolidated-" not in k} == \
        {k: v for k, v in before.items() if "consolidated-" not in k}
    group = Store.open(url).group("pics/train")
    # 5 samples filled shards 0..2 (slot 5 unused); the new ones start shard 3: slots 6, 7, 8
    assert (len(group), group.num_slots, group.num_shards) == (8, 9, 5)
    assert [group.index_of(sid(i)) for i in range(8)] == [0, 1, 2, 3, 4, 6, 7, 8]
    assert served(url) == {sid(i): colour(i) for i in range(8)}
    # the first version still reads as it was
    assert served(url, version=1) == {sid(i): colour(i) for i in range(5)}
    assert len(Store.open(url, version=1).group("pics/train")) == 5
    assert verify_store(url).ok
    # nothing changed: no work and no new version
    third = build(cat)
    assert third == {"written": {"ingest": 0, "teacher": 0}, "version": None}
    assert [v.number for v in Store.open(url).history()] == [1, 2]


def test_changed_and_removed_items_are_tombstoned_and_replacements_go_to_new_shards(tmp_path):
    cat = make_catalog(tmp_path, 4)
    url = str(tmp_path / "store.zarr")
    build(cat)
    before = file_hashes(url)
    pics = tmp_path / "pics"
    write_image(pics, 1, rgb=(1, 2, 3))  # content changed
    os.remove(pics / "img02.png")  # removed
    data = (pics / "img03.png").read_bytes()
    (pics / "img03.png").write_bytes(data)  # same bytes, new modification time: touched only
    os.utime(pics / "img03.png", ns=(1, 1))
    out = build(cat)
    v = out["version"]
    # one re-ingest (the changed image); the touched one was re-read but not re-added
    assert out["written"] == {"ingest": 1, "teacher": 1}
    assert (v.number, v.added, v.removed, v.samples) == (2, 1, 2, 3)
    after = file_hashes(url)
    assert all(after[k] == h for k, h in before.items() if "consolidated-" not in k)
    got = served(url)
    assert got == {sid(0): colour(0), sid(1): (1, 2, 3), sid(3): colour(3)}
    group = Store.open(url).group("pics/train")
    assert group.index_of(sid(1)) == 4  # its replacement opened shard 2
    assert not group.live_mask()[[1, 2]].any()
    assert sid(2) not in group.manifest("ingest").column("sample_id").to_pylist()
    # the old version still serves the old content of img01 and the removed img02
    assert served(url, version=1) == {sid(i): colour(i) for i in range(4)}
    # a third build sees nothing new: the touch was recorded
    assert build(cat)["written"] == {"ingest": 0, "teacher": 0}


def test_history_lists_versions_and_inspect_pins_one(tmp_path, capsys):
    cat = make_catalog(tmp_path, 3)
    url = str(tmp_path / "store.zarr")
    build(cat)
    write_image(tmp_path / "pics", 3)
    build(cat)
    capsys.readouterr()
    assert cli_main(["history", url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:6] == ["version", "committed", "kind", "added", "removed", "samples"]
    assert [ln.split()[0] for ln in lines[1:]] == ["1", "2"]
    assert [ln.split()[2:6] for ln in lines[1:]] == [["build", "3", "0", "3"], ["build", "1", "0", "4"]]
    assert cli_main(["history", url, "--json"]) == 0
    assert [v["groups"]["pics/train"]["samples"] for v in json.loads(capsys.readouterr().out)] == [3, 4]
    assert cli_main(["inspect", url, "--json", "--version", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["version"], info["latest_version"], info["groups"]["pics/train"]["samples"]) == (1, 2, 3)
    assert cli_main(["inspect", url, "--version", "9"]) == 2
    assert "no version 9 (versions: 1, 2)" in capsys.readouterr().err


def test_a_build_is_invisible_until_committed(tmp_path):
    cat = make_catalog(tmp_path, 3)
    url = str(tmp_path / "store.zarr")
    build(cat)
    write_image(tmp_path / "pics", 3)
    catalog = load_catalog(cat)
    store = open_store(catalog, create=True)
    [group] = ingest.prepare(store, catalog, "pics")
    run_local(ingest, [group], ingest.settings(catalog, "pics"), progress=False, commit=False)
    # written and consolidated, not committed: readers still see version 1
    assert Store.open(url).version.number == 1
    assert served(url) == {sid(i): colour(i) for i in range(3)}
    assert len(Store.open(url, version="working").group("pics/train")) == 4


def test_another_resolution_is_refused_saying_to_use_a_new_store(tmp_path):
    cat = make_catalog(tmp_path, 3)
    build(cat)
    cat.write_text(cat.read_text().replace(f"[{H}, {W}]", f"[{H + 2}, {W}]"))
    catalog = load_catalog(cat)
    with pytest.raises(StoreError, match="built with other settings.*height.*new store"):
        ingest.prepare(open_store(catalog, create=True), catalog, "pics")


def test_a_training_stream_resumed_after_a_new_version_keeps_serving_its_version(tmp_path):
    cat = make_catalog(tmp_path, 6)
    url = str(tmp_path / "store.zarr")
    build(cat)

    def loader():
        ds = ShardDataset(url, fields=("rgb",), shuffle=True, seed=3, batch_size=2, streams=1)
        return ds, ResumableLoader(ds, num_workers=0)

    ds, ld = loader()
    order = [sample_id for batch in ld for sample_id in batch["sample_id"]]
    ds, ld = loader()
    it = iter(ld)
    first = next(it)["sample_id"]
    state = ld.state_dict()
    for i in (6, 7, 8, 9):
        write_image(tmp_path / "pics", i)
    assert build(cat)["version"].number == 2
    ds2, ld2 = loader()  # a new process: the newest version is 2 ...
    assert ds2.version == 2 and len(ds2) == 10
    ld2.load_state_dict(state)  # ... and the saved state brings it back to version 1
    assert ds2.version == 1
    rest = [sample_id for batch in ld2 for sample_id in batch["sample_id"]]
    assert list(first) + rest == order


KILL_SCRIPT = """
import os, signal, sys
from depthdata.catalog import load_catalog
from depthdata.ingest import stage as ingest
from depthdata.pipeline import open_store
catalog = load_catalog(sys.argv[1])
[group] = ingest.prepare(open_store(catalog, create=True), catalog, "pics")
settings = ingest.settings(catalog, "pics")
done = 0
for k in range(group.num_shards):
    if not ingest.run_shard(group, k, settings).skipped:
        done += 1
        if done == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-build: after two new shards, before any commit
"""


def test_a_killed_incremental_build_leaves_the_previous_version_and_the_next_run_completes(tmp_path):
    cat = make_catalog(tmp_path, 4)
    url = str(tmp_path / "store.zarr")
    build(cat)
    for i in range(4, 10):
        write_image(tmp_path / "pics", i)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cat)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Store.open(url).version.number == 1
    assert served(url) == {sid(i): colour(i) for i in range(4)}
    out = build(cat)
    assert out["written"]["ingest"] == 2 and out["written"]["teacher"] == 6  # the 2 shards not done
    assert out["version"].number == 2 and out["version"].added == 6
    assert served(url) == {sid(i): colour(i) for i in range(10)}
    assert verify_store(url).ok


def test_compact_drop_removed_moves_live_samples_deletes_old_shards_and_expires_older_versions(tmp_path, capsys):
    cat = make_catalog(tmp_path, 6)
    url = str(tmp_path / "store.zarr")
    build(cat)
    os.remove(tmp_path / "pics" / "img01.png")  # shard 0 keeps img00
    os.remove(tmp_path / "pics" / "img04.png")  # shard 2 keeps img05
    assert build(cat)["version"].removed == 2
    expected = {sid(i): colour(i) for i in (0, 2, 3, 5)}
    assert served(url) == expected
    shard_files = {k: Path(url) / "pics" / "train" / "rgb" / "c" / str(k) / "0" / "0" / "0" for k in range(3)}
    assert all(p.is_file() for p in shard_files.values())
    teacher_before = served_teacher(url)
    capsys.readouterr()
    assert cli_main(["compact", url, "--drop-removed"]) == 0
    out = capsys.readouterr().out
    assert "pics/train: deleted shard(s) [0, 2], moved 2 live sample(s)" in out and "committed version 3" in out
    # the old shards' data and parts are gone; shard 1 (untouched) is still there
    assert [k for k, p in shard_files.items() if p.exists()] == [1]
    assert not (Path(url) / "_manifest" / "pics" / "train" / "teacher" / "shard-000000.parquet").exists()
    group = Store.open(url).group("pics/train")
    assert group.live_shards() == [1, 3] and sorted(group.index_of(sid(i)) for i in (0, 5)) == [6, 7]
    # same samples, same values, teacher labels included (copied, not recomputed)
    assert served(url) == expected
    assert served_teacher(url) == teacher_before
    with pytest.raises(StoreError, match="version 2 has expired.*read version 3 or later"):
        Store.open(url, version=2)
    assert verify_store(url).ok
    # the store is complete: the next build has nothing to do and commits nothing
    assert build(cat) == {"written": {"ingest": 0, "teacher": 0}, "version": None}


def served_teacher(url: str, version: int | None = None) -> dict[str, bytes]:
    ds = ShardDataset(url, fields=("teacher",), shuffle=False, streams=1, tail="pad", version=version)
    return {s["sample_id"]: s["teacher"].numpy().tobytes() for s in ds}


def test_a_version_reads_its_plan_from_one_checkpoint_file_however_many_builds_added_segments(tmp_path):
    cat = make_catalog(tmp_path, 3)
    url = str(tmp_path / "store.zarr")
    build(cat)
    for i in (3, 4):  # two more builds, each adding an image: segments 1 and 2
        write_image(tmp_path / "pics", i)
        build(cat)
    os.remove(tmp_path / "pics" / "img00.png")  # and one removing one: segment 3 (a tombstone)
    assert build(cat)["version"].number == 4
    plan_dir = tmp_path / "store.zarr" / "_manifest" / "pics" / "train"
    versions = {n: json.loads((tmp_path / "store.zarr" / "_versions" / f"v{n:06d}.json").read_text())
                for n in range(1, 5)}
    assert [versions[n]["groups"]["pics/train"]["plan_checkpoint"] for n in range(1, 5)] == [False, True, True, True]
    assert sorted(p.name for p in plan_dir.glob("_plan-upto-*")) == [
        "_plan-upto-000002.parquet", "_plan-upto-000003.parquet", "_plan-upto-000004.parquet"]
    want = {n: (Store.open(url, version=n).group("pics/train").layout.sample_ids(),
                Store.open(url, version=n).group("pics/train").live_mask().tolist()) for n in range(1, 5)}
    # shard size 2: each build's first new sample starts a shard (slots 3 and 5 are holes); img00 removed
    assert want[4] == ([sid(0), sid(1), sid(2), None, sid(3), None, sid(4)], [False, True, True, False, True,
                                                                            False, True])
    # with the segments gone, versions 2-4 still open (from their checkpoints) and see the same plan
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for seg in plan_dir.glob("_plan-0*.parquet"):
        seg.rename(hidden / seg.name)
    for n in (2, 3, 4):
        g = Store.open(url, version=n).group("pics/train")
        assert (g.layout.sample_ids(), g.live_mask().tolist()) == want[n]
    with pytest.raises(Exception):  # version 1 has no checkpoint: it reads its one segment
        Store.open(url, version=1).group("pics/train").layout


def test_verify_names_a_plan_checkpoint_that_differs_from_its_segments(tmp_path, capsys):
    cat = make_catalog(tmp_path, 2)
    url = str(tmp_path / "store.zarr")
    build(cat)
    write_image(tmp_path / "pics", 2)
    build(cat)
    assert verify_store(url).ok
    import pyarrow as pa
    import pyarrow.parquet as pq

    ckpt = tmp_path / "store.zarr" / "_manifest" / "pics" / "train" / "_plan-upto-000002.parquet"
    table = pq.read_table(ckpt)
    table = table.set_column(table.schema.get_field_index("sample_id"), "sample_id",
                             pa.array(["pics/train/other.png"] + table.column("sample_id").to_pylist()[1:]))
    pq.write_table(table, ckpt)
    report = verify_store(url)
    assert not report.ok
    assert any(p.file.endswith("_plan-upto-000002.parquet") and "plan checkpoint differs from segments 0-1" in p.problem
               for p in report.problems), report.problems
