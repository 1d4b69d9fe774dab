"""Streaming a store into PyTorch: order, splitting, resume, fields, augmentations, skipping.

Fixture stores encode each sample's 0-based index in its pixels (rgb channel 0 = index,
depth = index + 1 metres, teacher = position code) so identity is checked from the data itself.
"""

import json
import os
import logging
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from depthdata.errors import DepthdataError
from depthdata.store import Store
from depthdata.stream import (ColorJitter, Compose, GaussianBlur, RandomCrop, RandomHFlip, ResumableLoader, ShardDataset,
                              ShardMapDataset, crop, hflip)
from depthdata.stream.order import ShardRef, group_quotas, interleave, plan_epoch, remaining, worker_streams

H, W, P = 6, 10, 3


def shard_arrays(group, k):
    """Ingest + teacher data of shard ``k``: every pixel tells which sample and where it is."""
    idx = list(group.shard_range(k))
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.zeros((len(idx), H, W, 3), np.uint8)
    rgb[..., 0] = np.array(idx, np.uint8)[:, None, None]
    rgb[..., 1] = (yy * W + xx).astype(np.uint8)  # position code 0..59
    rgb[..., 2] = 200
    depth = np.stack([np.full((H, W), i + 1.0, np.float32) for i in idx])
    depth[:, 0, 0] = np.nan  # one invalid pixel per sample
    pairs = np.full((len(idx), P, 5), np.nan, np.float32)
    pairs[:, 0] = (1, 2, 4, 8, 1)   # A at (1,2), B at (4,8), A farther
    pairs[:, 1] = (0, 9, 5, 0, -1)  # corners
    teacher = np.broadcast_to((yy * W + xx).astype(np.float16) / 100, (len(idx), H, W)).copy()
    conf = np.full((len(idx), H, W), 0.5, np.float16)
    return ({"rgb": rgb, "depth": depth, "pairs": pairs}, {"teacher": teacher, "teacher_conf": conf})


def build(url, groups=(("nyu", "train", 16),), shard_size=4, skip_teacher=(), quarantine=()):
    store = Store.create(url)
    for dataset, split, n in groups:
        ids = [f"{dataset}/{split}/{i:03d}" for i in range(n)]
        g = store.create_group(dataset, split, ids, [f"/src/{i}.png" for i in range(n)], H, W, shard_size, P)
        g.ensure_fields(["rgb", "depth", "pairs", "teacher", "teacher_conf"])
        for k in range(g.num_shards):
            ingest, teacher = shard_arrays(g, k)
            rows = [{"status": "quarantined" if (dataset, i) in quarantine else "ok"} for i in g.shard_range(k)]
            g.write_shard(k, "ingest", ingest, rows)
            if (dataset, k) not in skip_teacher:
                g.write_shard(k, "teacher", teacher, [{"status": "ok"} for _ in g.shard_range(k)])
    return url


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("s") / "s.zarr"))


def ids_of(batches):
    return [s for b in batches for s in b["sample_id"]]


# -- the plan (pure functions) --------------------------------------------------------------

