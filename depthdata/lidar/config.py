"""Catalog settings of the LiDAR synthesis stage (``lidar:`` in catalog.yaml).

Units: metres for distances, degrees for angles. Frames are described in :mod:`depthdata.lidar.camera`
(camera: x right, y down, z forward) and :mod:`depthdata.lidar.presets` (sensor: x forward,
y left, z up; elevation positive up, azimuth positive to the left).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from depthdata.lidar.presets import PRESETS


class BeamModelConfig(BaseModel):
    """A custom beam model (``lidar.custom_beam_models.<name>`` in the catalog).

    Give either ``elevations_deg`` (one entry per beam) or ``channels`` with
    ``elevation_min_deg``/``elevation_max_deg`` (evenly spaced beams).
    """

    model_config = ConfigDict(extra="forbid")

    #: elevation of each beam, degrees (positive up)
    elevations_deg: list[float] | None = None
    #: number of evenly spaced beams (with ``elevation_min_deg`` and ``elevation_max_deg``)
    channels: int | None = Field(None, ge=1, le=1024)
    #: elevation of the lowest beam, degrees
    elevation_min_deg: float | None = Field(None, ge=-90, le=90)
    #: elevation of the highest beam, degrees
    elevation_max_deg: float | None = Field(None, ge=-90, le=90)
    #: horizontal angle between two firings of one beam, degrees
    azimuth_step_deg: float = Field(..., gt=0, le=10)
    #: closer returns are lost, metres
    min_range_m: float = Field(0.5, ge=0)
    #: farther returns are lost, metres
    max_range_m: float = Field(..., gt=0)
    #: standard deviation of the Gaussian range noise, metres
    range_sigma_m: float = Field(0.02, ge=0)
    #: free text describing the model
    description: str = "custom beam model from the catalog"

    @model_validator(mode="after")
    def _one_layout(self) -> "BeamModelConfig":
        even = (self.channels, self.elevation_min_deg, self.elevation_max_deg)
        if self.elevations_deg is not None:
            if any(v is not None for v in even):
                raise ValueError("give either elevations_deg or channels + elevation_min_deg + elevation_max_deg, not both")
            if not self.elevations_deg:
                raise ValueError("elevations_deg must list at least one beam")
            if any(not -90 <= e <= 90 for e in self.elevations_deg):
                raise ValueError("elevations_deg must lie in [-90, 90] degrees")
        elif any(v is None for v in even):
            raise ValueError("give elevations_deg, or all of channels, elevation_min_deg, elevation_max_deg")
        elif self.elevation_min_deg > self.elevation_max_deg:
            raise ValueError("elevation_min_deg must not exceed elevation_max_deg")
        if self.min_range_m >= self.max_range_m:
            raise ValueError("min_range_m must be below max_range_m")
        return self


class LidarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a preset name (see ``depthdata lidar presets``) or a key of ``custom_beam_models``
    beam_model: str = "hdl64e"
    #: extra beam models defined in the catalog, by name
    custom_beam_models: dict[str, BeamModelConfig] = {}
    #: ``grid``: two triangles per 2×2 pixel cell, split at depth jumps; ``poisson``: Open3D
    #: screened Poisson reconstruction (about 50× slower)
    mesher: Literal["grid", "poisson"] = "grid"
    #: which depth is meshed: ground truth where the source has it, else the teacher's
    #: pseudo-metric depth
    depth_source: Literal["auto", "gt", "teacher"] = "auto"
    #: stage seed; each sample's seed derives from it and the sample id (independent of sharding)
    seed: int = 0

    # -- camera ----------------------------------------------------------------------------
    #: horizontal field of view range (degrees) intrinsics are drawn from when a sample has none
    hfov_deg: tuple[float, float] = (55.0, 75.0)
    #: principal point jitter of sampled intrinsics, as a fraction of width / height (uniform ±)
    principal_jitter: float = Field(0.02, ge=0, le=0.25)
    #: depth beyond this many metres is treated as invalid before meshing
    max_depth_m: float = Field(120.0, gt=0)

    # -- meshing ---------------------------------------------------------------------------
    #: ``grid``: a triangle is dropped when max/min depth of its corners exceeds 1 + this
    grid_max_rel_jump: float = Field(0.05, gt=0)
    #: ``poisson``: octree depth of the reconstruction
    poisson_depth: int = Field(8, ge=5, le=12)
    #: ``poisson``: neighbours used to estimate normals
    poisson_normal_knn: int = Field(30, ge=3)
    #: ``poisson``: vertices whose density is below this quantile are removed
    poisson_density_quantile: float = Field(0.02, ge=0, lt=1)
    #: ``poisson``: faces beyond the observed depth range widened by this fraction are removed
    poisson_depth_margin: float = Field(0.02, ge=0)

    # -- sensor ----------------------------------------------------------------------------
    #: sensor origin in the camera frame (x right, y down, z forward), metres. Default: the
    #: KITTI rig (Velodyne 8 cm above and 27 cm behind the left colour camera)
    sensor_offset_m: tuple[float, float, float] = (0.0, -0.08, -0.27)
    #: sensor rotation (roll, pitch, yaw) in degrees about its own x (forward), y (left), z (up)
    #: axes, applied in that order, relative to a level sensor looking along the camera's z
    sensor_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: override of the beam model's azimuth step, degrees
    azimuth_step_deg: float | None = Field(None, gt=0, le=10)
    #: multiplies the beam model's range noise σ; 0 turns noise off
    range_noise_scale: float = Field(1.0, ge=0)
    #: probability that any return is lost
    dropout_random: float = Field(0.0, ge=0, le=1)
    #: extra loss probability at the beam model's maximum range, growing with (range / max)²
    #: as the returned power falls off with range
    dropout_far: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "LidarConfig":
        lo, hi = self.hfov_deg
        if not 1 <= lo <= hi < 179:
            raise ValueError(f"hfov_deg must be [low, high] with 1 <= low <= high < 179, got {[lo, hi]}")
        if self.beam_model not in PRESETS and self.beam_model not in self.custom_beam_models:
            known = sorted(PRESETS) + sorted(self.custom_beam_models)
            raise ValueError(f"unknown beam_model {self.beam_model!r}; known: {', '.join(known)}")
        return self
