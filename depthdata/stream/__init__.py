"""Streaming a depthdata store into PyTorch: shuffled, split across ranks and DataLoader
workers, resumable mid-epoch, with depth-aware augmentations (README: "Streaming shards")."""

from depthdata.stream.augment import ColorJitter, Compose, RandomCrop, RandomHFlip, crop, hflip
from depthdata.stream.cache import CacheConfig
from depthdata.stream.dataset import ShardDataset, ShardMapDataset
from depthdata.stream.loader import ResumableLoader

__all__ = ["CacheConfig", "ColorJitter", "Compose", "RandomCrop", "RandomHFlip", "ResumableLoader",
           "ShardDataset", "ShardMapDataset", "crop", "hflip"]
