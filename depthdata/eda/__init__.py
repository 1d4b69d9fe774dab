"""Exploratory data analysis of a built store: ``stats.parquet`` (one row per sample, with
outlier flags and reasons) and a self-contained ``report.html``. Entry point: :func:`write_report`.

The names below load on first use: importing a light module of the package (the CLI imports
:mod:`.rules`) must not load pandas, scipy and matplotlib with the report.
"""

from depthdata._lazy import lazy_exports

_EXPORTS = {
    "OutlierRules": "depthdata.eda.rules",
    "flag_outliers": "depthdata.eda.outliers",
    "robust_z": "depthdata.eda.outliers",
    "write_report": "depthdata.eda.report",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