def refs(n, shard_size, group=0):
    return [ShardRef(group, k, tuple(range(k * shard_size, min(n, (k + 1) * shard_size))))
            for k in range(-(-n // shard_size))]


def test_plan_partitions_every_sample_exactly_once_across_ranks():
    shards = refs(48, 4)
    plans = [plan_epoch(shards, 1, seed=3, epoch=0, shuffle=True, world_size=2, rank=r, streams=4,
                        batch_size=3, window=2, tail="drop") for r in range(2)]
    items = np.concatenate([interleave(p.streams, 3) for p in plans])
    assert sorted(items[:, 1].tolist()) == list(range(48))
    assert all(len(p) == 24 for p in plans)


@pytest.mark.parametrize("tail,length,dropped,padded", [("drop", 12, 5, 0), ("pad", 24, 0, 7)])
def test_tail_policy_drops_or_pads_the_last_round(tail, length, dropped, padded):
    # 17 samples over 2 ranks × 2 streams × batch 3 = rounds of 12: drop keeps 12, pad makes 24
    shards = refs(17, 4)
    plans = [plan_epoch(shards, 1, seed=0, epoch=1, shuffle=True, world_size=2, rank=r, streams=2,
                        batch_size=3, window=1, tail=tail) for r in range(2)]
    got = np.concatenate([interleave(p.streams, 3) for p in plans])[:, 1].tolist()
    assert len(got) == length and plans[0].dropped == dropped and plans[0].padded == padded
    counts = Counter(got)
    if tail == "drop":
        assert max(counts.values()) == 1 and len(counts) == 12
    else:
        assert set(counts) == set(range(17)) and sum(c - 1 for c in counts.values()) == 7


def test_order_depends_on_seed_and_epoch_only():
    shards = refs(40, 5)
    kw = dict(shuffle=True, world_size=1, rank=0, streams=2, batch_size=2, window=2, tail="drop")
    a = interleave(plan_epoch(shards, 1, seed=1, epoch=0, **kw).streams, 2)
    b = interleave(plan_epoch(shards, 1, seed=1, epoch=0, **kw).streams, 2)
    c = interleave(plan_epoch(shards, 1, seed=1, epoch=1, **kw).streams, 2)
    d = interleave(plan_epoch(shards, 1, seed=2, epoch=0, **kw).streams, 2)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()
    assert sorted(a[:, 1]) == sorted(c[:, 1]) == list(range(40))


def round_robin(lists):
    """DataLoader's in-order merge: one item from each worker in turn, skipping finished ones."""
    out, pos = [], [0] * len(lists)
    while any(p < len(x) for p, x in zip(pos, lists)):
        for w, x in enumerate(lists):
            if pos[w] < len(x):
                out.append(x[pos[w]])
                pos[w] += 1
    return out


def test_workers_reproduce_the_global_order_when_interleaved_round_robin():
    # what DataLoader does: batch j comes from worker j % num_workers
    plan = plan_epoch(refs(64, 4), 1, seed=5, epoch=0, shuffle=True, world_size=1, rank=0, streams=4,
                      batch_size=4, window=2, tail="drop")
    whole = interleave(plan.streams, 4)
    for delivered in (0, 4, 12, 28):
        rest = remaining(plan, delivered)
        per_worker = [interleave(worker_streams(rest, w, 2), 4) for w in range(2)]
        batches = [[p[j: j + 4] for j in range(0, len(p), 4)] for p in per_worker]
        merged = np.concatenate(round_robin(batches))
        assert (merged == whole[delivered:]).all()


def test_group_quotas_follow_weights_exactly():
    assert group_quotas([10, 30], [0.5, 0.5], None) == [20, 20]
    assert group_quotas([10, 30], [1, 2], 10) == [3, 7]  # 3.33 / 6.67 → largest remainder
    assert group_quotas([10, 30], None, None) == [10, 30]
    with pytest.raises(DepthdataError):
        group_quotas([10, 30], [0, 0], None)


def test_resume_point_must_be_a_batch_boundary():
    plan = plan_epoch(refs(16, 4), 1, seed=0, epoch=0, shuffle=False, world_size=1, rank=0, streams=2,
                      batch_size=4, window=1, tail="drop")
    with pytest.raises(DepthdataError, match="batch size"):
        remaining(plan, 3)


def test_workers_must_divide_streams():
    plan = plan_epoch(refs(16, 4), 1, seed=0, epoch=0, shuffle=False, world_size=1, rank=0, streams=4,
                      batch_size=1, window=1, tail="drop")
    with pytest.raises(DepthdataError, match="divides"):
        worker_streams(plan.streams, 0, 3)


# -- the datasets over a real store ---------------------------------------------------------

def test_exactly_once_across_two_ranks_and_two_real_workers(store16):
    seen = []
    for rank in range(2):
        ds = ShardDataset(store16, fields=("rgb",), rank=rank, world_size=2, batch_size=2, streams=2, seed=7)
        batches = list(DataLoader(ds, batch_size=2, num_workers=2))
        got = ids_of(batches)
        # the pixels carry the index: the data really is the sample the id names
        for b in batches:
            for sid, img in zip(b["sample_id"], b["rgb"]):
                assert int(img[0, 0, 0]) == int(sid.rsplit("/", 1)[1])
        assert got == [f"{g}/{i:03d}" for g, i in ds.order()]  # workers keep the global order
        seen += got
    assert sorted(seen) == [f"nyu/train/{i:03d}" for i in range(16)]


def record_pipeline(sample, rng):
    """A transform run where the sample is read: which zarr codec pipeline that process uses."""
    import zarr
    return {**sample, "pipeline": zarr.config.get("codec_pipeline.path")}


@pytest.mark.parametrize("reader", ["chunks", "zarrs", "zarr"])
def test_workers_read_the_same_data_with_any_reader_and_the_trainer_keeps_zarr(store16, monkeypatch, reader):
    import zarr
    import depthdata.stream.dataset as dataset_module
    if reader != "chunks":  # a layout the chunk reader does not take: whole shards through zarr(s)
        monkeypatch.setattr(dataset_module, "field_layout", lambda arr: None)
    monkeypatch.setenv("DEPTHDATA_ZARRS", "1" if reader == "zarrs" else "0")
    trainer_pipeline = zarr.config.get("codec_pipeline.path")
    fields = ("rgb", "depth", "pairs", "teacher", "teacher_conf")
    ds = ShardDataset(store16, fields=fields, shuffle=False, batch_size=4, streams=2, transform=record_pipeline)
    assert (ds._source.layouts is not None) == (reader == "chunks")
    in_workers = {}
    for b in DataLoader(ds, batch_size=4, num_workers=2):
        # the chunk reader needs no zarr in the workers: they keep the pipeline they inherited
        assert set(b["pipeline"]) == {"zarrs.ZarrsCodecPipeline" if reader == "zarrs" else trainer_pipeline}
        for k, i in enumerate(b["index"].tolist()):
            in_workers[i] = {f: b[f][k] for f in b if isinstance(b[f], torch.Tensor) and f != "index"}
    assert zarr.config.get("codec_pipeline.path") == trainer_pipeline  # never the Rayon pool in a forking process
    monkeypatch.undo()
    in_trainer = {s["index"]: s for s in ShardDataset(store16, fields=fields, shuffle=False, streams=1)}
    assert sorted(in_workers) == sorted(in_trainer) == list(range(16))
    for i, got in in_workers.items():
        assert (got["rgb"][0] == i).all() and (got["depth"][0, 1:] == i + 1.0).all()
        for name, t in got.items():
            assert torch.equal(t.nan_to_num(-7), in_trainer[i][name].nan_to_num(-7)), (i, name)  # NaN = pairs padding


def test_order_is_the_same_with_0_1_or_2_workers(store16):
    def run(workers):
        ds = ShardDataset(store16, fields=("rgb",), batch_size=2, streams=2, seed=11)
        ds.set_epoch(3)
        return ids_of(ResumableLoader(ds, num_workers=workers))
    assert run(0) == run(2) == run(1)


def test_fields_dtypes_shapes_and_masks(store16):
    ds = ShardDataset(store16, fields=("rgb", "depth", "pairs", "teacher", "teacher_conf"), shuffle=False,
                      batch_size=4, streams=1)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape == (4, 3, H, W)
    for name in ("depth", "teacher", "teacher_conf"):
        assert batch[name].dtype == torch.float32 and batch[name].shape == (4, 1, H, W)
    assert batch["depth_valid"].dtype == torch.bool and batch["depth_valid"].shape == (4, 1, H, W)
    assert batch["pairs"].shape == (4, P, 5) and batch["pairs_valid"].tolist() == [[True, True, False]] * 4
    idx = batch["index"].tolist()
    # depth = index + 1 m everywhere except the NaN at (0, 0), which reads 0 and is masked out
    assert batch["depth"][:, 0, 1, 1].tolist() == [i + 1.0 for i in idx]
    assert batch["depth"][:, 0, 0, 0].tolist() == [0.0] * 4 and not batch["depth_valid"][:, 0, 0, 0].any()
    assert int(batch["depth_valid"].sum()) == 4 * (H * W - 1)
    assert torch.allclose(batch["teacher"][0, 0, 2, 3], torch.tensor((2 * W + 3) / 100), atol=1e-3)
    assert batch["sample_id"] == [f"nyu/train/{i:03d}" for i in idx]
    fl = ShardDataset(store16, fields=("rgb",), shuffle=False, rgb_float=True, streams=1)
    first = next(iter(fl))
    assert first["rgb"].dtype == torch.float32 and float(first["rgb"][2, 0, 0]) == pytest.approx(200 / 255)


def test_samples_kept_by_the_trainer_stay_intact_while_shard_buffers_are_recycled(tmp_path):
    # 2 groups, 18 and 7 samples in shards of 4 (short last shards), one stream holding one shard
    # at a time: every shard after the first is read into a recycled buffer
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 18), ("web", "all", 7)), shard_size=4)
    ds = ShardDataset(url, fields=("rgb", "depth", "teacher"), streams=1, shuffle_window=1, seed=3)
    kept = list(ds)
    assert sorted(s["sample_id"] for s in kept) == sorted(
        [f"nyu/train/{i:03d}" for i in range(18)] + [f"web/all/{i:03d}" for i in range(7)])
    yy, xx = np.mgrid[0:H, 0:W]
    position = torch.from_numpy(yy * W + xx)
    for s in kept:  # each sample still holds its own pixels, read after all shards went through
        i = s["index"]
        assert (s["rgb"][0] == i).all() and (s["rgb"][1] == position).all()
        assert (s["depth"][0, 1:, :] == i + 1.0).all() and s["depth"][0, 0, 0] == 0
        assert torch.allclose(s["teacher"][0], position / 100, atol=1e-3)


