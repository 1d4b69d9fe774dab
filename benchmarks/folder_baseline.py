"""The baseline the store is measured against: a folder of per-sample image files.

Per sample ``i``: ``<i>_rgb.jpg`` (quality 95), and 16-bit PNGs ``<i>_depth.png`` and
``<i>_sparse.png`` (millimetres) and ``<i>_teacher.png`` (disparity × 65535) — the usual way
depth datasets are shipped, decoded with OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: field → (file suffix, scale from stored uint16 to the field's units, dtype)
PNG_FIELDS = {"depth": (1000.0, np.float32), "sparse": (1000.0, np.float32), "teacher": (65535.0, np.float16)}


def write_sample(folder: Path, i: int, sample: dict[str, np.ndarray]) -> None:
    stem = folder / f"{i:05d}"
    cv2.imwrite(f"{stem}_rgb.jpg", cv2.cvtColor(sample["rgb"], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    for name, (scale, _) in PNG_FIELDS.items():
        if name in sample:
            cv2.imwrite(f"{stem}_{name}.png", np.round(sample[name].astype(np.float32) * scale).astype(np.uint16))


def write_folder(folder: Path, samples: dict[str, np.ndarray]) -> None:
    """Every sample of ``samples`` (field → array with the sample axis first) as files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(samples["rgb"])):
        write_sample(folder, i, {name: arr[i] for name, arr in samples.items()})


def read_sample(folder: Path, i: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    stem = folder / f"{i:05d}"
    out = {"rgb": cv2.cvtColor(cv2.imread(f"{stem}_rgb.jpg", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)}
    for name in fields:
        if name in PNG_FIELDS:
            scale, dtype = PNG_FIELDS[name]
            out[name] = (cv2.imread(f"{stem}_{name}.png", cv2.IMREAD_UNCHANGED) / scale).astype(dtype)
    return out
