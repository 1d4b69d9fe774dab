"""The one registry of source formats. A new format plugs in with one module that subclasses
:class:`Source` and decorates it with :func:`register`.

A source is two cheap steps so that a build can be cut into shards before any pixel is read:

1. :meth:`Source.items` lists a split's items (file paths, ``.mat`` indices, ...) in a
   deterministic order, without decoding images;
2. :meth:`Source.load` reads one item into a canonical :class:`~depthdata.sample.Sample` at the
   source's native resolution, or raises :class:`~depthdata.errors.SourceError` /
   :class:`~depthdata.errors.SampleError` naming the file and the problem.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from depthdata.sample import Sample


@dataclass(frozen=True)
class SourceItem:
    """One loadable item of a split.

    ``key`` is stable and unique within the split (it becomes part of the sample id); ``uri`` is
    the main file, used in error messages and the manifest; ``locator`` holds whatever else the
    source needs to load the item (JSON-serialisable: items travel to Dask workers).
    """

    key: str
    uri: str
    locator: dict[str, Any] = field(default_factory=dict)


class SourceConfig(Protocol):
    """What a source reads of its dataset's settings (the catalog's
    :class:`~depthdata.catalog.DatasetConfig`; typed here so that the registry sits below the
    catalog, which builds its sources through it)."""

    #: the dataset's ``options:``, validated by the source's ``Options``
    options: dict[str, Any]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(ABC):
    """Base class of a source format. Subclasses set ``kind``, ``Options`` and ``fields``."""

    kind: ClassVar[str]
    #: pydantic model of the catalog's ``options:`` for this kind (extra keys forbidden)
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: fields the records carry besides ``rgb``: any of "depth", "pairs"
    fields: ClassVar[tuple[str, ...]] = ()
    #: most ordinal pairs one record can carry (sizes the store's ``pairs`` array)
    max_pairs: ClassVar[int] = 0

    def __init__(self, name: str, config: SourceConfig, root: str):
        self.name = name
        self.config = config
        self.root = root
        self.options = self.Options.model_validate(config.options)

    @abstractmethod
    def splits(self) -> list[str]:
        """Splits present under the root, in a stable order."""

    @abstractmethod
    def items(self, split: str) -> list[SourceItem]:
        """The split's items in a deterministic order, without decoding any image."""

    @abstractmethod
    def load(self, split: str, item: SourceItem) -> "Sample":
        """One item as a canonical record at native resolution (resizing happens later)."""

    def item_files(self, item: SourceItem) -> list[str]:
        """The local files ``item`` is read from. Their sizes and modification times (plus the
        item's locator) are its fingerprint: a later build reads the item again only when that
        changed (:mod:`depthdata.store.plan`). Sources whose items span several files (an RGB
        image and its depth map) name them all; a member of an archive names the archive."""
        return [item.uri.split("!", 1)[0]]


_REGISTRY: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: make ``cls`` available under ``cls.kind``."""
    kind = getattr(cls, "kind", None)
    if not kind:
        raise TypeError(f"{cls.__name__} must set a non-empty 'kind'")
    if kind in _REGISTRY and _REGISTRY[kind] is not cls:
        raise TypeError(f"source kind {kind!r} is registered twice ({_REGISTRY[kind].__name__}, {cls.__name__})")
    _REGISTRY[kind] = cls
    return cls


def source_kinds() -> dict[str, type[Source]]:
    """The kinds registered so far. Look kinds up through :func:`depthdata.sources.source_kinds`,
    which loads the built-in readers first (this module must not import them: they import it)."""
    return dict(sorted(_REGISTRY.items()))


def get_source_class(kind: str) -> type[Source]:
    kinds = source_kinds()
    if kind not in kinds:
        raise KeyError(f"unknown source kind {kind!r}; known kinds: {', '.join(kinds) or 'none'}")
    return kinds[kind]
