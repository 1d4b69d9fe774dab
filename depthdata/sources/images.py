"""Unlabeled image sets (``kind: images``): folders, globs or a list file; no depth.

JPEG, PNG and WebP are recognised by content; EXIF orientation is honoured (option
``exif_orientation``), grayscale is replicated to RGB and transparency is composited over
black. The item key is the file's path relative to the dataset root (extension kept, so
``a.jpg`` and ``a.png`` stay distinct). A link named like an image whose target is gone is
listed, and quarantined as not found, rather than left out.
"""

from __future__ import annotations

import glob
import os

from pydantic import BaseModel, ConfigDict

from depthdata.errors import SourceError
from depthdata.sample import Sample, make_sample_id
from depthdata.sources.files import IMAGE_EXTENSIONS, is_image_name, read_rgb
from depthdata.sources.registry import Source, SourceItem, register


class ImagesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: split name the images are filed under
    split: str = "train"
    #: glob patterns relative to the root (e.g. ``["**/*.jpg"]``); default: every image file
    #: under the root (recursively)
    patterns: list[str] | None = None
    #: a text file (relative to the root) listing one image path per line, relative to the
    #: root; ``#`` comments and blank lines are skipped. Overrides ``patterns``.
    list_file: str | None = None
    #: honour the EXIF orientation tag (rotate/flip as a viewer would)
    exif_orientation: bool = True


@register
class ImagesSource(Source):
    kind = "images"
    Options = ImagesOptions
    fields = ()

    def splits(self) -> list[str]:
        return [self.options.split]

    def _paths(self) -> list[str]:
        opts = self.options
        if not os.path.isdir(self.root):
            raise SourceError(self.root, "image root folder not found")
        if opts.list_file:
            list_path = os.path.join(self.root, opts.list_file)
            try:
                with open(list_path, encoding="utf-8") as fh:
                    lines = [ln.strip() for ln in fh]
            except FileNotFoundError:
                raise SourceError(list_path, "list file not found") from None
            return [os.path.normpath(ln) for ln in lines if ln and not ln.startswith("#")]
        patterns = opts.patterns or ["**/*"]
        found = set()
        for pat in patterns:
            for p in glob.glob(pat, root_dir=self.root, recursive=True):
                full = os.path.join(self.root, p)
                # files, and links named like images whose target is gone: those are samples the
                # user meant to have, so their read fails and quarantines them, naming the file,
                # instead of leaving them out unsaid (folders and other non-files are no samples)
                if is_image_name(p) and (os.path.isfile(full) or (os.path.islink(full) and not os.path.exists(full))):
                    found.add(os.path.normpath(p))
        return sorted(found)

    def items(self, split: str) -> list[SourceItem]:
        if split != self.options.split:
            raise SourceError(self.root, f"unknown split {split!r}; this image set has {self.options.split!r}")
        paths = self._paths()
        if not paths:
            how = f"listed in {self.options.list_file}" if self.options.list_file else \
                f"matching {self.options.patterns or ['**/*']} with extensions {', '.join(IMAGE_EXTENSIONS)}"
            raise SourceError(self.root, f"no images found ({how})")
        return [SourceItem(key=p.replace(os.sep, "/"), uri=os.path.join(self.root, p)) for p in paths]

    def load(self, split: str, item: SourceItem) -> Sample:
        rgb = read_rgb(item.uri, exif=self.options.exif_orientation)
        meta = {"dataset": self.name, "split": split, "source_uri": item.uri,
                "original_size": [int(rgb.shape[0]), int(rgb.shape[1])]}
        return Sample(make_sample_id(self.name, split, item.key), rgb, meta=meta)
