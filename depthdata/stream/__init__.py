"""Streaming a depthdata store into PyTorch: shuffled, split across ranks and DataLoader
workers, resumable mid-epoch, with depth-aware augmentations (``docs/streaming.md``).

The names below load on first use: importing a light module of the package (the CLI imports
:mod:`.order`) must not load torch.
"""

from depthdata._lazy import lazy_exports

_EXPORTS = {
    "CacheConfig": "depthdata.stream.cache",
    "ColorJitter": "depthdata.stream.augment",
    "Compose": "depthdata.stream.augment",
    "GaussianBlur": "depthdata.stream.augment",
    "RandomCrop": "depthdata.stream.augment",
    "RandomHFlip": "depthdata.stream.augment",
    "ResumableLoader": "depthdata.stream.loader",
    "ShardDataset": "depthdata.stream.dataset",
    "ShardMapDataset": "depthdata.stream.dataset",
    "crop": "depthdata.stream.augment",
    "hflip": "depthdata.stream.augment",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
