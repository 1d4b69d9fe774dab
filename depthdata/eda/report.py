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
from fsspec.utils import get_protocol
from tqdm import tqdm

import depthdata
from depthdata.eda import figures
from depthdata.eda import stats as st
from depthdata.eda.outliers import OutlierRules, flag_outliers
from depthdata.eda.scan import GroupScan, scan_group
from depthdata.eda.template import REPORT_TEMPLATE
from depthdata.store import Store

log = logging.getLogger(__name__)

STATS_NAME = "stats.parquet"
REPORT_NAME = "report.html"
#: Longest tables shown in the HTML; the full lists are in stats.parquet.
MAX_TABLE_ROWS = 200


def write_report(store_url: str, out_dir: str | Path, samples_per_grid: int = 8, seed: int = 0,
                 storage_options: dict[str, Any] | None = None, rules: OutlierRules = OutlierRules(),
                 progress: bool = True, out_storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Scan every group of the store at ``store_url`` and write ``stats.parquet`` and ``report.html``.

    ``out_dir`` is a local folder or any fsspec URL (``s3://bucket/reports/build``), created if
    needed. It is opened with ``out_storage_options``; left ``None``, an ``out_dir`` on the
    store's kind of file system (same protocol) takes the store's ``storage_options``.
    ``samples_per_grid`` ok samples per group, drawn with ``seed``, appear in the sample grids.
    Reads one shard at a time. Returns ``{"stats": ..., "report": ...}``: local paths, or URLs
    for remote outputs. Raises :class:`~depthdata.errors.StoreError` for a missing or foreign
    store.
    """
    if samples_per_grid < 0:
        raise ValueError(f"samples_per_grid must be >= 0, got {samples_per_grid}")
    store = Store.open(store_url, storage_options=storage_options)
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
    # remote outputs are named as the caller spelled the folder's URL
    base = root if isinstance(fs, LocalFileSystem) else str(out_dir).rstrip("/")
    written = {"stats": f"{base}/{STATS_NAME}", "report": f"{base}/{REPORT_NAME}"}
    log.info("wrote %s and %s", written["stats"], written["report"])
    return written


def _output_fs(out_dir: str, store_url: str, storage_options: dict[str, Any] | None,
               out_storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and root path of the report folder (created)."""
    if out_storage_options is None:
        same_kind = get_protocol(out_dir) == get_protocol(store_url)
        out_storage_options = (storage_options or {}) if same_kind else {}
    fs, root = fsspec.core.url_to_fs(out_dir, **out_storage_options)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    return fs, root


def _stats_frame(scans: list[GroupScan]) -> pd.DataFrame:
    rows = [r for s in scans for r in s.rows]
    return pd.DataFrame(rows, columns=None if rows else ["group", "index", "sample_id", "source_uri", "status", "reason"])


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
