"""Consolidated manifests: readers get exactly what the parts say, with a few requests per stage;
stale, corrupt or interrupted consolidations never change what is read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from depthdata.store import Store
from depthdata.store import consolidated as cons
from depthdata.store.verify import verify_store

H, W, N, S = 4, 6, 10, 3  # 10 samples in shards of 3 → 4 shards, the last one short


def make_group(url: str):
    store = Store.create(url)
    ids = [f"d/train/{i:02d}" for i in range(N)]
    group = store.create_group("d", "train", ids, [f"file:///src/{i}.png" for i in range(N)], H, W, S)
    group.ensure_fields(["rgb"])
    return group


def write(group, shard: int, tag: str = "a") -> None:
    idx = group.shard_range(shard)
    rgb = np.stack([np.full((H, W, 3), i, np.uint8) for i in idx])
    rows = [{"status": "ok", "reason": "", "tag": tag, "value": float(i) * 0.5} for i in idx]
    group.write_shard(shard, "ingest", {"rgb": rgb}, rows, config={"tag": tag})


def expected_rows(tags: dict[int, str]) -> list[tuple[int, str, float]]:
    """(index, tag, value) of every sample of the given shards, computed from the writer's rule."""
    return [(i, tags[i // S], i * 0.5) for i in range(N) if i // S in tags]


def read_rows(group) -> list[tuple[int, str, float]]:
    table = Store.open(group.store.url).group(group.path).manifest("ingest")
    if table.num_rows == 0:
        return []
    return list(zip(*(table.column(c).to_pylist() for c in ("index", "tag", "value"))))


def consolidated_files(group) -> list[str]:
    return sorted(n for n in cons.list_stage(group.store.fs, group.stage_dir("ingest")) if cons.CONSOLIDATED_RE.match(n))


def test_consolidated_plus_newer_parts_read_exactly_the_parts(tmp_path):
    group = make_group(str(tmp_path / "s.zarr"))
    write(group, 0)
    write(group, 1)
    assert group.consolidate("ingest") == "consolidated-000001.parquet"
    assert group.consolidate("ingest") is None  # nothing new: no second file
    write(group, 3)  # a build that goes on after the consolidation
    assert read_rows(group) == expected_rows({0: "a", 1: "a", 3: "a"})
    fresh = Store.open(group.store.url).group(group.path)
    assert fresh.complete_shards("ingest") == [0, 1, 3]
    index = fresh.stage_index("ingest")
    assert index.consolidated == "consolidated-000001.parquet" and index.read_from_parts == [3]
    # readable as-is by pandas: the rows of the parts it was made from
    df = pq.read_table(f"{group.stage_dir('ingest')}/consolidated-000001.parquet").to_pandas()
    assert df["index"].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_consolidated_stage_is_opened_without_reading_any_part(tmp_path, monkeypatch):
    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k)
    group.consolidate("ingest")
    read = []
    real = cons.mf.read_bytes
    monkeypatch.setattr(cons.mf, "read_bytes", lambda fs, path: read.append(path.rsplit("/", 1)[1]) or real(fs, path))
    fresh = Store.open(group.store.url).group(group.path)
    assert fresh.complete_shards("ingest") == [0, 1, 2, 3]
    assert fresh.manifest("ingest").num_rows == N
    # no part; the consolidated file once (the second look reuses what it read); the plan is the group's own
    assert [n for n in read if not n.startswith("_plan-")] == ["consolidated-000001.parquet"]


def test_parts_rewritten_with_other_settings_after_consolidation_win(tmp_path):
    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k, "a")
    group.consolidate("ingest")
    write(group, 2, "relabelled")  # re-run of one shard with other settings, after the consolidation
    assert read_rows(group) == expected_rows({0: "a", 1: "a", 2: "relabelled", 3: "a"})
    fresh = Store.open(group.store.url).group(group.path)
    assert [s.complete for s in fresh.shard_statuses("ingest", {"tag": "a"})] == [True, True, False, True]
    assert fresh.stage_index("ingest").stale == [2]
    # the next consolidation records the new part, and readers then take everything from it
    assert group.consolidate("ingest") == "consolidated-000002.parquet"
    assert consolidated_files(group) == ["consolidated-000002.parquet"]  # the older one is pruned
    assert read_rows(group) == expected_rows({0: "a", 1: "a", 2: "relabelled", 3: "a"})


def test_a_part_removed_after_consolidation_is_no_longer_complete(tmp_path):
    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k)
    group.consolidate("ingest")
    os.remove(group.part_path("ingest", 1))
    fresh = Store.open(group.store.url).group(group.path)
    assert fresh.complete_shards("ingest") == [0, 2, 3]
    assert read_rows(group) == expected_rows({0: "a", 2: "a", 3: "a"})


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_consolidated_file_is_ignored_with_a_warning(tmp_path, caplog, damage):
    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k)
    name = group.consolidate("ingest")
    path = f"{group.stage_dir('ingest')}/{name}"
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # a byte in the Parquet footer, where the schema and the record live
        data[-20] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert read_rows(group) == expected_rows({0: "a", 1: "a", 2: "a", 3: "a"})
    assert any(name in r.getMessage() and "reading the parts" in r.getMessage() for r in caplog.records)
    report = verify_store(group.store.url)
    assert not report.ok and any(name in p.problem for p in report.problems)


