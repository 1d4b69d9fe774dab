"""EDA on a tiny store built here with known contents."""

import base64
import math
import re
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from depthdata.cli import main
from depthdata.eda import OutlierRules, flag_outliers, robust_z, write_report
from depthdata.eda import stats as st
from depthdata.store import Store

H, W = 16, 20
N = 12
SHARD = 4
QUARANTINED = 3  # ingest failed: slot holds fill values
MOSTLY_NAN = 5  # 75 % of depth is NaN
FAR = 7  # depth 40 m where the others are 2–3 m
GREY = 9  # constant grey image
BASES = [2.0 + 0.1 * i for i in range(N)]
BASES[FAR] = 40.0


def _depth(i: int) -> np.ndarray:
    """Sample 0 is a constant 2.0 m; the others a ramp base + 0.1·x m along the 20 columns."""
    if i == 0:
        return np.full((H, W), 2.0, np.float32)
    d = np.tile((BASES[i] + 0.1 * np.arange(W)).astype(np.float32), (H, 1))
    if i == MOSTLY_NAN:
        d[: 3 * H // 4] = np.nan
    return d


def _rgb(i: int, rng: np.random.Generator) -> np.ndarray:
    if i == GREY:
        return np.full((H, W, 3), 100, np.uint8)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _teacher(depth: np.ndarray) -> np.ndarray:
    """Disparity normalised to [0, 1]: an exact affine function of 1/depth."""
    inv = 1.0 / depth
    if not np.isfinite(inv).any():
        return inv
    lo, hi = np.nanmin(inv), np.nanmax(inv)
    return ((inv - lo) / (hi - lo)) if hi > lo else np.zeros_like(inv)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("eda") / "s.zarr")
    store = Store.create(url)
    rng = np.random.default_rng(0)
    ids = [f"nyu/train/{i:03d}" for i in range(N)]
    g = store.create_group("nyu", "train", ids, [f"/data/nyu/{i}.png" for i in range(N)], H, W, SHARD)
    g.ensure_fields(["rgb", "depth", "teacher", "teacher_conf", "sparse"])
    for k in range(g.num_shards):
        idx = list(g.shard_range(k))
        rgb = np.stack([_rgb(i, rng) for i in idx])
        depth = np.stack([_depth(i) for i in idx])
        rows = [{"status": "ok", "reason": "", "source_uri": f"/data/nyu/{i}.png"} for i in idx]
        if QUARANTINED in idx:
            j = idx.index(QUARANTINED)
            rgb[j] = 0
            depth[j] = np.nan
            rows[j] = {"status": "quarantined", "reason": "corrupt PNG: CRC mismatch",
                       "source_uri": f"/data/nyu/{QUARANTINED}.png"}
        g.write_shard(k, "ingest", {"rgb": rgb, "depth": depth}, rows)
        if k < 2:  # the teacher stage ran on shards 0 and 1 only
            teacher = np.stack([_teacher(d) for d in depth])
            g.write_shard(k, "teacher", {"teacher": teacher, "teacher_conf": np.ones_like(teacher)},
                          [{"status": "ok", "absrel": 0.01 * (i + 1)} for i in idx])
        sparse = np.zeros((len(idx), H, W), np.float32)
        sparse[:, 8, ::4] = depth[:, 8, ::4]  # 5 returns per sample on row 8
        # as the LiDAR stage reports them: "skipped" echoes the ingest rejection, "empty" = no return
        lidar_rows = [{"status": "skipped" if i == QUARANTINED else "empty" if i == MOSTLY_NAN else "ok",
                       "coverage": 0.0 if i in (QUARANTINED, MOSTLY_NAN) else 5 / (H * W),
                       "seed": (1 << 62) + i} for i in idx]  # 63-bit, as sample_seed makes them
        g.write_shard(k, "lidar", {"sparse": np.nan_to_num(sparse)}, lidar_rows)
    # a depth-free group with ordinal pairs (DIW-like)
    d = store.create_group("diw", "test", ["diw/test/a", "diw/test/b", "diw/test/c"], ["a", "b", "c"], H, W, 2,
                           max_pairs=3)
    d.ensure_fields(["rgb", "pairs"])
    for k in range(d.num_shards):
        n = len(d.shard_range(k))
        pairs = np.full((n, 3, 5), np.nan, np.float32)
        pairs[:, :2] = [0, 0, 1, 1, 1]
        d.write_shard(k, "ingest", {"rgb": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8), "pairs": pairs},
                      [{"status": "ok"}] * n)
    return url


