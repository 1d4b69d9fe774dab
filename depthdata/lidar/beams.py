"""The beam model a catalog's ``lidar:`` settings name: a preset of
:mod:`depthdata.lidar.presets` (re-exported here) or a custom model given in the catalog.
"""

from __future__ import annotations

from depthdata.errors import DepthdataError
from depthdata.lidar.config import BeamModelConfig, LidarConfig
from depthdata.lidar.presets import PRESETS, BeamModel, even_elevations

__all__ = ["PRESETS", "BeamModel", "beam_model_for", "from_config"]


def from_config(name: str, cfg: BeamModelConfig) -> BeamModel:
    """A :class:`BeamModel` from a catalog ``custom_beam_models`` entry."""
    if cfg.elevations_deg is not None:
        elevations = tuple(sorted((float(e) for e in cfg.elevations_deg), reverse=True))
    else:
        elevations = even_elevations(cfg.elevation_max_deg, cfg.elevation_min_deg, cfg.channels)
    return BeamModel(name, elevations, cfg.azimuth_step_deg, cfg.min_range_m, cfg.max_range_m,
                     cfg.range_sigma_m, cfg.description)


def beam_model_for(config: LidarConfig) -> BeamModel:
    """The beam model ``config.beam_model`` names (custom models shadow presets of that name),
    with ``config.azimuth_step_deg`` applied when set."""
    if config.beam_model in config.custom_beam_models:
        model = from_config(config.beam_model, config.custom_beam_models[config.beam_model])
    elif config.beam_model in PRESETS:
        model = PRESETS[config.beam_model]
    else:
        known = sorted(PRESETS) + sorted(config.custom_beam_models)
        raise DepthdataError(f"lidar.beam_model: unknown beam model {config.beam_model!r}; known: {', '.join(known)}")
    if config.azimuth_step_deg is not None:
        model = BeamModel(model.name, model.elevations_deg, config.azimuth_step_deg, model.min_range_m,
                          model.max_range_m, model.range_sigma_m, model.description)
    return model