def test_read_shard_into_a_buffer_that_does_not_fit_names_the_field(store16):
    group = Store.open(store16).group("nyu/train")
    assert np.array_equal(group.read_shard(1, ["depth"], out={"depth": np.empty((4, H, W), np.float32)})["depth"],
                          group.read_shard(1, ["depth"])["depth"], equal_nan=True)
    with pytest.raises(ValueError, match="nyu/train/depth: buffer"):
        group.read_shard(1, ["depth"], out={"depth": np.empty((4, H, W), np.float16)})


def test_resume_in_a_new_process_continues_with_the_same_order(store16, tmp_path):
    kw = dict(fields=("rgb",), batch_size=2, streams=2, seed=4)
    ds = ShardDataset(store16, **kw)
    ds.set_epoch(2)
    full = ids_of(ResumableLoader(ds, num_workers=2))
    ds2 = ShardDataset(store16, **kw)
    loader = ResumableLoader(ds2, num_workers=2)
    loader.set_epoch(2)
    first = []
    for batch in loader:
        first += batch["sample_id"]
        if len(first) == 6:  # workers have prefetched beyond this point
            state = loader.state_dict()
            break
    assert state["delivered"] == 6 and first == full[:6]
    script = textwrap.dedent(f"""
        import json, sys
        from depthdata.stream import ShardDataset, ResumableLoader
        ds = ShardDataset({store16!r}, **{kw!r})
        ds.load_state_dict(json.loads(sys.argv[1]))
        loader = ResumableLoader(ds, num_workers=2)
        loader.set_epoch(2)  # the same epoch: keeps the resume point
        print(json.dumps([s for b in loader for s in b["sample_id"]]))
    """)
    out = subprocess.run([sys.executable, "-c", script, json.dumps(state)], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == full[6:]
    # and into another number of workers (here none: the main process reads)
    ds3 = ShardDataset(store16, **kw)
    ds3.load_state_dict(state)
    assert ids_of(ResumableLoader(ds3, num_workers=0)) == full[6:]


def test_state_from_other_settings_is_refused(store16):
    state = ShardDataset(store16, fields=("rgb",), batch_size=2, streams=2).state_dict()
    with pytest.raises(DepthdataError, match="other settings"):
        ShardDataset(store16, fields=("rgb",), batch_size=4, streams=2).load_state_dict(state)


def test_incomplete_shard_and_quarantined_samples_are_skipped(tmp_path, caplog):
    url = build(str(tmp_path / "s.zarr"), shard_size=4, skip_teacher={("nyu", 1)}, quarantine={("nyu", 9)})
    with caplog.at_level(logging.WARNING, logger="depthdata.stream"):
        ds = ShardDataset(url, fields=("rgb", "teacher"), shuffle=False, streams=1, tail="drop")
    got = sorted(int(s["sample_id"][-3:]) for s in ds)
    assert got == [0, 1, 2, 3, 8, 10, 11, 12, 13, 14, 15]  # shard 1 (4..7) has no teacher; 9 quarantined
    assert "shard 1: incomplete" in caplog.text and "quarantined" in caplog.text
    # rgb alone comes from the ingest stage, complete everywhere: only the quarantined one goes
    rgb_only = ShardMapDataset(url, fields=("rgb",))
    assert len(rgb_only) == 15 and rgb_only[9]["sample_id"] == "nyu/train/010"


def test_mixing_groups_by_weight(tmp_path):
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 8), ("web", "all", 24)), shard_size=4)
    ds = ShardDataset(url, groups={"nyu/train": 0.5, "web/all": 0.5}, fields=("rgb",), streams=1, seed=2)
    counts = Counter(s["group"] for s in ds)
    assert counts == {"nyu/train": 16, "web/all": 16}  # nyu cycles twice, web stops at 16 of 24
    nyu = [s["sample_id"] for s in ds if s["group"] == "nyu/train"]
    assert Counter(nyu) == Counter({f"nyu/train/{i:03d}": 2 for i in range(8)})


