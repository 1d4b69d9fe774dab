"""Exploratory data analysis of a built store: ``stats.parquet`` (one row per sample, with
outlier flags and reasons) and a self-contained ``report.html``. Entry point: :func:`write_report`."""

from depthdata.eda.outliers import OutlierRules, flag_outliers, robust_z
from depthdata.eda.report import write_report

__all__ = ["OutlierRules", "flag_outliers", "robust_z", "write_report"]
