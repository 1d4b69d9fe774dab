"""The fields a store holds: one Zarr array per field, sample axis first.

Each field belongs to the *stage* that writes it; a stage's completion record (a manifest part
per shard) covers exactly its fields, so a stage can be re-run alone (a new beam model rewrites
``sparse`` only). A new field plugs in here with one :class:`FieldSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FieldSpec:
    """How a field is stored.

    ``sample_shape`` is a function of the group's ``(height, width, max_pairs)`` so that one spec
    serves every resolution. ``fill`` is what a never-written or quarantined slot reads as.
    """

    name: str
    stage: str
    dtype: str
    sample_shape: str  # "hw", "hw3" or "pairs"
    fill: float
    doc: str

    def shape(self, height: int, width: int, max_pairs: int = 0) -> tuple[int, ...]:
        if self.sample_shape == "hw":
            return (height, width)
        if self.sample_shape == "hw3":
            return (height, width, 3)
        if self.sample_shape == "pairs":
            return (max_pairs, 5)
        raise ValueError(f"unknown sample shape {self.sample_shape!r}")

    def sample_nbytes(self, height: int, width: int, max_pairs: int = 0) -> int:
        return math.prod(self.shape(height, width, max_pairs)) * np.dtype(self.dtype).itemsize


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("rgb", "ingest", "uint8", "hw3", 0, "image, RGB order, H×W×3"),
        FieldSpec("depth", "ingest", "float32", "hw", math.nan, "ground-truth depth in metres; NaN = invalid"),
        FieldSpec(
            "pairs", "ingest", "float32", "pairs", math.nan,
            "ordinal pairs (y_a, x_a, y_b, x_b, order), 0-based pixels; NaN rows = padding",
        ),
        FieldSpec(
            "teacher", "teacher", "float16", "hw", math.nan,
            "teacher relative disparity normalised per image to [0, 1]; larger = nearer",
        ),
        FieldSpec("teacher_conf", "teacher", "float16", "hw", math.nan, "teacher confidence in [0, 1]"),
        FieldSpec("sparse", "lidar", "float32", "hw", 0.0, "synthetic LiDAR depth in metres; 0 = no return"),
    )
}

STAGES: dict[str, tuple[str, ...]] = {}
for _spec in FIELDS.values():
    STAGES.setdefault(_spec.stage, ())
    STAGES[_spec.stage] += (_spec.name,)


def field_spec(name: str) -> FieldSpec:
    try:
        return FIELDS[name]
    except KeyError:
        raise KeyError(f"unknown field {name!r}; known fields: {', '.join(FIELDS)}") from None


def auto_shard_size(height: int, width: int, fields: list[str], max_pairs: int = 0, target_mib: float = 96) -> int:
    """Samples per shard so that one shard of all ``fields`` is about ``target_mib`` MiB raw.

    A shard is the unit a task writes and a reader fetches: large enough that object-store
    requests are few, small enough that a worker holds a few of them in memory.
    """
    per_sample = sum(field_spec(f).sample_nbytes(height, width, max_pairs) for f in fields)
    return max(1, int(target_mib * 2**20 // max(per_sample, 1)))
