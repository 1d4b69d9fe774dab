"""The catalog: which datasets to read, how to label them, where to write.

``catalog.yaml`` is validated by pydantic models with unknown keys forbidden. Every problem
becomes a :class:`~depthdata.errors.CatalogError` that quotes the YAML path, e.g.
``datasets.nyu.root: path does not exist: /data/nyu``. Relative paths (dataset roots, a local
store URL) are resolved against the catalog file's folder, so a catalog works from any cwd.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from depthdata.errors import CatalogError
from depthdata.lidar.config import LidarConfig
from depthdata.sources.resize import ResizeMode
from depthdata.teacher.config import TeacherConfig

CATALOG_VERSION = 1


class CompressorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: ``blosc-lz4`` (default): Blosc LZ4 with byte shuffle — measured fastest to read at the
    #: same size as Zstandard (benchmarks/RESULTS.md, store_read_write); ``zstd``: Zstandard,
    #: ``level`` 1–22; ``none``: raw (twice the bytes)
    codec: Literal["zstd", "blosc-lz4", "none"] = "blosc-lz4"
    #: compression level: 1–22 for ``zstd``, 1–9 for ``blosc-lz4`` (clamped), ignored for ``none``
    level: int = Field(5, ge=0, le=22)


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: any fsspec URL: a local path (default), ``s3://bucket/x.zarr``, ``memory://x``
    url: str = "build/depthdata.zarr"
    #: samples per shard; ``auto`` sizes shards to about 96 MiB of uncompressed data
    shard_size: int | Literal["auto"] = "auto"
    compressor: CompressorConfig = CompressorConfig()
    #: fsspec storage options (credentials, endpoint_url, ...) for remote stores
    storage_options: dict[str, Any] = {}

    @field_validator("shard_size")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("shard_size must be >= 1 or 'auto'")
        return v


class IntrinsicsConfig(BaseModel):
    """Pinhole intrinsics given in the catalog, for images of ``width × height`` pixels."""

    model_config = ConfigDict(extra="forbid")
    #: focal lengths, pixels
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    #: principal point, 0-based pixels (pixel centres at integers)
    cx: float
    cy: float
    #: size of the image these values are for, pixels
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    @model_validator(mode="after")
    def _inside(self) -> "IntrinsicsConfig":
        # the principal point lies in the image: a value outside is a unit or convention mix-up
        if not (-0.5 <= self.cx <= self.width - 0.5 and -0.5 <= self.cy <= self.height - 0.5):
            raise ValueError(f"principal point ({self.cx}, {self.cy}) lies outside the {self.width}×{self.height} "
                             "image (0-based pixels)")
        return self

    def for_size(self, height: int, width: int) -> Any:
        """The intrinsics scaled to an image of ``height × width`` pixels (pixel-centre convention)."""
        from depthdata.sample import Intrinsics

        return Intrinsics(self.fx, self.fy, self.cx, self.cy).scaled(height / self.height, width / self.width)


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: source format, one of ``depthdata sources list`` (nyuv2, synthia, diw, images)
    kind: str
    #: folder or file URL the source reads (relative to the catalog's folder)
    root: str
    #: splits to build; default every split the source finds
    splits: list[str] | None = None
    #: stored resolution ``[height, width]`` in pixels, or ``native``: the size of each split's
    #: first image (images of another size are brought to it by ``resize``)
    resolution: tuple[int, int] | Literal["native"] = (480, 640)
    #: how a source image becomes ``resolution``: ``resize`` (each axis scaled on its own),
    #: ``fit_pad`` (uniform scale to fit, padded: RGB 0, depth NaN), ``center_crop`` (uniform
    #: scale to cover, centre cut out)
    resize: ResizeMode = "resize"
    #: read at most this many items per split (for quick trials); default all
    limit: int | None = Field(None, ge=1)
    #: per-kind options, validated by the source's own schema (see the source options below)
    options: dict[str, Any] = {}
    #: the camera's pinhole intrinsics, replacing the source's own (e.g. NYU-layout data from
    #: another camera): ``{fx, fy, cx, cy, width, height}`` in pixels of an image of that
    #: ``width × height`` (0-based pixel centres); scaled to each image's size
    intrinsics: IntrinsicsConfig | None = None

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: tuple[int, int] | str) -> tuple[int, int] | str:
        if v != "native" and (v[0] < 8 or v[1] < 8):
            raise ValueError(f"resolution must be at least 8×8 pixels, got {list(v)}")
        return v


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: catalog format version (only 1 exists)
    version: Literal[1] = 1
    store: StoreConfig = StoreConfig()
    datasets: dict[str, DatasetConfig]
    teacher: TeacherConfig = TeacherConfig()
    lidar: LidarConfig = LidarConfig()

    #: folder of the catalog file; relative paths are resolved against it (not serialised)
    base_dir: str = Field(".", exclude=True)

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        if not v:
            raise ValueError("at least one dataset is required")
        for name in v:
            if not name or "/" in name or name.startswith("_"):
                raise ValueError(f"dataset name {name!r} must be non-empty, without '/', not starting with '_'")
        return v

    def resolve(self, url: str) -> str:
        """``url`` made absolute against the catalog's folder when it is a relative local path."""
        if "://" in url or os.path.isabs(url):
            return url
        return str((Path(self.base_dir) / url).resolve())

    @property
    def store_url(self) -> str:
        return self.resolve(self.store.url)

    def dataset_root(self, name: str) -> str:
        return self.resolve(self.datasets[name].root)

    def source(self, name: str):
        """The source reader of dataset ``name``."""
        # Imported here: the format readers load cv2, h5py and scipy, which reading a catalog
        # does not need.
        from depthdata.sources import get_source_class

        cfg = self.datasets[name]
        return get_source_class(cfg.kind)(name, cfg, self.dataset_root(name))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _format_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        where = _loc(prefix + tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{where}: {msg}")
    return lines


def parse_catalog(data: Any, base_dir: str = ".", check_roots: bool = True, source: str = "catalog") -> Catalog:
    """Validate a parsed YAML document. Raises :class:`CatalogError` listing every problem."""
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        cat = Catalog.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        # every problem at once: the sources' own options are checked too, not after a fix
        datasets = data.get("datasets") if isinstance(data.get("datasets"), dict) else {}
        more = [p for name, ds in datasets.items() if isinstance(ds, dict)
                for p in _source_problems(name, ds.get("kind"), ds.get("options", {}))]
        raise CatalogError(f"{source}: invalid catalog:\n  " + "\n  ".join(_format_errors(exc) + more)) from None
    # A teacher given as a folder next to the catalog is a path, not a Hub id.
    local_teacher = Path(base_dir) / cat.teacher.model
    if cat.teacher.model.startswith((".", "/")) or local_teacher.exists():
        cat.teacher.model = str(local_teacher.resolve()) if not os.path.isabs(cat.teacher.model) else cat.teacher.model
    problems = _check_datasets(cat, check_roots)
    if problems:
        raise CatalogError(f"{source}: invalid catalog:\n  " + "\n  ".join(problems))
    return cat


def _source_problems(name: str, kind: Any, options: Any) -> list[str]:
    """What is wrong with dataset ``name``'s ``kind`` and its ``options`` (validated by the source)."""
    from depthdata.sources import source_kinds

    kinds = source_kinds()
    if not isinstance(kind, str):
        return []  # reported by the catalog's own schema
    if kind not in kinds:
        return [f"datasets.{name}.kind: unknown kind {kind!r}; known: {', '.join(kinds)}"]
    try:
        kinds[kind].Options.model_validate(options if options is not None else {})
    except ValidationError as exc:
        return _format_errors(exc, ("datasets", name, "options"))
    return []


def _check_datasets(cat: Catalog, check_roots: bool) -> list[str]:
    problems = []
    for name, ds in cat.datasets.items():
        found = _source_problems(name, ds.kind, ds.options)
        problems.extend(found)
        if any(p.startswith(f"datasets.{name}.kind:") for p in found):
            continue
        if check_roots:
            root = cat.dataset_root(name)
            fs, path = fsspec.core.url_to_fs(root, **cat.store.storage_options) if "://" in root else (None, root)
            exists = os.path.exists(root) if fs is None else fs.exists(path)
            if not exists:
                problems.append(f"datasets.{name}.root: path does not exist: {root}")
    return problems


def load_catalog(path: str | os.PathLike[str], check_roots: bool = True) -> Catalog:
    """Read and validate a catalog YAML file."""
    p = Path(path)
    if not p.is_file():
        raise CatalogError(f"{p}: catalog file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise CatalogError(f"{p}: not valid YAML: {exc}") from None
    return parse_catalog(data, base_dir=str(p.resolve().parent), check_roots=check_roots, source=str(p))
