"""Source readers, one module per format, registered by ``kind`` (see :mod:`.registry`).

Importing this package imports every built-in format module so that each registers itself.
"""

from depthdata.sources.registry import Source, SourceItem, get_source_class, register, source_kinds
from depthdata.sources import diw, images, nyuv2, synthia  # noqa: F401  (each registers its kind)
from depthdata.sources.resize import resize_sample

__all__ = ["Source", "SourceItem", "get_source_class", "register", "resize_sample", "source_kinds"]
