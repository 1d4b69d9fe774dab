"""Which store version a report folder describes: ``report-version.json``, written by
:func:`~depthdata.eda.report.write_report` after the report's files.

A scheduled build that changed nothing need not rescan the store (seconds to hours) to write the
same report again: it reads this small file first (:func:`report_version`). Kept apart from
:mod:`depthdata.eda.report`, which loads pandas, scipy and matplotlib, so that the check costs a
read and no imports.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import fsspec
from fsspec.utils import get_protocol

import depthdata

MARKER_NAME = "report-version.json"


def output_fs(out_dir: str, store_url: str, storage_options: dict[str, Any] | None,
              out_storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and root path of a report folder. ``out_storage_options`` left ``None``:
    a folder on the store's kind of file system (same protocol) takes the store's options."""
    if out_storage_options is None:
        same_kind = get_protocol(out_dir) == get_protocol(store_url)
        out_storage_options = (storage_options or {}) if same_kind else {}
    fs, root = fsspec.core.url_to_fs(out_dir, **out_storage_options)
    return fs, root.rstrip("/")


def write_marker(fs: fsspec.AbstractFileSystem, root: str, store_url: str, version: int | None,
                 files: list[str]) -> None:
    """Record that the report in ``root`` (``files``, names in the folder) describes ``version``
    of ``store_url`` (``None``: its uncommitted working state, which is never up to date)."""
    doc = {"store_url": store_url, "store_version": version, "package_version": depthdata.__version__,
           "files": files, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    with fs.open(f"{root}/{MARKER_NAME}", "w") as f:
        json.dump(doc, f, indent=1)


def report_version(out_dir: str, store_url: str, storage_options: dict[str, Any] | None = None,
                   out_storage_options: dict[str, Any] | None = None) -> tuple[int, list[str]] | None:
    """``(version, files)``: the committed store version the report in ``out_dir`` was written
    from, and its files' names, when it was written from ``store_url`` by this depthdata version
    and its files are all there; else ``None`` (no report, another store's, an older format, or
    one written from the working state)."""
    fs, root = output_fs(out_dir, store_url, storage_options, out_storage_options)
    try:
        with fs.open(f"{root}/{MARKER_NAME}", "r") as f:
            doc = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("store_url") != store_url \
            or doc.get("package_version") != depthdata.__version__:
        return None
    version, files = doc.get("store_version"), doc.get("files")
    if not isinstance(version, int) or not isinstance(files, list) or not files:
        return None
    return (version, files) if all(fs.exists(f"{root}/{name}") for name in files) else None
