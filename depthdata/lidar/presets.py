"""Beam models of spinning LiDARs, as data. A new model plugs in with one :data:`PRESETS` entry.

Sensor frame: x forward, y left, z up (the Velodyne / Ouster convention). A beam's
*elevation* is its angle above the x-y plane (degrees, positive up); *azimuth* is measured
from x towards y (degrees, positive to the left). Ranges are metres along the beam.

Below the catalog's settings (:mod:`depthdata.lidar.config` checks names against
:data:`PRESETS`); :mod:`depthdata.lidar.beams` turns those settings into a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BeamModel:
    name: str
    #: one elevation per beam, degrees, sorted from the top beam down
    elevations_deg: tuple[float, ...]
    #: horizontal angle between two firings of one beam, degrees
    azimuth_step_deg: float
    min_range_m: float
    max_range_m: float
    #: standard deviation of the Gaussian range noise, metres
    range_sigma_m: float
    description: str = ""

    @property
    def channels(self) -> int:
        return len(self.elevations_deg)

    @property
    def azimuths_per_rev(self) -> int:
        return int(round(360.0 / self.azimuth_step_deg))


def even_elevations(top: float, bottom: float, n: int) -> tuple[float, ...]:
    """``n`` evenly spaced elevations from ``top`` down to ``bottom`` (degrees)."""
    return tuple(float(e) for e in np.linspace(top, bottom, n))


# VLP-32C: dense near the horizon. Table from Velodyne's VLP-32C manual (also the Argoverse
# calibration): 8 low beams, 18 beams 1/3° apart from -4° to +1.667°, 6 high beams.
_VLP32C = (
    -25.0, -15.639, -11.31, -8.843, -7.254, -6.148, -5.333, -4.667,
    *(float(e) for e in np.round(np.linspace(-4.0, 1.667, 18), 3)),
    2.333, 3.333, 4.667, 7.0, 10.333, 15.0,
)

PRESETS: dict[str, BeamModel] = {
    m.name: m
    for m in (
        # The real unit has two laser blocks with slightly different spacing (~1/3° above
        # -8.3°, ~1/2° below); evenly spaced beams over the stated span are the common
        # KITTI approximation. 0.17° azimuth is its 10 Hz setting (KITTI's rate).
        BeamModel("hdl64e", even_elevations(2.0, -24.9, 64), 0.17, 0.9, 120.0, 0.02,
                  "Velodyne HDL-64E (KITTI): 64 beams +2.0°..-24.9°, 10 Hz"),
        BeamModel("vlp32c", tuple(sorted(_VLP32C, reverse=True)), 0.2, 0.5, 200.0, 0.03,
                  "Velodyne VLP-32C (Argoverse): 32 beams +15°..-25°, dense near the horizon, 10 Hz"),
        BeamModel("vlp16", even_elevations(15.0, -15.0, 16), 0.2, 0.5, 100.0, 0.03,
                  "Velodyne VLP-16 (Puck): 16 beams ±15°, 2° apart, 10 Hz"),
        BeamModel("os1-128", even_elevations(22.5, -22.5, 128), 360.0 / 2048, 0.5, 120.0, 0.03,
                  "Ouster OS1-128: 128 beams over 45° (±22.5°), 2048 columns per revolution"),
    )
}