def test_map_dataset_random_access(store16):
    ds = ShardMapDataset(store16, fields=("rgb", "depth"))
    assert len(ds) == 16
    s = ds[ds.position("nyu/train/011")]
    assert s["sample_id"] == "nyu/train/011" and int(s["rgb"][0, 0, 0]) == 11 and float(s["depth"][0, 2, 2]) == 12.0
    with pytest.raises(IndexError):
        ds[16]


def test_remote_store_through_a_bounded_cache(tmp_path):
    url = build(f"memory://{tmp_path.name}/s.zarr", shard_size=4)
    # room for the array's metadata (~1.4 kB) and one compressed 4-sample rgb shard (< 1 kB), not two
    budget = 2600
    ds = ShardDataset(url, fields=("rgb",), shuffle=False, streams=1, shuffle_window=1,
                      cache_dir=str(tmp_path / "cache"), cache_bytes=budget)
    for epoch in range(2):
        ds.set_epoch(epoch)
        got = [int(s["rgb"][0, 0, 0]) for s in ds]
        assert sorted(got) == list(range(16))
    group = ds._source._groups[0]
    cached = group.zgroup.store  # the CacheStore of this process
    assert cached.cache_stats()["evictions"] > 0  # 4 shards through room for one
    group.read_shard(3, ["rgb"])  # the last shard read is still cached
    assert cached.cache_stats()["hits"] > 0 and cached.cache_info()["current_size"] <= budget
    on_disk = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
    assert 0 < on_disk <= budget


