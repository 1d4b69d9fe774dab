"""The thresholds of the outlier flags (:mod:`depthdata.eda.outliers` applies them).

Kept apart from the code that applies them so that ``depthdata eda --help`` shows the defaults
without loading pandas and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierRules:
    z_threshold: float = 3.5
    min_samples: int = 8
    min_valid_fraction: float = 0.5
    min_contrast: float = 2.0
    min_teacher_std: float = 1e-3
