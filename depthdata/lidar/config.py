"""Catalog settings of the LiDAR synthesis stage (``lidar:`` in catalog.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LidarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a preset name (see ``depthdata lidar presets``) for the beam model
    beam_model: str = "hdl64e"
    mesher: Literal["grid", "poisson"] = "grid"
    #: which depth is meshed: ground truth where the source has it, else the teacher's
    #: pseudo-metric depth
    depth_source: Literal["auto", "gt", "teacher"] = "auto"
    seed: int = 0
    poisson_depth: int = Field(8, ge=5, le=12)
