"""Source readers, one module per format, registered by ``kind`` (see :mod:`.registry`)."""

from depthdata.sources.registry import Source, SourceItem, get_source_class, register, source_kinds

__all__ = ["Source", "SourceItem", "get_source_class", "register", "source_kinds"]