# -- augmentations ----------------------------------------------------------------------------

def sample_of(store16, i=5):
    return ShardMapDataset(store16, fields=("rgb", "depth", "pairs", "teacher"))[i]


def pixel(s, y, x):
    return int(s["rgb"][1, int(y), int(x)])  # channel 1 = position code of the original pixel


def test_flip_keeps_pairs_on_the_same_pixels(store16):
    s = sample_of(store16)
    f = hflip(s)
    for row_before, row_after in zip(s["pairs"][:2], f["pairs"][:2]):
        ya, xa, yb, xb, order = row_before.tolist()
        assert row_after.tolist() == [ya, W - 1 - xa, yb, W - 1 - xb, order]
        assert pixel(f, row_after[0], row_after[1]) == pixel(s, ya, xa) == ya * W + xa
        assert pixel(f, row_after[2], row_after[3]) == pixel(s, yb, xb)
    assert torch.equal(f["teacher"][0, :, 0], s["teacher"][0, :, W - 1])
    assert torch.equal(f["depth_valid"][0, 0, W - 1], s["depth_valid"][0, 0, 0])
    assert torch.isnan(f["pairs"][2]).all()


def test_crop_moves_every_field_and_drops_pairs_outside(store16):
    s = sample_of(store16)
    c = crop(s, top=1, left=2, height=4, width=7)
    assert c["rgb"].shape == (3, 4, 7) and c["depth"].shape == (1, 4, 7) and c["depth_valid"].shape == (1, 4, 7)
    assert pixel(c, 0, 0) == 1 * W + 2 and float(c["teacher"][0, 0, 0]) == pytest.approx((W + 2) / 100, abs=1e-3)
    # pair (1,2)-(4,8) is inside the window → (0,0)-(3,6); the corner pair (0,9)-(5,0) falls out
    assert c["pairs"][0].tolist() == [0, 0, 3, 6, 1] and c["pairs_valid"].tolist() == [True, False, False]
    assert pixel(c, 3, 6) == pixel(s, 4, 8)
    with pytest.raises(DepthdataError, match="does not fit"):
        crop(s, 3, 0, 4, 7)


def test_color_jitter_changes_rgb_only_and_random_transforms_are_reproducible(store16):
    s = sample_of(store16)
    aug = Compose([ColorJitter(0.5, 0.5, 0.5), RandomHFlip(1.0), RandomCrop((4, 6))])
    a = aug(s, np.random.default_rng(1))
    b = aug(s, np.random.default_rng(1))
    assert all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "teacher", "pairs_valid"))
    j = ColorJitter(0.5, 0.5, 0.5)(s, np.random.default_rng(0))
    assert not torch.equal(j["rgb"], s["rgb"]) and j["rgb"].dtype == torch.uint8
    assert torch.equal(j["depth"], s["depth"]) and torch.equal(j["teacher"], s["teacher"])


def test_gaussian_blur_spreads_an_impulse_by_sigma_and_leaves_labels_alone(store16):
    s = sample_of(store16)
    impulse = torch.zeros(3, 31, 31)
    impulse[:, 15, 15] = 1.0
    s = {**s, "rgb": impulse}
    b = GaussianBlur(p=1.0, sigma=(1.5, 1.5))(s, np.random.default_rng(0))
    out = b["rgb"][0].double()
    yy, xx = torch.meshgrid(torch.arange(31.0), torch.arange(31.0), indexing="ij")
    # a Gaussian of σ = 1.5 px: unit mass, centred, variance σ² along each axis (the ±3σ kernel
    # truncates ~1 % of it)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)
    assert float((out * (xx - 15) ** 2).sum()) == pytest.approx(1.5 ** 2, rel=0.03)
    assert float((out * (yy - 15) ** 2).sum()) == pytest.approx(1.5 ** 2, rel=0.03)
    assert torch.equal(b["depth"], s["depth"]) and torch.equal(b["teacher"], s["teacher"])
    never = GaussianBlur(p=0.0)(s, np.random.default_rng(0))
    assert torch.equal(never["rgb"], impulse)


# -- configuration and the command line --------------------------------------------------------

