"""``write_report``: stats.parquet and a self-contained report.html for a store."""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import fsspec
import jinja2
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

import depthdata
from depthdata.eda import figures
from depthdata.eda import stats as st
from depthdata.eda.outliers import OutlierRules, flag_outliers
from depthdata.eda.scan import GroupScan, scan_group
from depthdata.eda.template import REPORT_TEMPLATE
from depthdata.eda.written import output_fs, write_marker
from depthdata.store import Store
from depthdata.store.manifest import Column

log = logging.getLogger(__name__)

STATS_NAME = "stats.parquet"

#: The columns of ``stats.parquet``, one row per sample of every group (the docs' reference page
#: is generated from this). Statistics of a field are NaN when its stage has not completed the
#: shard, and for samples that are not ``ok`` (their slots hold fill values).
STATS_COLUMNS = (
    Column("group", "string", "the sample's group, `<dataset>/<split>`"),
    Column("index", "int64", "0-based position of the sample in its group"),
    Column("sample_id", "string", "stable id `<dataset>/<split>/<source key>`"),
    Column("source_uri", "string", "the file (or file + record) the sample was read from"),
    Column("status", "string", "`ok`; `quarantined` (a stage's status is not `ok`, `empty` (LiDAR without "
           "returns) or `skipped`); or `not built` (its ingest shard has no manifest part yet)"),
    Column("reason", "string", "`<stage>: <reason>` of each stage that quarantined it, `; `-joined"),
    Column("brightness", "double", "mean of the BT.601 luma of `rgb`, 0–255"),
    Column("contrast", "double", "standard deviation of the BT.601 luma of `rgb`, 0–255"),
    *(Column(f"depth_{s}", "double", f"{d} of the valid ground-truth depth, metres (valid = finite and > 0)")
      for s, d in (("min", "minimum"), ("median", "median"), ("max", "maximum"), ("mean", "mean"),
                   ("std", "standard deviation"))),
    Column("depth_valid_fraction", "double", "fraction of pixels with valid ground-truth depth"),
    *(Column(f"teacher_{s}", "double", f"{d} of the finite teacher relative disparity, [0, 1] (larger = nearer)")
      for s, d in (("min", "minimum"), ("median", "median"), ("max", "maximum"), ("mean", "mean"),
                   ("std", "standard deviation"))),
    Column("teacher_valid_fraction", "double", "fraction of pixels with a finite teacher value"),
    Column("teacher_absrel", "double", "AbsRel of the teacher vs ground truth after a least-squares scale and "
           "shift in disparity space, depth in (1e-3, 1000) m; NaN without depth or for a constant teacher"),
    Column("teacher_delta1", "double", "δ1 (max(p/g, g/p) < 1.25) of the same alignment, [0, 1]"),
    Column("sparse_coverage", "double", "fraction of pixels with a synthetic LiDAR return"),
    Column("sparse_returns", "double", "number of pixels with a return"),
    Column("sparse_median", "double", "median depth of the returns, metres"),
    Column("sparse_max", "double", "largest depth of the returns, metres"),
    Column("pairs_count", "double", "ordinal pairs stored for the sample"),
    Column("<stage>.<column>", "double", "each numeric column of a later stage's manifest row (e.g. "
           "`teacher.align_absrel`, `lidar.coverage`), copied as is"),
    Column("outlier", "bool", "flagged by one of the outlier rules (`depthdata.eda.OutlierRules`)"),
    Column("outlier_reasons", "string", "the rules that flagged it, with values and z-scores, `; `-joined"),
)
REPORT_NAME = "report.html"
#: Longest tables shown in the HTML; the full lists are in stats.parquet.
MAX_TABLE_ROWS = 200


def write_report(store_url: str, out_dir: str | Path, samples_per_grid: int = 8, seed: int = 0,
                 storage_options: dict[str, Any] | None = None, rules: OutlierRules = OutlierRules(),
                 progress: bool = True, out_storage_options: dict[str, Any] | None = None,
                 version: int | None = None) -> dict[str, str]:
    """Scan every group of the store at ``store_url`` and write ``stats.parquet`` and ``report.html``.

    ``out_dir`` is a local folder or any fsspec URL (``s3://bucket/reports/build``), created if
    needed. It is opened with ``out_storage_options``; left ``None``, an ``out_dir`` on the
    store's kind of file system (same protocol) takes the store's ``storage_options``.
    ``samples_per_grid`` ok samples per group, drawn with ``seed``, appear in the sample grids.
    Reads one shard at a time, at store ``version`` (default: the newest committed). Returns ``{"stats": ..., "report": ...}``: local paths, or URLs
    for remote outputs. Last, writes ``report-version.json``: the store version the folder
    describes (:func:`depthdata.eda.written.report_version`). Raises :class:`~depthdata.errors.StoreError` for a missing or foreign
    store.
    """
    if samples_per_grid < 0:
        raise ValueError(f"samples_per_grid must be >= 0, got {samples_per_grid}")
    store = Store.open(store_url, storage_options=storage_options, version=version)
    # Opened before the scan, so a bad output location fails fast instead of after it.
    fs, root = _output_fs(str(out_dir), store_url, storage_options, out_storage_options)
    groups = [store.group(p) for p in store.group_paths()]
    scans: list[GroupScan] = []
    with tqdm(total=sum(g.num_shards for g in groups), desc="eda", unit="shard", disable=not progress) as bar:
        for g in groups:
            log.info("scanning %s (%d samples, %d shards)", g.path, len(g), g.num_shards)
            scans.append(scan_group(g, samples_per_grid, seed, on_shard=bar.update))
    table = flag_outliers(_stats_frame(scans), rules)
    with fs.open(f"{root}/{STATS_NAME}", "wb") as f:
        table.to_parquet(f, index=False)
    with fs.open(f"{root}/{REPORT_NAME}", "wb") as f:
        f.write(_render(store, table, scans, seed, rules).encode("utf-8"))
    # last: the record of which version the folder describes (report_version) follows the files
    write_marker(fs, root, store_url, store.version.number if store.version else None, [STATS_NAME, REPORT_NAME])
    # remote outputs are named as the caller spelled the folder's URL
    base = root if isinstance(fs, LocalFileSystem) else str(out_dir).rstrip("/")
    written = {"stats": f"{base}/{STATS_NAME}", "report": f"{base}/{REPORT_NAME}"}
    log.info("wrote %s and %s", written["stats"], written["report"])
    return written


