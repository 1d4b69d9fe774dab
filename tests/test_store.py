import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from depthdata.cli import main as cli_main
from depthdata.errors import StoreError
from depthdata.store import Store, auto_shard_size, select_groups
from depthdata.store.verify import verify_store

H, W = 6, 8


def make_group(url, n=5, shard_size=2, fields=("rgb", "depth")):
    store = Store.create(url, catalog={"note": "test"})
    ids = [f"nyu/train/{i:03d}" for i in range(n)]
    group = store.create_group("nyu", "train", ids, [f"/src/{i}.png" for i in range(n)], H, W, shard_size)
    group.ensure_fields(fields)
    return store, group


def shard_data(group, k):
    idx = group.shard_range(k)
    rgb = np.stack([np.full((H, W, 3), i + 1, np.uint8) for i in idx])
    depth = np.stack([np.full((H, W), 0.5 * (i + 1), np.float32) for i in idx])
    return {"rgb": rgb, "depth": depth}, [{"status": "ok"} for _ in idx]


def write_all(group):
    for k in range(group.num_shards):
        data, rows = shard_data(group, k)
        group.write_shard(k, "ingest", data, rows)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_round_trip_random_access_and_shards(tmp_path, kind):
    url = str(tmp_path / "s.zarr") if kind == "local" else f"memory://{tmp_path.name}/s.zarr"
    _, group = make_group(url)
    write_all(group)
    store = Store.open(url)
    g = store.group("nyu/train")
    assert (len(g), g.num_shards, list(g.shard_range(2))) == (5, 3, [4])
    by_index = g.read(3, ["rgb", "depth"])
    by_id = g.read("nyu/train/003", ["depth"])
    assert by_index["sample_id"] == "nyu/train/003"
    assert int(by_index["rgb"][0, 0, 0]) == 4
    assert float(by_id["depth"][0, 0]) == 2.0
    shard = g.read_shard(1, ["rgb"])
    assert shard["rgb"].shape == (2, H, W, 3) and sorted(shard) == ["rgb"]
    assert [r[0, 0, 0] for r in shard["rgb"]] == [3, 4]
    manifest = g.manifest().to_pandas()
    assert manifest["sample_id"].tolist() == [f"nyu/train/{i:03d}" for i in range(5)]
    assert manifest["status"].eq("ok").all()
    assert verify_store(url).ok


def test_plan_accessors_return_what_create_group_was_given(tmp_path):
    url = str(tmp_path / "s.zarr")
    ids = [f"nyu/train/{i:03d}" for i in range(5)]
    uris = [f"/src/{i}.png" for i in range(5)]
    locators = [f'{{"n": {i}}}' for i in range(5)]
    Store.create(url).create_group("nyu", "train", ids, uris, H, W, 2, locators=locators)
    g = Store.open(url).group("nyu/train")
    assert g.source_uris() == uris
    assert [g.source_uris(k) for k in range(3)] == [uris[0:2], uris[2:4], uris[4:5]]
    assert g.plan_rows(1) == [{"index": i, "sample_id": ids[i], "source_uri": uris[i], "locator": locators[i],
                               "fingerprint": None} for i in (2, 3)]
    table = g.plan_table()
    assert table.column_names == ["index", "sample_id", "source_uri", "locator", "fingerprint"]
    assert table.column("sample_id").to_pylist() == ids == g.sample_ids
    assert g.plan_table() is table  # read once per Group
    with pytest.raises(IndexError, match="shard 3 out of range"):
        g.source_uris(3)


def test_part_path_is_the_file_write_shard_leaves(tmp_path):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    before = {p for p in (group.part_path("ingest", k) for k in range(3)) if os.path.exists(p)}
    data, rows = shard_data(group, 1)
    group.write_shard(1, "ingest", data, rows)
    written = {os.path.join(d, f) for d, _, files in os.walk(f"{url}/_manifest") for f in files
               if not f.startswith("_plan-")}
    assert before == set() and written == {group.part_path("ingest", 1)}
    assert group.part_path("ingest", 1) == f"{url}/_manifest/nyu/train/ingest/shard-000001.parquet"


def test_select_groups_checks_names_and_defaults_to_every_group(tmp_path):
    url = str(tmp_path / "s.zarr")
    store, _ = make_group(url)
    store.create_group("nyu", "test", ["nyu/test/0"], ["/src/t0.png"], H, W, 1)
    assert select_groups(url) == select_groups(url, []) == ["nyu/test", "nyu/train"]
    assert select_groups(url, ["nyu/train"]) == ["nyu/train"]
    with pytest.raises(StoreError, match=r"no group 'nyu/val' \(groups: nyu/test, nyu/train\)"):
        select_groups(url, ["nyu/train", "nyu/val"])
    Store.create(str(tmp_path / "empty.zarr"))
    with pytest.raises(StoreError, match="the store has no groups"):
        select_groups(str(tmp_path / "empty.zarr"))


