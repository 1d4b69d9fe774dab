"""depthdata: dataset and pseudo-label pipeline for monocular depth distillation."""
__version__ = "0.1.0"