def _output_fs(out_dir: str, store_url: str, storage_options: dict[str, Any] | None,
               out_storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and root path of the report folder (created)."""
    fs, root = output_fs(out_dir, store_url, storage_options, out_storage_options)
    fs.makedirs(root, exist_ok=True)
    return fs, root


def _stats_frame(scans: list[GroupScan]) -> pd.DataFrame:
    from depthdata.pipeline import STAGES

    rows = [r for s in scans for r in s.rows]
    frame = pd.DataFrame(rows, columns=None if rows else [c.name for c in STATS_COLUMNS[:6]])
    # A manifest column declared int64 stays integer where some samples have no value: pandas
    # would make it float64 (NaN) and round 63-bit seeds; nullable Int64 keeps them exact.
    for stage in STAGES.values():
        for c in stage.columns:
            name = f"{stage.name}.{c.name}"
            if c.dtype == "int64" and name in frame:
                frame[name] = pd.array([r.get(name) for r in rows], dtype="Int64")
    return frame


def _group_summary(scan: GroupScan, table: pd.DataFrame) -> dict[str, Any]:
    part = table[table["group"] == scan.group]
    status = part["status"].value_counts()
    return {
        "group": scan.group,
        "samples": len(part),
        "ok": int(status.get("ok", 0)),
        "quarantined": int(status.get("quarantined", 0)),
        "not_built": int(status.get("not built", 0)),
        "outliers": int(part["outlier"].sum()),
        "fields": ", ".join(scan.fields) or "—",
        "stages": ", ".join(f"{s} {c}/{n}" for s, (c, n) in scan.completeness.items()) or "none",
    }


def _per_group(table: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    if column not in table:
        return {}
    ok = table[table["status"] == "ok"]
    values = {g: part[column].to_numpy(dtype=np.float64) for g, part in ok.groupby("group", sort=True)}
    return {g: v for g, v in values.items() if np.isfinite(v).any()}


def _render(store: Store, table: pd.DataFrame, scans: list[GroupScan], seed: int, rules: OutlierRules) -> str:
    depth_figures = []
    for field, title in (("depth", "Ground-truth depth (valid pixels, metres)"),
                         ("sparse", "Synthetic LiDAR returns (metres)")):
        counts = {s.group: s.hists[field] for s in scans if field in s.hists and s.hists[field].sum()}
        if counts:
            depth_figures.append({"title": title, "png": figures.binned_histogram(st.DEPTH_BINS, counts, "depth (m)", True)})
    for column, title in (("depth_median", "Per-sample median depth (metres)"),):
        values = _per_group(table, column)
        if values:
            depth_figures.append({"title": title, "png": figures.value_histogram(values, "median depth (m)")})
    valid = _per_group(table, "depth_valid_fraction")
    valid_figure = figures.value_histogram(valid, "fraction of valid depth pixels", np.linspace(0, 1, 41)) if valid else None

    teacher_figures = []
    counts = {s.group: s.hists["teacher"] for s in scans if "teacher" in s.hists and s.hists["teacher"].sum()}
    if counts:
        teacher_figures.append({"title": "Teacher disparity values",
                                "png": figures.binned_histogram(st.TEACHER_BINS, counts, "relative disparity", False)})
    quality = [c for c in table.columns if c in ("teacher_absrel", "teacher_delta1")
               or (c.startswith("teacher.") and ("absrel" in c.lower() or "delta1" in c.lower()))]
    for column in quality:
        values = _per_group(table, column)
        if values:
            what = ("computed here: scale-and-shift aligned in disparity space to ground truth"
                    if not column.startswith("teacher.") else "from the teacher stage's manifest")
            teacher_figures.append({"title": f"Teacher quality: {column} ({what})",
                                    "png": figures.value_histogram(values, column)})

    grids = [{"title": f"{s.group}: {len(s.thumbs)} random samples (seed {seed})",
              "png": figures.sample_grid(s.thumbs, s.group)} for s in scans if s.thumbs]
    quarantined = table[table["status"] == "quarantined"]
    outliers = table[table["outlier"]]
    cols = ["group", "sample_id", "source_uri"]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(REPORT_TEMPLATE).render(
        store_url=store.url,
        schema_version=store.schema_version,
        store_version=store.version.number if store.version else "none committed (working state)",
        package_version=depthdata.__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        seed=seed,
        stats_name=STATS_NAME,
        groups=[_group_summary(s, table) for s in scans],
        quarantined=quarantined[[*cols, "reason"]].head(MAX_TABLE_ROWS).to_dict("records"),
        quarantined_more=max(0, len(quarantined) - MAX_TABLE_ROWS),
        depth_figures=depth_figures,
        valid_figure=valid_figure,
        teacher_figures=teacher_figures,
        outliers=outliers[[*cols, "outlier_reasons"]].head(MAX_TABLE_ROWS).to_dict("records"),
        outliers_more=max(0, len(outliers) - MAX_TABLE_ROWS),
        rules=rules,
        grids=grids,
    )
