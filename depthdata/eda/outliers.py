"""Outlier flags on the per-sample statistics table, each with a human-readable reason.

Rules, applied per group to samples whose status is ``ok``:

* **robust z-score** of each column in :data:`ZSCORE_COLUMNS` present in the table:
  ``z = (x − median) / (1.4826·MAD)`` (the modified z-score of Iglewicz & Hoaglin); ``|z| > 3.5``
  flags. When more than half the values are equal the MAD is 0; then the mean absolute deviation
  is used, ``z = (x − median) / (1.253314·MeanAD)`` (both scale factors make the denominator a
  standard deviation for normal data). Groups smaller than ``min_samples`` get no z-scores: a
  spread estimated from a handful of samples flags noise.
* **mostly invalid depth**: ``depth_valid_fraction < min_valid_fraction``.
* **near-constant image**: ``contrast`` (luma std, 0–255) ``< min_contrast``.
* **flat teacher**: ``teacher_std < min_teacher_std`` (a collapsed prediction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

from depthdata.eda.rules import OutlierRules

ZSCORE_COLUMNS = ("depth_median", "depth_max", "brightness", "contrast", "teacher_median", "teacher_absrel",
                  "sparse_coverage")


def robust_z(values: np.ndarray) -> np.ndarray:
    """Modified z-scores of ``values`` (NaN stays NaN; all zeros when every value is equal)."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    z = np.full(x.shape, np.nan)
    if not finite.any():
        return z
    med = np.median(x[finite])
    scale = median_abs_deviation(x[finite], scale="normal")
    if scale == 0:
        scale = 1.253314 * np.mean(np.abs(x[finite] - med))
    z[finite] = 0.0 if scale == 0 else (x[finite] - med) / scale
    return z


def flag_outliers(stats: pd.DataFrame, rules: OutlierRules = OutlierRules()) -> pd.DataFrame:
    """A copy of ``stats`` with ``outlier`` (bool) and ``outlier_reasons`` ("; "-joined) added.

    ``stats`` needs ``group`` and ``status`` columns; the statistic columns are optional.
    """
    out = stats.reset_index(drop=True)
    reasons: list[list[str]] = [[] for _ in range(len(out))]
    ok = (out["status"] == "ok").to_numpy()

    def col(name: str) -> np.ndarray:
        return out[name].to_numpy(dtype=np.float64)

    for _, rows in out[ok].groupby("group", sort=False).indices.items():
        positions = np.flatnonzero(ok)[rows]
        if len(positions) < rules.min_samples:
            continue
        for name in ZSCORE_COLUMNS:
            if name not in out:
                continue
            values = col(name)[positions]
            z = robust_z(values)
            for pos, v, s in zip(positions, values, z):
                if abs(s) > rules.z_threshold:
                    reasons[pos].append(f"{name} = {v:.4g} (robust z {s:+.1f})")
    checks = (
        ("depth_valid_fraction", lambda v: v < rules.min_valid_fraction, "mostly invalid depth ({:.0%} valid)"),
        ("contrast", lambda v: v < rules.min_contrast, "near-constant image (luma std {:.2f})"),
        ("teacher_std", lambda v: v < rules.min_teacher_std, "flat teacher (std {:.2g})"),
    )
    for name, test, text in checks:
        if name not in out:
            continue
        values = col(name)
        with np.errstate(invalid="ignore"):
            hit = ok & test(values)
        for pos in np.flatnonzero(hit):
            reasons[pos].append(text.format(values[pos]))
    out["outlier"] = np.array([bool(r) for r in reasons], dtype=bool)
    out["outlier_reasons"] = ["; ".join(r) for r in reasons]
    return out