def test_zarr_layout_is_sharded_one_sample_per_chunk(tmp_path):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    write_all(group)
    arr = zarr.open_array(f"{url}/nyu/train/depth")
    assert arr.metadata.zarr_format == 3
    assert arr.chunks == (1, H, W) and arr.shards == (2, H, W)
    # one object per shard on disk: shards 0..2 of the depth array
    assert sorted(os.listdir(f"{url}/nyu/train/depth/c")) == ["0", "1", "2"]


def test_later_stage_adds_a_field_with_its_own_completion(tmp_path):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    write_all(group)
    group.ensure_fields(["sparse"])
    cfg = {"beam_model": "vlp16"}
    sparse = np.zeros((2, H, W), np.float32)
    sparse[:, 1, 1] = 7.0
    group.write_shard(0, "lidar", {"sparse": sparse}, [{"returns": 1}, {"returns": 1}], config=cfg)
    assert group.is_complete(0, "lidar", cfg)
    assert not group.is_complete(1, "lidar", cfg)
    # other settings → the shard must be redone
    assert not group.is_complete(0, "lidar", {"beam_model": "hdl64e"})
    assert group.is_complete(0, "ingest")
    merged = group.manifest().to_pandas()
    assert merged.loc[0, "returns"] == 1 and np.isnan(merged.loc[4, "returns"])
    with pytest.raises(ValueError, match="do not belong"):
        group.write_shard(1, "lidar", {"rgb": np.zeros((2, H, W, 3), np.uint8)}, [{}, {}])


def test_reopening_a_group_with_another_plan_is_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    store, _ = make_group(url)
    same = store.create_group("nyu", "train", [f"nyu/train/{i:03d}" for i in range(5)],
                              [f"/src/{i}.png" for i in range(5)], H, W, 2)
    assert len(same) == 5
    # more samples is an append (Group.append), not another plan: the group comes back as it is
    assert len(store.create_group("nyu", "train", [f"nyu/train/{i:03d}" for i in range(6)],
                                  [f"/src/{i}.png" for i in range(6)], H, W, 2)) == 5
    for other in ({"height": H + 1}, {"shard_size": 3}, {"resize": "crop"}):
        kw = {"height": H, "width": W, "shard_size": 2, **other}
        with pytest.raises(StoreError, match="built with other settings.*new store"):
            store.create_group("nyu", "train", [f"nyu/train/{i:03d}" for i in range(5)],
                               [f"/src/{i}.png" for i in range(5)], kw.pop("height"), kw.pop("width"),
                               kw.pop("shard_size"), **kw)
    with pytest.raises(StoreError, match="duplicate sample id"):
        store.create_group("nyu", "test", ["a", "a"], ["x", "y"], H, W, 2)