@pytest.fixture(scope="module")
def report(store_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(store_url, out, samples_per_grid=3, seed=1, progress=False)
    return paths, pd.read_parquet(paths["stats"]).set_index("sample_id")


def test_per_sample_statistics(report):
    _, s = report
    assert len(s) == N + 3
    first = s.loc["nyu/train/000"]
    assert (first.depth_median, first.depth_min, first.depth_max, first.depth_valid_fraction) == (2.0, 2.0, 2.0, 1.0)
    ramp = s.loc["nyu/train/001"]  # 2.1 + 0.1·x, x = 0..19: median at x = 9.5
    assert ramp.depth_min == pytest.approx(2.1)
    assert ramp.depth_max == pytest.approx(2.1 + 1.9)
    assert ramp.depth_median == pytest.approx(2.1 + 0.95)
    assert ramp.depth_mean == pytest.approx(2.1 + 0.95)
    assert s.loc[f"nyu/train/{MOSTLY_NAN:03d}"].depth_valid_fraction == 0.25
    grey = s.loc[f"nyu/train/{GREY:03d}"]
    assert (grey.brightness, grey.contrast) == (100.0, 0.0)
    assert ramp.sparse_coverage == pytest.approx(5 / (H * W))
    assert ramp.sparse_returns == 5
    assert s.loc["nyu/train/001", "lidar.coverage"] == pytest.approx(5 / (H * W))
    # integers stay exact although the DIW group has no LiDAR rows (a float64 column would round)
    assert s.loc["nyu/train/001", "lidar.seed"] == (1 << 62) + 1
    assert s.loc["diw/test/b"].pairs_count == 2
    assert s.loc["diw/test/b"].group == "diw/test"
    assert math.isnan(s.loc["diw/test/b"].depth_median)


def test_teacher_statistics_only_where_the_stage_ran(report):
    _, s = report
    done = s.loc["nyu/train/001"]
    # the teacher is an exact affine map of 1/depth: aligned in disparity space it is perfect
    assert done.teacher_absrel == pytest.approx(0.0, abs=1e-3)  # float16 storage rounding
    assert done.teacher_delta1 == 1.0
    assert (done.teacher_min, done.teacher_max) == (0.0, 1.0)
    assert done["teacher.absrel"] == pytest.approx(0.02)
    assert math.isnan(s.loc["nyu/train/000"].teacher_absrel)  # constant depth: fit undetermined
    not_run = s.loc["nyu/train/010"]  # shard 2 has no teacher
    assert math.isnan(not_run.teacher_median) and math.isnan(not_run["teacher.absrel"])


def test_quarantined_and_outliers(report):
    _, s = report
    q = s.loc[f"nyu/train/{QUARANTINED:03d}"]
    assert q.status == "quarantined"
    assert q.reason == "ingest: corrupt PNG: CRC mismatch"
    assert not q.outlier  # fill values are not judged
    assert math.isnan(q.depth_median)
    flagged = s[s.outlier]
    # sample 0's constant depth gives a constant teacher: flagged as flat
    assert set(flagged.index) == {f"nyu/train/{i:03d}" for i in (0, MOSTLY_NAN, FAR, GREY)}
    assert "flat teacher (std 0)" in s.loc["nyu/train/000"].outlier_reasons
    assert "depth_median = 40.95" in s.loc[f"nyu/train/{FAR:03d}"].outlier_reasons
    assert "mostly invalid depth (25% valid)" in s.loc[f"nyu/train/{MOSTLY_NAN:03d}"].outlier_reasons
    assert "near-constant image" in s.loc[f"nyu/train/{GREY:03d}"].outlier_reasons


def test_report_html_is_self_contained(report):
    paths, _ = report
    html = Path(paths["report"]).read_text()
    for text in ("nyu/train", "diw/test", f"nyu/train/{QUARANTINED:03d}", "corrupt PNG: CRC mismatch",
                 "/data/nyu/3.png", "near-constant image", "teacher 2/3", "Teacher quality: teacher_absrel"):
        assert text in html
    images = re.findall(r'src="([^"]*)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html


def test_histogram_counts_metres(store_url, tmp_path):
    counts = st.histogram(np.array([0.5, 0.5, 2.0, np.nan, 5000.0]), st.DEPTH_BINS)
    assert counts.sum() == 3  # NaN and beyond 1000 m are dropped
    assert counts[np.searchsorted(st.DEPTH_BINS, 0.5) - 1] == 2


def test_robust_z_by_hand():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, MAD = median(2, 1, 0, 1, 97) = 1, scaled by 1.4826
    assert z[4] == pytest.approx(97 / 1.482602218505602)
    assert z[2] == 0.0
    # MAD = 0 (most values equal): mean absolute deviation 8/7, scaled by 1.253314
    z = robust_z(np.array([2.0] * 6 + [10.0]))
    assert z[6] == pytest.approx(8 / (1.253314 * 8 / 7))
    assert np.all(robust_z(np.full(5, 3.0)) == 0)


def test_small_groups_get_no_zscores():
    frame = pd.DataFrame({"group": ["g"] * 5, "status": ["ok"] * 5, "depth_median": [1, 1, 1, 1, 50.0]})
    assert not flag_outliers(frame).outlier.any()
    assert flag_outliers(frame, OutlierRules(min_samples=5)).outlier.tolist() == [False] * 4 + [True]


def test_cli(store_url, tmp_path, capsys):
    assert main(["-q", "eda", store_url, "--out", str(tmp_path / "r"), "--samples-per-grid", "2", "--seed", "3",
                 "--no-progress"]) == 0
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "stats.parquet").exists()
    assert "report.html" in capsys.readouterr().out
    assert main(["eda", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "x")]) == 2
    assert "no such store" in capsys.readouterr().err