def test_rank_from_environment(store16, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = ShardDataset(store16, fields=("rgb",), streams=2)
    assert (ds.rank, ds.world_size, len(ds)) == (1, 2, 8)


def test_bad_settings_name_the_problem(store16):
    with pytest.raises(DepthdataError, match="no group 'nyu/val'"):
        ShardDataset(store16, groups=["nyu/val"])
    with pytest.raises(DepthdataError, match="unknown field 'normals'"):
        ShardDataset(store16, fields=("rgb", "normals"))
    with pytest.raises(DepthdataError, match="tail policy"):
        ShardDataset(store16, fields=("rgb",), tail="wrap")
    with pytest.raises(DepthdataError, match="divides streams"):
        ResumableLoader(ShardDataset(store16, fields=("rgb",), streams=2), num_workers=3)
    with pytest.raises(DepthdataError, match="nothing to serve"):
        ShardDataset(store16, fields=("rgb", "sparse"))  # no LiDAR stage in this store


def test_cli_check_reports_servable_samples_and_epoch_sizes(tmp_path, capsys):
    from depthdata.cli import main

    url = build(str(tmp_path / "s.zarr"), shard_size=4, skip_teacher={("nyu", 2)})
    assert main(["stream", "check", url, "--fields", "rgb,teacher", "--world-size", "2", "--batch-size", "2",
                 "--streams", "1", "--tail", "pad"]) == 0
    out = capsys.readouterr().out
    assert "nyu/train: 12 servable samples in 3 shard(s)" in out
    assert "rank 1/2 epoch 0: 6 samples (3 batches of 2); dropped 0, padded 0" in out


@pytest.mark.slow
def test_s3_store_with_two_workers_and_a_bounded_cache(tmp_path, s3_bucket):
    opts = s3_bucket
    store = Store.create("s3://depth/s.zarr", storage_options=opts)
    g = store.create_group("nyu", "train", [f"nyu/train/{i:03d}" for i in range(16)], ["-"] * 16, H, W, 4, P)
    g.ensure_fields(["rgb", "depth", "pairs"])
    for k in range(g.num_shards):
        g.write_shard(k, "ingest", shard_arrays(g, k)[0], [{"status": "ok"}] * 4)
    budget = 2 * 2600  # per worker: the array metadata and one small rgb shard file
    ds = ShardDataset("s3://depth/s.zarr", fields=("rgb",), storage_options=opts, batch_size=2, streams=2,
                      cache_dir=str(tmp_path / "cache"), cache_bytes=budget)
    batches = list(ResumableLoader(ds, num_workers=2))
    assert sorted(int(x) for b in batches for x in b["rgb"][:, 0, 0, 0]) == list(range(16))
    assert ids_of(batches) == [f"{p}/{i:03d}" for p, i in ds.order()]
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert folders == ["rank0-worker0", "rank0-worker1"]
    for f in (tmp_path / "cache").iterdir():
        size = sum(x.stat().st_size for x in f.rglob("*") if x.is_file())
        assert 0 < size <= budget // 2


def test_an_epoch_that_would_be_empty_is_refused_saying_why(tmp_path):
    # one servable sample (the others quarantined), four streams: tail="drop" would drop it
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 4),), shard_size=4,
                quarantine={("nyu", 1), ("nyu", 2), ("nyu", 3)})
    with pytest.raises(DepthdataError, match=r"would be empty: its 1 of 1 servable sample\(s\) are fewer than "
                                             r"streams × batch_size = 4 × 1.*tail='pad'"):
        ShardDataset(url, fields=("rgb",), streams=4, tail="drop")
    assert len(ShardDataset(url, fields=("rgb",), streams=4, tail="pad")) == 4  # padded to one round


# -- reading local shard files and delivering whole batches ---------------------------------

