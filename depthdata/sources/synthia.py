"""SYNTHIA (``kind: synthia``): RAND-CITYSCAPES and SEQS trees.

* ``rand``: ``RGB/0000000.png`` + ``Depth/Depth/0000000.png``; one split (option ``split``).
* ``seqs``: ``{RGB,Depth}/Stereo_{Left,Right}/Omni_{F,B,L,R}/000000.png``; the cameras read are
  the product of options ``sides`` × ``directions``; keys are ``Stereo_Left/Omni_F/000000``.

Depth ``cm16`` (default): 16-bit PNG read unchanged, the same value in every channel, one
channel taken, **centimetres** / 100 = metres. ``rgb24`` (only when asked for, never guessed):
``depth = 5000·(R + 256·G + 256²·B) / (256³ − 1)`` metres. Values of 0 and values beyond
``max_depth`` metres (sky, saturated 65535 cm) become NaN.

Intrinsics: f = 532.740352, cx = 640, cy = 380 at 1280×760, scaled to the image size.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from depthdata.errors import SourceError
from depthdata.sample import Intrinsics, Sample, make_sample_id
from depthdata.sources.files import (check_depth_values, check_same_size, decode_depth_png, decode_unchanged,
                                     expect_dtype, read_bytes, read_rgb)
from depthdata.sources.registry import Source, SourceItem, register

log = logging.getLogger(__name__)

SYNTHIA_CAMERA = Intrinsics(fx=532.740352, fy=532.740352, cx=640.0, cy=380.0)
SYNTHIA_SIZE = (760, 1280)
CM_PER_METRE = 100.0
RGB24_SCALE_M = 5000.0 / (256**3 - 1)


class SynthiaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: ``rand`` (RAND-CITYSCAPES), ``seqs`` (video sequences) or ``auto`` (by folder structure)
    layout: Literal["auto", "rand", "seqs"] = "auto"
    #: split name the samples are filed under
    split: str = "train"
    #: seqs: stereo sides to read
    sides: list[Literal["Stereo_Left", "Stereo_Right"]] = ["Stereo_Left"]
    #: seqs: omni camera directions to read (F front, B back, L left, R right)
    directions: list[Literal["F", "B", "L", "R"]] = ["F"]
    #: ``cm16``: 16-bit centimetres (SYNTHIA's documented encoding); ``rgb24``: RGB-packed
    depth_encoding: Literal["cm16", "rgb24"] = "cm16"
    #: metres; farther depth (sky) becomes NaN. 655 drops the 16-bit saturation value 65535 cm.
    max_depth: float = Field(655.0, gt=0)


def synthia_intrinsics(h: int, w: int) -> Intrinsics:
    return SYNTHIA_CAMERA.scaled(h / SYNTHIA_SIZE[0], w / SYNTHIA_SIZE[1])


@register
class SynthiaSource(Source):
    kind = "synthia"
    Options = SynthiaOptions
    fields = ("depth",)

    def _layout(self) -> str:
        if self.options.layout != "auto":
            return self.options.layout
        rand = os.path.isdir(os.path.join(self.root, "Depth", "Depth"))
        seqs = os.path.isdir(os.path.join(self.root, "RGB", "Stereo_Left")) or \
            os.path.isdir(os.path.join(self.root, "RGB", "Stereo_Right"))
        if rand == seqs:
            raise SourceError(self.root, "cannot detect the SYNTHIA layout (expected Depth/Depth/ for rand or "
                              "RGB/Stereo_Left|Right/ for seqs); set options.layout")
        layout = "rand" if rand else "seqs"
        log.info("dataset %s: detected SYNTHIA layout %r under %s", self.name, layout, self.root)
        return layout

    def splits(self) -> list[str]:
        return [self.options.split]

    def items(self, split: str) -> list[SourceItem]:
        if split != self.options.split:
            raise SourceError(self.root, f"unknown split {split!r}; this source has {self.options.split!r}")
        if self._layout() == "rand":
            cams = [("", os.path.join(self.root, "RGB"), os.path.join(self.root, "Depth", "Depth"))]
        else:
            cams = [(f"{side}/Omni_{d}/", os.path.join(self.root, "RGB", side, f"Omni_{d}"),
                     os.path.join(self.root, "Depth", side, f"Omni_{d}"))
                    for side, d in itertools.product(self.options.sides, self.options.directions)]
        items = []
        for prefix, rgb_dir, depth_dir in cams:
            if not os.path.isdir(rgb_dir):
                raise SourceError(rgb_dir, "RGB folder not found")
            for f in sorted(os.listdir(rgb_dir)):
                if f.endswith(".png"):
                    stem = f[:-4]
                    items.append(SourceItem(key=prefix + stem, uri=os.path.join(rgb_dir, f),
                                            locator={"depth": os.path.join(depth_dir, f), "camera": prefix.rstrip("/")}))
        if not items:
            raise SourceError(self.root, "no RGB .png files found")
        return items

    def _depth(self, path: str) -> np.ndarray:
        data = read_bytes(path)
        if self.options.depth_encoding == "cm16":
            depth = decode_depth_png(data, path, np.uint16, 1 / CM_PER_METRE, "16-bit depth PNG in centimetres")
        else:
            raw = decode_unchanged(data, path)
            if raw.ndim != 3 or raw.shape[2] < 3:
                raise SourceError(path, f"rgb24 depth needs a 3-channel PNG, got shape {raw.shape}")
            expect_dtype(raw, np.uint8, path, "8-bit RGB-packed depth PNG")
            # OpenCV gives BGR: R = channel 2
            packed = raw[..., 2].astype(np.float64) + 256.0 * raw[..., 1] + 65536.0 * raw[..., 0]
            depth = check_depth_values((packed * RGB24_SCALE_M).astype(np.float32), path)
        depth[depth > self.options.max_depth] = np.nan
        return depth

    def item_files(self, item: SourceItem) -> list[str]:
        return [item.uri, item.locator["depth"]]

    def load(self, split: str, item: SourceItem) -> Sample:
        rgb = read_rgb(item.uri, exif=False)
        depth_path = item.locator["depth"]
        depth = self._depth(depth_path)
        check_same_size(rgb, depth, item.uri, depth_path)
        meta = {"dataset": self.name, "split": split, "source_uri": item.uri,
                "original_size": [int(rgb.shape[0]), int(rgb.shape[1])]}
        if item.locator["camera"]:
            meta["camera"] = item.locator["camera"]
        return Sample(make_sample_id(self.name, split, item.key), rgb, depth=depth,
                      intrinsics=synthia_intrinsics(*rgb.shape[:2]), meta=meta)