def test_foreign_and_unknown_version_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Store.open(str(tmp_path / "missing.zarr"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a depthdata store"):
        Store.open(str(tmp_path / "junk"))
    with pytest.raises(StoreError, match="not empty"):
        Store.create(str(tmp_path / "junk"))
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not a depthdata store"):
        Store.open(str(tmp_path / "plain.zarr"))
    (tmp_path / "corrupt.zarr").mkdir()
    (tmp_path / "corrupt.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt or foreign zarr.json"):
        Store.open(str(tmp_path / "corrupt.zarr"))
    url = str(tmp_path / "s.zarr")
    make_group(url)
    root = zarr.open_group(url, mode="r+")
    root.attrs["depthdata"] = {**root.attrs["depthdata"], "schema_version": 99}
    with pytest.raises(StoreError, match="schema version 99 is not supported"):
        Store.open(url)


def test_verify_catches_altered_and_missing_data(tmp_path, capsys):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    write_all(group)
    assert cli_main(["verify", url]) == 0
    # alter one sample's depth behind the manifest's back
    arr = zarr.open_array(f"{url}/nyu/train/depth", mode="r+")
    arr[3] = np.zeros((H, W), np.float32)
    # and delete the data of shard 0 of rgb while its manifest part stays
    shutil.rmtree(f"{url}/nyu/train/rgb/c/0")
    report = verify_store(url)
    assert not report.ok
    text = "\n".join(map(str, report.problems))
    assert "shard 1 (ingest): field depth: checksum mismatch for sample 'nyu/train/003'" in text
    assert "shard 0 (ingest): field rgb: checksum mismatch for sample 'nyu/train/000'" in text
    assert cli_main(["verify", url]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM nyu/train/depth/c/1/0/0: nyu/train shard 1 (ingest): field depth: checksum mismatch" in out
    assert "PROBLEM nyu/train/rgb/c/0/0/0/0: nyu/train shard 0 (ingest): field rgb" in out


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from depthdata.store import Store
    from depthdata.store import manifest as mf
    H, W = 6, 8
    store = Store.open(sys.argv[1], mode="r+")
    group = store.group("nyu/train")
    def die(*a, **k):  # the process dies after the data, before the manifest part
        os.kill(os.getpid(), signal.SIGKILL)
    mf.atomic_write = die
    group.write_shard(1, "ingest", {"rgb": np.full((2, H, W, 3), 9, np.uint8),
                                    "depth": np.full((2, H, W), 9.0, np.float32)}, [{"status": "ok"}] * 2)
    """
)


def test_kill_between_data_and_manifest_leaves_an_incomplete_shard_that_reruns(tmp_path, capsys):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    data, rows = shard_data(group, 0)
    group.write_shard(0, "ingest", data, rows)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, url], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    g = Store.open(url, mode="r+").group("nyu/train")
    assert g.is_complete(0, "ingest") and not g.is_complete(1, "ingest")
    assert float(g.read(2, ["depth"])["depth"][0, 0]) == 9.0  # the data did land ...
    report = verify_store(url)  # ... but the shard is not complete
    assert [(p.shard, p.stage) for p in report.incomplete] == [(1, "ingest"), (2, "ingest")]
    assert cli_main(["verify", url]) == 1
    assert "INCOMPLETE _manifest/nyu/train/ingest/shard-000001.parquet: nyu/train shard 1 (ingest)" \
        in capsys.readouterr().out
    for k in (1, 2):  # the re-run redoes what is incomplete
        data, rows = shard_data(g, k)
        g.write_shard(k, "ingest", data, rows)
    assert verify_store(url).ok
    assert float(g.read(2, ["depth"])["depth"][0, 0]) == 1.5


def test_unreadable_manifest_part_is_not_complete(tmp_path):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    write_all(group)
    part = f"{url}/_manifest/nyu/train/ingest/shard-000001.parquet"
    with open(part, "r+b") as f:
        f.truncate(100)
    assert not group.is_complete(1, "ingest")
    assert "unreadable" in str(verify_store(url).problems[0])


def test_inspect_reports_groups_fields_completeness(tmp_path, capsys):
    url = str(tmp_path / "s.zarr")
    _, group = make_group(url)
    data, rows = shard_data(group, 0)
    rows[1] = {"status": "quarantined", "reason": "corrupt"}
    group.write_shard(0, "ingest", data, rows)
    assert cli_main(["inspect", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    g = info["groups"]["nyu/train"]
    assert info["schema_version"] == 2
    assert g["samples"] == 5 and g["fields"] == ["depth", "rgb"]
    assert g["stages"]["ingest"] == {"complete": 1, "of": 3, "incomplete_shards": [1, 2]}
    assert g["status"] == {"ok": 1, "quarantined": 1}
    assert g["bytes"] > 0
    assert cli_main(["inspect", url]) == 0
    assert "1/3 shards complete" in capsys.readouterr().out


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert cli_main(["verify", str(tmp_path / "nope.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such store" in err and "Traceback" not in err


def test_auto_shard_size_targets_about_96_mib():
    s = auto_shard_size(480, 640, ["rgb", "depth", "teacher", "teacher_conf", "sparse"])
    per_sample = 480 * 640 * (3 + 4 + 2 + 2 + 4)
    assert s == 96 * 2**20 // per_sample
    assert 80 * 2**20 <= s * per_sample <= 96 * 2**20


def test_reopening_with_the_same_catalog_writes_nothing(tmp_path):
    url = str(tmp_path / "s.zarr")
    Store.create(url, catalog={"datasets": {"a": {"kind": "images"}}})
    before = (tmp_path / "s.zarr" / "zarr.json").stat().st_mtime_ns
    Store.create(url, catalog={"datasets": {"a": {"kind": "images"}}})  # what every planning pass does
    assert (tmp_path / "s.zarr" / "zarr.json").stat().st_mtime_ns == before
    Store.create(url, catalog={"datasets": {"b": {"kind": "images"}}})
    assert Store.open(url).meta["catalog"] == {"datasets": {"b": {"kind": "images"}}}