@pytest.mark.parametrize("codec", [("blosc-lz4", 5), ("zstd", 3), ("none", 0)])
def test_chunk_reader_reads_exactly_what_zarr_reads(tmp_path, codec):
    from depthdata.stream.chunks import EMPTY, ChunkReader, field_layout
    store = Store.create(str(tmp_path / "s.zarr"))
    n = 10
    g = store.create_group("nyu", "train", [f"nyu/train/{i:03d}" for i in range(n)], ["-"] * n, H, W, 4, P,
                           compressor=codec)
    g.ensure_fields(["rgb", "depth", "pairs", "teacher", "teacher_conf", "sparse"])
    rng = np.random.default_rng(0)
    for k in range(g.num_shards):
        ingest, teacher = shard_arrays(g, k)
        ingest["rgb"] = rng.integers(0, 256, ingest["rgb"].shape, dtype=np.uint8)
        ingest["depth"] = rng.uniform(0.5, 9, ingest["depth"].shape).astype(np.float32)
        if k == 1:
            ingest["depth"][2] = np.nan  # all fill value: Zarr writes no chunk for it
        g.write_shard(k, "ingest", ingest, [{"status": "ok"}] * len(g.shard_range(k)))
        g.write_shard(k, "teacher", teacher, [{"status": "ok"}] * len(g.shard_range(k)))
        sparse = np.zeros((len(g.shard_range(k)), H, W), np.float32)
        if k != 0:  # shard 0 is all fill value (no return anywhere): no shard file at all
            sparse[:, ::2, ::3] = rng.uniform(1, 5, sparse[:, ::2, ::3].shape)
        g.write_shard(k, "lidar", {"sparse": sparse}, [{"status": "ok"}] * len(g.shard_range(k)))
    layouts = {f: field_layout(g.array(f)) for f in g.fields()}
    assert not os.path.exists(layouts["sparse"].path(0)) and os.path.exists(layouts["sparse"].path(1))
    reader = ChunkReader(capacity=3)
    for name, layout in layouts.items():
        for slot in range(n):
            got = np.full(layout.sample_shape, 7, layout.dtype)
            reader.read(name, layout, slot, got)
            want = g.array(name)[slot]
            assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), (name, slot)
    reader.close()
    # the never-written chunk was really read from the index as missing
    with open(layouts["depth"].path(1), "rb") as f:
        index = np.frombuffer(f.read()[-(16 * 4 + 4):-4], "<u8").reshape(4, 2)
    assert index[2, 0] == EMPTY
    # a damaged index is refused, naming the file
    path = layouts["rgb"].path(2)
    raw = bytearray(open(path, "rb").read())
    raw[-10] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DepthdataError, match=f"{path}: shard index is damaged"):
        ChunkReader(capacity=1).read("rgb", layouts["rgb"], 8, np.empty(layouts["rgb"].sample_shape, np.uint8))


def assert_same_batches(got, want):
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert list(a) == list(b)  # the same keys in the same order
        for key in a:
            if isinstance(b[key], torch.Tensor):
                assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
                assert torch.equal(a[key].nan_to_num(-7), b[key].nan_to_num(-7)), key  # NaN = pairs padding
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize("options", [{}, {"rgb_float": True},
                                     {"transform": Compose([RandomHFlip(0.5), RandomCrop((4, 8))])}])
def test_loader_batches_are_the_samples_a_dataloader_collates(store16, options):
    fields = ("rgb", "depth", "pairs", "teacher", "teacher_conf")
    ds = ShardDataset(store16, fields=fields, batch_size=2, streams=2, seed=5, **options)
    ds.set_epoch(1)
    want = list(DataLoader(ds, batch_size=2))  # single samples, collated by the DataLoader
    for workers in (0, 2):
        assert_same_batches(list(ResumableLoader(ds, num_workers=workers)), want)


def test_batches_kept_by_the_trainer_stay_intact_while_shared_memory_is_recycled(tmp_path):
    # 40 samples in batches of 2: each worker makes 10 batches an epoch, more than it recycles
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 40),), shard_size=8)
    ds = ShardDataset(url, fields=("rgb", "depth"), batch_size=2, streams=2, seed=1)
    loader = ResumableLoader(ds, num_workers=2)

    def intact(batch):
        return all((img[0] == int(sid[-3:])).all() for sid, img in zip(batch["sample_id"], batch["rgb"])) and \
            all((d[0, 1:] == int(sid[-3:]) + 1.0).all() for sid, d in zip(batch["sample_id"], batch["depth"]))

    kept = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        seen = []
        for j, batch in enumerate(loader):
            assert intact(batch)
            seen += batch["sample_id"]
            if epoch == 0 or j % 3 == 0:  # keep all of one epoch and some of the others
                kept.append(batch)
            elif j % 3 == 1:
                kept.append({"sample_id": batch["sample_id"], "rgb": batch["rgb"][:1]})  # a view keeps it too
        assert sorted(seen) == [f"nyu/train/{i:03d}" for i in range(40)]
    for batch in kept:
        assert all((img[0] == int(sid[-3:])).all() for sid, img in zip(batch["sample_id"], batch["rgb"]))
        if "depth" in batch:
            assert intact(batch)