def test_verify_reports_a_consolidated_file_that_disagrees_with_its_parts(tmp_path):
    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k)
    name = group.consolidate("ingest")
    assert verify_store(group.store.url).ok
    path = f"{group.stage_dir('ingest')}/{name}"
    table = pq.read_table(path)
    values = table.column("value").to_pylist()
    values[4] = 99.0  # sample 4 (shard 1) says something its part does not
    table = table.set_column(table.column_names.index("value"), "value", [values])
    pq.write_table(table, path)  # same record in the footer, other rows
    report = verify_store(group.store.url)
    assert [(p.shard, name in p.problem) for p in report.problems] == [(1, True)]


def test_kill_between_the_last_part_and_the_consolidation_loses_nothing(tmp_path):
    """A writer killed (SIGKILL) right after its last part, before consolidating: the next reader
    sees every part, and the next run consolidates without redoing any shard."""
    url = str(tmp_path / "s.zarr")
    make_group(url)
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from depthdata.store import Store, Group
        sys_path = {os.path.dirname(__file__)!r}
        import sys; sys.path.insert(0, sys_path)
        from test_consolidated import write
        group = Store.open({url!r}, mode="r+").group("d/train")
        write(group, 0)
        group.consolidate("ingest")
        for k in range(1, group.num_shards):
            write(group, k)
        os.kill(os.getpid(), signal.SIGKILL)  # where the stage's consolidation would come next
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    group = Store.open(url, mode="r+").group("d/train")
    assert read_rows(group) == expected_rows({0: "a", 1: "a", 2: "a", 3: "a"})
    assert group.stage_index("ingest").read_from_parts == [1, 2, 3]
    assert group.consolidate("ingest") == "consolidated-000002.parquet"
    assert Store.open(url).group("d/train").stage_index("ingest").read_from_parts == []
    assert verify_store(url).ok


def test_compact_command_consolidates_every_group_and_stage(tmp_path, capsys):
    from depthdata.cli import main

    group = make_group(str(tmp_path / "s.zarr"))
    for k in range(group.num_shards):
        write(group, k)
    assert main(["compact", group.store.url]) == 0
    assert "d/train (ingest): consolidated-000001.parquet" in capsys.readouterr().out
    assert consolidated_files(group) == ["consolidated-000001.parquet"]
    assert main(["compact", group.store.url]) == 0  # again: nothing to do, nothing written
    assert consolidated_files(group) == ["consolidated-000001.parquet"]
