"""NYU Depth V2 (``kind: nyuv2``) in its four common layouts, chosen by the ``layout`` option.

* ``labeled_mat``: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read one sample at a time
  with h5py; ``images`` is N×3×W×H, ``depths``/``rawDepths`` N×W×H metres) plus the official
  ``splits.mat`` (``trainNdxs``/``testNdxs``, **1-based**). Without ``splits.mat`` every sample
  is in split ``all``. Keys are the 0-based index, zero-padded (``00042``). ``meta`` carries the
  scene name and type (``scenes``/``sceneTypes``) and the 1-based ``mat_index``.
* ``densedepth``: ``data/nyu2_{train,test}.csv`` (lines ``rgb_path,depth_path``, relative to the
  root), either unpacked or inside ``nyu_data.zip``. Train depth PNGs are 8-bit with 0–255
  spanning 0–10 m; test depth PNGs are 16-bit millimetres.
* ``scene_folders``: ``<scene>_out/N.jpg`` + ``N.png`` (8-bit, 0–255 = 0–10 m), split ``train``.
* ``bts``: ``sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (16-bit mm) listed by
  file lists ``rgb depth focal`` (option ``file_lists``), or every pair under ``sync/`` as split
  ``train`` when no list is given.

``auto`` picks the one layout whose marker files exist and logs its choice; when none or
several match it asks for an explicit ``layout``. Depth is float32 metres with 0 → NaN.
Intrinsics are the Kinect colour camera's from the NYU toolbox (given there 1-based at
640×480; converted here to 0-based) scaled to the image size, or ``fx = fy = focal`` from a BTS
list.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import h5py
import numpy as np
import scipy.io
from pydantic import BaseModel, ConfigDict

from depthdata.errors import SourceError
from depthdata.sample import Intrinsics, Sample, make_sample_id
from depthdata.sources.files import (check_depth_values, check_same_size, decode_depth_png, decode_rgb, read_bytes,
                                     read_depth_png)
from depthdata.sources.registry import Source, SourceItem, register

log = logging.getLogger(__name__)

#: Kinect colour intrinsics at 640×480 from the NYU toolbox's camera_params.m, converted from
#: MATLAB's 1-based pixel coordinates to 0-based (cx, cy minus 1).
KINECT = Intrinsics(fx=518.8579, fy=519.4696, cx=325.5824 - 1, cy=253.7362 - 1)
KINECT_SIZE = (480, 640)
LABELED_MAT = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"
DENSEDEPTH_ZIP = "nyu_data.zip"
#: DenseDepth train PNGs: 8-bit, 0–255 spans 0–10 m
DEPTH8_METRES_PER_UNIT = 10.0 / 255.0
#: DenseDepth test and BTS PNGs: 16-bit millimetres
DEPTH16_METRES_PER_UNIT = 1.0 / 1000.0


def kinect_intrinsics(h: int, w: int) -> Intrinsics:
    """The NYU Kinect camera scaled to an ``h×w`` image (pixel-centre convention)."""
    return KINECT.scaled(h / KINECT_SIZE[0], w / KINECT_SIZE[1])


def scene_type(scene: str) -> str:
    """``living_room_0038b`` → ``living_room``."""
    return re.sub(r"_\d+[a-z]?$", "", scene)


def _mat_string(f: h5py.File, ref: h5py.Reference) -> str:
    # MATLAB v7.3 stores char arrays as uint16 code units
    return "".join(chr(c) for c in np.asarray(f[ref]).ravel())


def _ref_at(ds: h5py.Dataset, i: int) -> h5py.Reference:
    # scenes/sceneTypes are 1×N (as MATLAB writes them) or N×1
    return ds[0, i] if ds.shape[0] == 1 else ds[i, 0]


# -- the layouts ------------------------------------------------------------------------------
# Each layout is four functions of the source (its root, options and open files): whether the
# root holds it, its splits, a split's items, and one item's (rgb, depth, intrinsics, meta).

_Loaded = tuple[np.ndarray, np.ndarray, Intrinsics, dict[str, Any]]


def _mat_found(src: NyuV2Source) -> bool:
    return src.root.endswith(".mat") or os.path.isfile(os.path.join(src.root, src.options.mat_file))


def _mat_splits(src: NyuV2Source) -> list[str]:
    return ["train", "test"] if os.path.isfile(src._splits_path()) else ["all"]


def _mat_items(src: NyuV2Source, split: str) -> list[SourceItem]:
    path = src._mat_path()
    f = src._h5file()
    if "images" not in f:
        raise SourceError(path, "the .mat file lacks the 'images' dataset")
    n = f["images"].shape[0]
    if split == "all":
        idx = np.arange(n)
    else:
        sp = src._splits_path()
        try:
            m = scipy.io.loadmat(sp)
        except (OSError, ValueError) as exc:
            raise SourceError(sp, f"cannot read split file: {exc}") from None
        key = f"{split}Ndxs"
        if key not in m:
            raise SourceError(sp, f"split file lacks {key!r}")
        idx = np.asarray(m[key]).astype(np.int64).ravel() - 1  # 1-based → 0-based
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise SourceError(sp, f"{key} has indices outside 1..{n} (1-based)")
    return [SourceItem(key=f"{i:05d}", uri=path, locator={"index": int(i)}) for i in idx]


def _mat_load(src: NyuV2Source, split: str, item: SourceItem) -> _Loaded:
    f = src._h5file()
    path = src._mat_path()
    i = int(item.locator["index"])
    depth_name = "rawDepths" if src.options.raw_depth else "depths"
    for needed in ("images", depth_name):
        if needed not in f:
            raise SourceError(path, f"the .mat file lacks the {needed!r} dataset")
    try:
        chw = f["images"][i]
        wh = f[depth_name][i]
    except (OSError, ValueError, IndexError) as exc:
        raise SourceError(path, f"cannot read sample {i} (0-based): {exc}") from None
    if chw.dtype != np.uint8 or chw.ndim != 3 or chw.shape[0] != 3:
        raise SourceError(path, f"'images' must be uint8 N×3×W×H, got {chw.dtype} {(f['images'].shape)}")
    # C×W×H → H×W×C and W×H → H×W; OpenCV's blocked transpose is ~10× faster than numpy's
    # strided copy on these arrays (benchmarks/bench_sources.py)
    rgb = cv2.merge([cv2.transpose(chw[c]) for c in range(3)])
    depth = cv2.transpose(np.asarray(wh, np.float32))
    where = f"{path}[{depth_name}][{i}]"
    check_same_size(rgb, depth, path, where)
    depth = check_depth_values(depth, where)
    extra = {"mat_index": i + 1}
    for key, names in src._scene_names(f).items():
        extra[key] = names[i]
    return rgb, depth, kinect_intrinsics(*rgb.shape[:2]), extra


def _dd_found(src: NyuV2Source) -> bool:
    root = src.root
    return (root.endswith(".zip") or os.path.isfile(os.path.join(root, DENSEDEPTH_ZIP))
            or any(os.path.isfile(os.path.join(root, "data", f"nyu2_{s}.csv")) for s in ("train", "test")))


def _dd_splits(src: NyuV2Source) -> list[str]:
    names = src._dd_names()
    return [s for s in ("train", "test") if f"data/nyu2_{s}.csv" in names]


def _dd_items(src: NyuV2Source, split: str) -> list[SourceItem]:
    rel = f"data/nyu2_{split}.csv"
    data, name = src._dd_read(rel)
    items = []
    for no, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        # a malformed line is reported when that item is loaded, not for the whole split
        rgb, depth = (parts + [""])[:2] if len(parts) <= 2 else ("", "")
        key = os.path.splitext(rgb)[0].removeprefix(f"data/nyu2_{split}/") if rgb else f"line{no:06d}"
        uri = f"{name.rsplit('!', 1)[0]}!{rgb}" if "!" in name else os.path.join(src.root, rgb)
        items.append(SourceItem(key=key, uri=uri, locator={"rgb": rgb, "depth": depth, "csv": name,
                                                             "line": no, "fields": len(parts)}))
    return items


def _dd_load(src: NyuV2Source, split: str, item: SourceItem) -> _Loaded:
    loc = item.locator
    if loc["fields"] != 2 or not loc["rgb"] or not loc["depth"]:
        raise SourceError(f"{loc['csv']}:{loc['line']}",
                          f"expected 2 comma-separated fields 'rgb_path,depth_path', got {loc['fields']}")
    rgb_bytes, rgb_name = src._dd_read(loc["rgb"])
    d_bytes, d_name = src._dd_read(loc["depth"])
    rgb = decode_rgb(rgb_bytes, rgb_name, exif=False)
    if split == "train":
        depth = decode_depth_png(d_bytes, d_name, np.uint8, DEPTH8_METRES_PER_UNIT,
                                 "DenseDepth train depth PNG, 0–255 = 0–10 m")
    else:
        depth = decode_depth_png(d_bytes, d_name, np.uint16, DEPTH16_METRES_PER_UNIT,
                                 "DenseDepth test depth PNG in millimetres")
    check_same_size(rgb, depth, rgb_name, d_name)
    extra = {}
    parent = os.path.basename(os.path.dirname(loc["rgb"]))
    if parent.endswith("_out"):
        extra = {"scene": parent[:-4], "scene_type": scene_type(parent[:-4])}
    return rgb, depth, kinect_intrinsics(*rgb.shape[:2]), extra


def _folders_found(src: NyuV2Source) -> bool:
    root = src.root
    return os.path.isdir(root) and any(d.endswith("_out") and os.path.isdir(os.path.join(root, d))
                                       for d in os.listdir(root))


def _folders_items(src: NyuV2Source, split: str) -> list[SourceItem]:
    items = []
    for scene_dir in sorted(d for d in os.listdir(src.root) if d.endswith("_out")):
        folder = os.path.join(src.root, scene_dir)
        stems = [f[:-4] for f in os.listdir(folder) if f.endswith(".jpg")]
        for stem in sorted(stems, key=lambda s: (len(s), s)):
            rgb = os.path.join(scene_dir, f"{stem}.jpg")
            items.append(SourceItem(key=f"{scene_dir}/{stem}", uri=os.path.join(src.root, rgb),
                                    locator={"rgb": rgb, "depth": os.path.join(scene_dir, f"{stem}.png")}))
    return items


def _folders_load(src: NyuV2Source, split: str, item: SourceItem) -> _Loaded:
    rgb_path = os.path.join(src.root, item.locator["rgb"])
    d_path = os.path.join(src.root, item.locator["depth"])
    rgb = decode_rgb(read_bytes(rgb_path), rgb_path, exif=False)
    depth = read_depth_png(d_path, np.uint8, DEPTH8_METRES_PER_UNIT, "8-bit depth PNG, 0–255 = 0–10 m")
    check_same_size(rgb, depth, rgb_path, d_path)
    scene = os.path.dirname(item.locator["rgb"])[:-4]
    return (rgb, depth, kinect_intrinsics(*rgb.shape[:2]),
            {"scene": scene, "scene_type": scene_type(scene)})


def _bts_found(src: NyuV2Source) -> bool:
    return os.path.isdir(os.path.join(src.root, "sync"))


def _bts_splits(src: NyuV2Source) -> list[str]:
    return sorted(src.options.file_lists) or ["train"]


def _bts_items(src: NyuV2Source, split: str) -> list[SourceItem]:
    lists = src.options.file_lists
    data_dir = os.path.join(src.root, src.options.data_dirs.get(split, "sync"))
    if not lists:
        items = []
        for scene in sorted(os.listdir(data_dir)):
            folder = os.path.join(data_dir, scene)
            if not os.path.isdir(folder):
                continue
            for f in sorted(os.listdir(folder)):
                if f.startswith("rgb_") and f.endswith(".jpg"):
                    num = f[4:-4]
                    items.append(_bts_item(data_dir, f"{scene}/{f}", f"{scene}/sync_depth_{num}.png", None))
        return items
    list_path = os.path.join(src.root, lists[split])
    items = []
    for no, line in enumerate(read_bytes(list_path).decode("utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rgb = parts[0].lstrip("/")
        depth = parts[1].lstrip("/") if len(parts) > 1 else ""
        focal = parts[2] if len(parts) > 2 else None
        items.append(_bts_item(data_dir, rgb, depth, focal, f"{list_path}:{no}"))
    return items


def _bts_item(data_dir: str, rgb: str, depth: str, focal: str | None, where: str = "") -> SourceItem:
    return SourceItem(key=os.path.splitext(rgb)[0], uri=os.path.join(data_dir, rgb),
                      locator={"rgb": os.path.join(data_dir, rgb),
                               "depth": os.path.join(data_dir, depth) if depth else "",
                               "focal": focal, "where": where})


def _bts_load(src: NyuV2Source, split: str, item: SourceItem) -> _Loaded:
    loc = item.locator
    if not loc["depth"]:
        raise SourceError(loc["where"] or item.uri, "file list line lacks the depth path ('rgb depth focal')")
    rgb = decode_rgb(read_bytes(loc["rgb"]), loc["rgb"], exif=False)
    depth = read_depth_png(loc["depth"], np.uint16, DEPTH16_METRES_PER_UNIT, "16-bit depth PNG in millimetres")
    check_same_size(rgb, depth, loc["rgb"], loc["depth"])
    intr = kinect_intrinsics(*rgb.shape[:2])
    if loc["focal"] is not None:
        try:
            focal = float(loc["focal"])
        except ValueError:
            raise SourceError(loc["where"], f"focal {loc['focal']!r} is not a number") from None
        intr = Intrinsics(fx=focal, fy=focal, cx=intr.cx, cy=intr.cy)
    scene = item.key.split("/")[0]
    return rgb, depth, intr, {"scene": scene, "scene_type": scene_type(scene)}


@dataclass(frozen=True)
class _Layout:
    found: Callable[[NyuV2Source], bool]
    splits: Callable[[NyuV2Source], list[str]]
    items: Callable[[NyuV2Source, str], list[SourceItem]]
    load: Callable[[NyuV2Source, str, SourceItem], _Loaded]


#: Every layout under its ``options.layout`` name (``auto`` tries them in this order); a new
#: layout is one entry here.
LAYOUTS: dict[str, _Layout] = {
    "labeled_mat": _Layout(_mat_found, _mat_splits, _mat_items, _mat_load),
    "densedepth": _Layout(_dd_found, _dd_splits, _dd_items, _dd_load),
    "scene_folders": _Layout(_folders_found, lambda src: ["train"], _folders_items, _folders_load),
    "bts": _Layout(_bts_found, _bts_splits, _bts_items, _bts_load),
}
#: the ``layout`` option's values (``depthdata sources list`` shows them)
Layout = Literal[("auto", *LAYOUTS)]


class NyuOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: which layout the root holds; ``auto`` detects it when exactly one matches
    layout: Layout = "auto"
    #: labeled_mat: file name of the labeled .mat inside the root (or the root itself is the file)
    mat_file: str = LABELED_MAT
    #: labeled_mat: file name of the official split file inside the root
    splits_file: str = SPLITS_MAT
    #: labeled_mat: use ``rawDepths`` (holes as 0 → NaN) instead of the filled ``depths``
    raw_depth: bool = False
    #: bts: split → file list (relative to the root), lines ``rgb depth focal``
    file_lists: dict[str, str] = {}
    #: bts: split → folder (relative to the root) the list's paths are relative to
    data_dirs: dict[str, str] = {}


@register
class NyuV2Source(Source):
    kind = "nyuv2"
    Options = NyuOptions
    fields = ("depth",)

    def __init__(self, name, config, root):
        super().__init__(name, config, root)
        self._layout: str | None = None
        self._h5: h5py.File | None = None
        self._zip: zipfile.ZipFile | None = None
        #: scene name/type per 0-based index, read once (each is an HDF5 reference to follow)
        self._scenes: dict[str, list[str]] | None = None

    def __getstate__(self):
        # open file handles stay behind when the source travels to a worker
        state = dict(self.__dict__)
        state["_h5"] = state["_zip"] = state["_scenes"] = None
        return state

    # -- layout ---------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        if self._layout is None:
            self._layout = self._detect() if self.options.layout == "auto" else self.options.layout
        return self._layout

    def _detect(self) -> str:
        found = [name for name, layout in LAYOUTS.items() if layout.found(self)]
        if len(found) != 1:
            what = "none of the known layouts" if not found else f"several layouts ({', '.join(found)})"
            raise SourceError(self.root, f"cannot detect the NYU layout: found {what}; set options.layout to one of "
                              f"{', '.join(LAYOUTS)}")
        log.info("dataset %s: detected NYU layout %r under %s", self.name, found[0], self.root)
        return found[0]

    # -- listing and loading --------------------------------------------------------------
    def splits(self) -> list[str]:
        return LAYOUTS[self.layout].splits(self)

    def items(self, split: str) -> list[SourceItem]:
        if split not in self.splits():
            raise SourceError(self.root, f"unknown split {split!r}; found {', '.join(self.splits())}")
        items = LAYOUTS[self.layout].items(self, split)
        if not items:
            raise SourceError(self.root, f"split {split!r} has no samples ({self.layout} layout)")
        return items

    def load(self, split: str, item: SourceItem) -> Sample:
        rgb, depth, intr, extra = LAYOUTS[self.layout].load(self, split, item)
        meta = {"dataset": self.name, "split": split, "source_uri": item.uri, "layout": self.layout,
                "original_size": [int(rgb.shape[0]), int(rgb.shape[1])], **extra}
        return Sample(make_sample_id(self.name, split, item.key), rgb, depth=depth, intrinsics=intr, meta=meta)

    def item_files(self, item: SourceItem) -> list[str]:
        loc = item.locator
        if "!" in item.uri or not ("rgb" in loc and "depth" in loc):  # a zip member; a .mat record
            return super().item_files(item)
        return [os.path.join(self.root, p) for p in (loc["rgb"], loc["depth"]) if p]

    # -- paths and open files of the layouts (opened once per process) ---------------------
    def _mat_path(self) -> str:
        return self.root if os.path.isfile(self.root) else os.path.join(self.root, self.options.mat_file)

    def _splits_path(self) -> str:
        base = os.path.dirname(self.root) if os.path.isfile(self.root) else self.root
        return os.path.join(base, self.options.splits_file)

    def _h5file(self) -> h5py.File:
        if self._h5 is None:
            path = self._mat_path()
            if not os.path.isfile(path):
                raise SourceError(path, "labeled .mat file not found")
            try:
                self._h5 = h5py.File(path, "r")
            except OSError as exc:
                raise SourceError(path, f"not a MATLAB v7.3 (HDF5) file: {exc}") from None
        return self._h5

    def _dd_names(self) -> set[str]:
        if self._dd_zip_path():
            return set(self._zipfile().namelist())
        return {f"data/nyu2_{s}.csv" for s in ("train", "test")
                if os.path.isfile(os.path.join(self.root, "data", f"nyu2_{s}.csv"))}

    def _dd_zip_path(self) -> str | None:
        if self.root.endswith(".zip") and os.path.isfile(self.root):
            return self.root
        p = os.path.join(self.root, DENSEDEPTH_ZIP)
        return p if os.path.isfile(p) else None

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None:
            path = self._dd_zip_path()
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise SourceError(path, f"not a valid zip file: {exc}") from None
        return self._zip

    def _dd_read(self, rel: str) -> tuple[bytes, str]:
        """Bytes of a DenseDepth member (zip or unpacked) and the name used in errors."""
        zpath = self._dd_zip_path()
        if zpath:
            name = f"{zpath}!{rel}"
            try:
                data = self._zipfile().read(rel)
            except KeyError:
                raise SourceError(name, "file not found in the zip") from None
            if not data:
                raise SourceError(name, "file is empty (0 bytes)")
            return data, name
        path = os.path.join(self.root, rel)
        return read_bytes(path), path

    def _scene_names(self, f: h5py.File) -> dict[str, list[str]]:
        if self._scenes is None:
            self._scenes = {}
            for key, name in (("scene", "scenes"), ("scene_type", "sceneTypes")):
                if name in f:
                    ds = f[name]
                    n = max(ds.shape)
                    self._scenes[key] = [_mat_string(f, _ref_at(ds, i)) for i in range(n)]
        return self._scenes