def test_a_slab_is_refilled_only_once_nothing_references_its_batch():
    import pickle
    from multiprocessing.reduction import ForkingPickler  # how a DataLoader worker's batches travel

    import torch.multiprocessing  # noqa: F401  (registers torch's shared-memory reductions)
    from depthdata.stream.batch import PackedBatch, Receiver, SlabPool, plan, views
    receiver = Receiver(workers=1, slots=2)
    pool = SlabPool(receiver.token, receiver.flags, worker=0)
    entries, nbytes = plan([("x", torch.float32, (2, 3))])

    def send(value):
        ident, storage, first = pool.take(nbytes)
        t = views(storage, entries)
        t["x"].fill_(value)
        return ident, pickle.loads(ForkingPickler.dumps(PackedBatch(t, {}, ["x"], ident, storage, entries, first)))

    (_, _, slot_a, _), a = send(1)
    (_, _, slot_b, _), b = send(2)
    assert slot_a != slot_b and type(a) is dict and a["x"].sum() == 6
    view = a["x"][1]
    del a
    receiver.release()
    (_, _, slot_c, _), c = send(3)  # a's slab is still referenced through a view: a third, unrecycled one
    assert slot_c == -1 and view.sum() == 3 and b["x"].sum() == 12
    del view, c
    receiver.release()
    (_, _, slot_d, _), d = send(4)
    assert slot_d == slot_a and d["x"].sum() == 24 and b["x"].sum() == 12
    receiver.close()


def test_groups_of_other_sizes_in_one_batch_are_refused_saying_which(tmp_path):
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 8),), shard_size=4)
    store = Store.open(url, mode="r+")
    g = store.create_group("web", "all", [f"web/all/{i:03d}" for i in range(8)], ["-"] * 8, H + 2, W, 4, P)
    g.ensure_fields(["rgb"])
    for k in range(g.num_shards):
        g.write_shard(k, "ingest", {"rgb": np.zeros((4, H + 2, W, 3), np.uint8)}, [{"status": "ok"}] * 4)
    store.commit()
    ds = ShardDataset(url, fields=("rgb",), batch_size=4, streams=1, shuffle_window=4, seed=0)
    with pytest.raises(DepthdataError, match=r"meet in one batch: groups mixed into a batch must share H×W"):
        list(ResumableLoader(ds))


def test_a_collate_fn_of_your_own_gets_single_samples(store16):
    ds = ShardDataset(store16, fields=("rgb",), batch_size=4, streams=2, seed=3)
    batches = list(ResumableLoader(ds, num_workers=2, collate_fn=list))
    assert all(len(b) == 4 and isinstance(b[0], dict) for b in batches)
    assert [s["sample_id"] for b in batches for s in b] == [f"{p}/{i:03d}" for p, i in ds.order()]


@pytest.mark.slow
def test_spawned_workers_deliver_the_same_batches(store16):
    ds = ShardDataset(store16, fields=("rgb", "depth"), batch_size=2, streams=2, seed=8)
    want = list(ResumableLoader(ds, num_workers=0))
    got = list(ResumableLoader(ds, num_workers=2, multiprocessing_context="spawn"))
    assert_same_batches(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches_are_the_same_batches_and_slabs_still_recycle(tmp_path):
    # with pin_memory the DataLoader's pinning thread receives the batches and copies them
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 40),), shard_size=8)
    ds = ShardDataset(url, fields=("rgb", "depth", "pairs"), batch_size=2, streams=2, seed=6)
    want = list(ResumableLoader(ds, num_workers=0))
    loader = ResumableLoader(ds, num_workers=2, pin_memory=True)
    for _ in range(2):  # the second epoch runs on the first one's slabs
        got = list(loader)
        assert all(t.is_pinned() for b in got for t in b.values() if isinstance(t, torch.Tensor))
        assert_same_batches(got, want)
        on_gpu = [b["depth"].cuda(non_blocking=True) for b in got]
        assert all(torch.equal(g.cpu(), b["depth"]) for g, b in zip(on_gpu, want))


def test_optional_fields_mixing_in_one_batch_need_a_collate_fn_of_your_own(tmp_path):
    url = build(str(tmp_path / "s.zarr"), groups=(("nyu", "train", 8),), shard_size=4)
    store = Store.open(url, mode="r+")
    g = store.create_group("web", "all", [f"web/all/{i:03d}" for i in range(8)], ["-"] * 8, H, W, 4, P)
    g.ensure_fields(["rgb"])  # no depth here
    for k in range(g.num_shards):
        g.write_shard(k, "ingest", {"rgb": np.zeros((4, H, W, 3), np.uint8)}, [{"status": "ok"}] * 4)
    store.commit()
    kw = dict(fields=("rgb",), optional_fields=("depth",), batch_size=4, streams=1, shuffle_window=4, seed=0)
    with pytest.raises(DepthdataError, match=r"web/all \(fields \['rgb'\]\).*pass ResumableLoader a collate_fn"):
        list(ResumableLoader(ShardDataset(url, **kw), num_workers=0))
    batches = list(ResumableLoader(ShardDataset(url, **kw), num_workers=1, collate_fn=list))
    assert sorted(s["sample_id"] for b in batches for s in b) == sorted(
        [f"nyu/train/{i:03d}" for i in range(8)] + [f"web/all/{i:03d}" for i in range(8)])
    assert all(("depth" in s) == s["sample_id"].startswith("nyu") for b in batches for s in b)
