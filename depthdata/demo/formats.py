"""Writers of each source format's real on-disk layout (described in ``docs/sources.md``).

The demo data and the tests' fixtures both use these, so a reader is always checked against
files laid out exactly as the public datasets lay them out. Depth inputs are float32 metres
with NaN = no return; each writer applies its format's quantisation.
"""

from __future__ import annotations

import os
import time

import cv2
import h5py
import numpy as np
import scipy.io

from depthdata.sources.nyuv2 import DEPTH8_METRES_PER_UNIT, DEPTH16_METRES_PER_UNIT
from depthdata.sources.synthia import CM_PER_METRE

#: MATLAB v7.3 files are HDF5 with a 512-byte user block holding a 128-byte MAT header
MAT_USERBLOCK = 512


def _mat_header() -> bytes:
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{time.strftime('%a %b %d %H:%M:%S %Y', time.gmtime(0))} HDF5 schema 1.00 .").encode("ascii")
    # 116 bytes text, 8 bytes subsystem offset, version 0x0200, endian indicator "IM"
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _mat_string(f: h5py.File, name: str, text: str) -> h5py.Reference:
    # MATLAB stores a char row vector as uint16 code units, shape (len, 1) in HDF5
    ds = f.create_dataset(name, data=np.array([ord(c) for c in text], np.uint16).reshape(-1, 1))
    ds.attrs["MATLAB_class"] = np.bytes_("char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds.ref


def write_nyu_labeled(path: str, rgb: np.ndarray, depth: np.ndarray, scenes: list[str], scene_types: list[str],
                      raw_depth: np.ndarray | None = None, omit: tuple[str, ...] = ()) -> str:
    """``nyu_depth_v2_labeled.mat``: ``rgb`` N×H×W×3 uint8, ``depth`` N×H×W float32 metres.

    Stored in MATLAB's column-major view: ``images`` N×3×W×H, ``depths``/``rawDepths`` N×W×H,
    ``scenes``/``sceneTypes`` 1×N object references to uint16 char arrays. ``omit`` leaves
    datasets out (to build malformed fixtures).
    """
    n = rgb.shape[0]
    raw = np.nan_to_num(depth, nan=0.0) if raw_depth is None else raw_depth
    with h5py.File(path, "w", userblock_size=MAT_USERBLOCK) as f:
        arrays = {
            "images": (rgb.transpose(0, 3, 2, 1), "uint8"),
            "depths": (np.nan_to_num(depth, nan=0.0).transpose(0, 2, 1).astype(np.float32), "single"),
            "rawDepths": (np.asarray(raw, np.float32).transpose(0, 2, 1), "single"),
        }
        for name, (arr, cls) in arrays.items():
            if name not in omit:
                ds = f.create_dataset(name, data=np.ascontiguousarray(arr))
                ds.attrs["MATLAB_class"] = np.bytes_(cls)
        refs = f.create_group("#refs#")
        for name, values in (("scenes", scenes), ("sceneTypes", scene_types)):
            if name in omit:
                continue
            ds = f.create_dataset(name, (1, n), dtype=h5py.ref_dtype)
            for i, text in enumerate(values):
                ds[0, i] = _mat_string(refs, f"{name}_{i}", text)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:
        fh.write(_mat_header())
    return path


def write_nyu_splits(path: str, train_1based: list[int], test_1based: list[int]) -> str:
    """``splits.mat`` (MATLAB v5, scipy) with 1-based ``trainNdxs``/``testNdxs`` column vectors."""
    scipy.io.savemat(path, {"trainNdxs": np.asarray(train_1based, np.float64).reshape(-1, 1),
                            "testNdxs": np.asarray(test_1based, np.float64).reshape(-1, 1)})
    return path


def depth_to_png8(depth: np.ndarray) -> np.ndarray:
    """DenseDepth train encoding: 0–255 spans 0–10 m; NaN → 0 (no depth)."""
    q = np.rint(np.nan_to_num(depth, nan=0.0) / DEPTH8_METRES_PER_UNIT)
    return np.where(np.isfinite(depth), np.clip(q, 1, 255), 0).astype(np.uint8)


def depth_to_png16(depth: np.ndarray, metres_per_unit: float) -> np.ndarray:
    """16-bit encoding at ``metres_per_unit``; NaN → 0; beyond range saturates at 65535."""
    q = np.rint(np.nan_to_num(depth, nan=0.0) / metres_per_unit)
    return np.where(np.isfinite(depth), np.clip(q, 1, 65535), 0).astype(np.uint16)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _imwrite(path: str, img: np.ndarray, params: list[int] | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img, params or []):
        raise OSError(f"could not write {path}")


def write_densedepth(root: str, train: list[tuple[str, int, np.ndarray, np.ndarray]],
                     test: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """DenseDepth tree under ``root/data``: ``train`` items ``(scene, N, rgb, depth)`` →
    ``nyu2_train/<scene>_out/N.jpg|N.png`` (8-bit depth); ``test`` items → 5-digit
    ``nyu2_test/XXXXX_colors.png|_depth.png`` (16-bit mm). Writes both CSVs (no header)."""
    lines = []
    for scene, num, rgb, depth in train:
        r, d = f"data/nyu2_train/{scene}_out/{num}.jpg", f"data/nyu2_train/{scene}_out/{num}.png"
        _imwrite(os.path.join(root, r), _bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95])
        _imwrite(os.path.join(root, d), depth_to_png8(depth))
        lines.append(f"{r},{d}")
    _write_lines(os.path.join(root, "data", "nyu2_train.csv"), lines)
    lines = []
    for i, (rgb, depth) in enumerate(test):
        r, d = f"data/nyu2_test/{i:05d}_colors.png", f"data/nyu2_test/{i:05d}_depth.png"
        _imwrite(os.path.join(root, r), _bgr(rgb))
        _imwrite(os.path.join(root, d), depth_to_png16(depth, DEPTH16_METRES_PER_UNIT))
        lines.append(f"{r},{d}")
    _write_lines(os.path.join(root, "data", "nyu2_test.csv"), lines)
    return root


def write_synthia_rand(root: str, frames: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """SYNTHIA-RAND-CITYSCAPES tree: ``RGB/0000000.png`` and ``Depth/Depth/0000000.png`` with depth
    in centimetres, 16-bit, the same value in all three channels; sky (NaN) saturates at 65535."""
    for i, (rgb, depth) in enumerate(frames):
        cm = depth_to_png16(depth, 1 / CM_PER_METRE)
        cm[np.isnan(depth)] = 65535
        _imwrite(os.path.join(root, "RGB", f"{i:07d}.png"), _bgr(rgb))
        _imwrite(os.path.join(root, "Depth", "Depth", f"{i:07d}.png"), np.dstack([cm, cm, cm]))
    return root


def write_diw(root: str, csv_name: str, image_dir: str,
              records: list[tuple[np.ndarray, tuple[int, int, int, int], str]]) -> str:
    """A DIW annotation CSV ``root/csv_name`` with images in ``root/image_dir``.

    ``records``: ``(rgb, (y_A, x_A, y_B, x_B) 1-based, '>' or '<')``; sizes are taken from the
    images. Each record is two lines: ``./image_dir/NNNNN.jpg`` then
    ``y_A,x_A,y_B,x_B,ord,width,height``.
    """
    lines = []
    for i, (rgb, (ya, xa, yb, xb), order) in enumerate(records):
        rel = f"./{image_dir}/{i:05d}.jpg"
        _imwrite(os.path.join(root, rel), _bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines += [rel, f"{ya},{xa},{yb},{xb},{order},{rgb.shape[1]},{rgb.shape[0]}"]
    _write_lines(os.path.join(root, csv_name), lines)
    return root


def _write_lines(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{ln}\n" for ln in lines))