def test_unbuilt_shards_with_store_and_report_on_fsspec_urls():
    url = "memory://eda-unbuilt.zarr"
    g = Store.create(url).create_group("a", "b", ["a/b/0", "a/b/1", "a/b/2"], ["x", "y", "z"], 8, 8, 2)
    g.ensure_fields(["rgb", "depth"])
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    g.write_shard(0, "ingest", {"rgb": rgb, "depth": np.full((2, 8, 8), 3.0, np.float32)}, [{"status": "ok"}] * 2)
    # the report goes to an fsspec URL too (here beside the store, in the same memory file system)
    paths = write_report(url, "memory://eda-reports/unbuilt", samples_per_grid=1, progress=False)
    assert paths == {"stats": "memory://eda-reports/unbuilt/stats.parquet",
                     "report": "memory://eda-reports/unbuilt/report.html"}
    with fsspec.open(paths["stats"], "rb") as f:
        s = pd.read_parquet(f).set_index("sample_id")
    assert s.status.tolist() == ["ok", "ok", "not built"]
    assert s.loc["a/b/2"].source_uri == "z"  # from the plan: the shard has no manifest yet
    assert s.loc["a/b/0"].depth_median == 3.0 and math.isnan(s.loc["a/b/2"].depth_median)
    with fsspec.open(paths["report"], "rt", encoding="utf-8") as f:
        assert "ingest 1/2" in f.read()


def test_stats_columns_are_declared(report):
    """Every column of stats.parquet is one of ``STATS_COLUMNS`` (the docs are generated from it)."""
    import fnmatch

    from depthdata.eda.report import STATS_COLUMNS

    paths, s = report
    columns = pd.read_parquet(paths["stats"]).columns
    patterns = [c.name.replace("<stage>", "*").replace("<column>", "*") for c in STATS_COLUMNS]
    undeclared = [c for c in columns if not any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    assert not undeclared
    assert {c.name for c in STATS_COLUMNS if "<" not in c.name} <= set(columns)


def test_histogram_of_one_sample_has_plain_readable_ticks():
    import matplotlib.pyplot as plt

    from depthdata.eda.figures import value_histogram_figure

    fig = value_histogram_figure({"photos/train": np.array([2.3457123])}, "median depth (m)")
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 2.3457123 < hi and hi - lo > 0.1  # a window around the value, not 1e-6 wide
    assert ax.xaxis.get_offset_text().get_text() == ""  # no "+2.3457" offset
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(0.5 < float(t.replace("−", "-")) < 5 for t in labels)
    plt.close(fig)
