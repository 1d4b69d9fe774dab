"""Source readers, one module per format, registered by ``kind`` (see :mod:`.registry`).

Importing this package is light: the built-in readers (and OpenCV and h5py with them) load, and
register their kinds, the first time a kind is looked up through :func:`source_kinds` or
:func:`get_source_class` here. Importing the catalog (which needs :mod:`.resize`'s modes) must
not load OpenCV, which rewrites the process environment when imported.
"""

from __future__ import annotations

from typing import Any

from depthdata.sources import registry
from depthdata.sources.registry import Source, SourceItem, register


def _load_readers() -> None:
    from depthdata.sources import diw, images, nyuv2, synthia  # noqa: F401  (each registers its kind)


def source_kinds() -> dict[str, type[Source]]:
    """Every registered kind (the built-in ones included) → its reader class."""
    _load_readers()
    return registry.source_kinds()


def get_source_class(kind: str) -> type[Source]:
    """The reader class of ``kind``; ``KeyError`` listing the known kinds when there is none."""
    _load_readers()
    return registry.get_source_class(kind)


def __getattr__(name: str) -> Any:
    if name == "resize_sample":  # OpenCV: loads when used
        from depthdata.sources.resize import resize_sample

        return resize_sample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Source", "SourceItem", "get_source_class", "register", "resize_sample", "source_kinds"]
