"""Depth in the Wild (``kind: diw``): two-line CSV records, one ordinal pair per image, no depth.

A record is the image path (relative to the CSV's folder unless absolute), then
``y_A,x_A,y_B,x_B,ord,width,height`` with **1-based**, y-first coordinates at the original
``width×height``. The reader converts to the canonical 0-based pixel-centre coordinates of the
decoded image (scaled by pixel centres when the stored image is not ``width×height``) and
``ord`` ``>`` (A farther) → +1, ``<`` (A closer) → −1.

``items()`` only pairs up lines, so one malformed record never fails a split: its problem
(wrong field count, non-integer or out-of-range coordinates, unknown order symbol, missing
second line) is raised by ``load()`` of that item, naming ``CSV:line``.
"""

from __future__ import annotations

import os

import numpy as np
from pydantic import BaseModel, ConfigDict

from depthdata.errors import SourceError
from depthdata.sample import Sample, make_sample_id
from depthdata.sources.files import read_bytes, read_rgb
from depthdata.sources.registry import Source, SourceItem, register

ORDER = {">": 1.0, "<": -1.0}
DEFAULT_FILES = {"train": "DIW_train_val.csv", "test": "DIW_test.csv"}


class DiwOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: split → annotation CSV (relative to the root); default: those of
    #: ``DIW_train_val.csv`` (train) and ``DIW_test.csv`` (test) that exist
    files: dict[str, str] | None = None


def parse_record(text: str, where: str) -> tuple[list[int], float, int, int]:
    """``y_A,x_A,y_B,x_B,ord,width,height`` → (1-based coords, order ±1, width, height)."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 7:
        raise SourceError(where, f"expected 7 fields 'y_A,x_A,y_B,x_B,ord,width,height', got {len(fields)}")
    nums = fields[:4] + fields[5:]
    try:
        ya, xa, yb, xb, width, height = (int(v) for v in nums)
    except ValueError:
        raise SourceError(where, f"coordinates and size must be integers, got {','.join(nums)}") from None
    if fields[4] not in ORDER:
        raise SourceError(where, f"unknown order symbol {fields[4]!r} (expected '>' or '<')")
    if width < 1 or height < 1:
        raise SourceError(where, f"image size must be positive, got {width}×{height}")
    for name, v, hi in (("y_A", ya, height), ("x_A", xa, width), ("y_B", yb, height), ("x_B", xb, width)):
        if not 1 <= v <= hi:
            raise SourceError(where, f"{name}={v} outside 1..{hi} (1-based, image {width}×{height})")
    return [ya, xa, yb, xb], ORDER[fields[4]], width, height


def _to_image(coord_1based: int, annotated: int, actual: int) -> float:
    """A 1-based annotated pixel → 0-based pixel-centre position in an image of ``actual`` px."""
    pos = (coord_1based - 0.5) * (actual / annotated) - 0.5
    return min(max(pos, 0.0), actual - 1.0)


@register
class DiwSource(Source):
    kind = "diw"
    Options = DiwOptions
    fields = ("pairs",)
    max_pairs = 1

    def _files(self) -> dict[str, str]:
        if self.options.files is not None:
            return dict(self.options.files)
        return {s: f for s, f in DEFAULT_FILES.items() if os.path.isfile(os.path.join(self.root, f))}

    def splits(self) -> list[str]:
        files = self._files()
        if not files:
            raise SourceError(self.root, f"no DIW annotation CSV found (looked for {', '.join(DEFAULT_FILES.values())})")
        return list(files)

    def items(self, split: str) -> list[SourceItem]:
        files = self._files()
        if split not in files:
            raise SourceError(self.root, f"unknown split {split!r}; found {', '.join(files) or 'none'}")
        csv_path = os.path.join(self.root, files[split])
        base = os.path.dirname(csv_path)
        lines = [(no, ln.strip()) for no, ln in enumerate(read_bytes(csv_path).decode("utf-8").splitlines(), 1)
                 if ln.strip()]
        items, seen = [], {}
        for k in range(0, len(lines), 2):
            no, image = lines[k]
            record = lines[k + 1][1] if k + 1 < len(lines) else None
            path = image if os.path.isabs(image) else os.path.normpath(os.path.join(base, image))
            key = os.path.splitext(os.path.relpath(path, self.root))[0].replace(os.sep, "/")
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:  # an image annotated twice keeps both records apart
                key = f"{key}~{seen[key]}"
            items.append(SourceItem(key=key, uri=path, locator={"record": record, "where": f"{csv_path}:{no + 1}"
                                                                if record is not None else f"{csv_path}:{no}"}))
        if not items:
            raise SourceError(csv_path, "annotation CSV has no records")
        return items

    def load(self, split: str, item: SourceItem) -> Sample:
        where = item.locator["where"]
        if item.locator["record"] is None:
            raise SourceError(where, "record lacks its second line 'y_A,x_A,y_B,x_B,ord,width,height'")
        coords, order, width, height = parse_record(item.locator["record"], where)
        # DIW pixel positions refer to the stored pixel grid: no EXIF rotation
        rgb = read_rgb(item.uri, exif=False)
        h, w = rgb.shape[:2]
        # 1-based → 0-based, then pixel-centre scaling when the file is not at the annotated size
        # (plain floats: four numbers are cheaper in Python than through numpy)
        ya, xa, yb, xb = (_to_image(c, n, size) for c, n, size in
                          zip(coords, (height, width) * 2, (h, w) * 2))
        pairs = np.array([[ya, xa, yb, xb, order]], np.float32)
        meta = {"dataset": self.name, "split": split, "source_uri": item.uri, "original_size": [h, w],
                "annotated_size": [height, width]}
        return Sample(make_sample_id(self.name, split, item.key), rgb, pairs=pairs, meta=meta)
