"""One stored sample (numpy rows of each field) → a dict of tensors, the shape trainers collate.

Output per field (``H×W`` is the group's resolution):

* ``rgb``: ``uint8`` ``3×H×W`` (RGB order), or ``float32`` in ``[0, 1]`` with ``rgb_float``.
* ``depth`` (metres), ``sparse`` (metres), ``teacher`` (relative disparity in ``[0, 1]``, larger =
  nearer), ``teacher_conf``: ``float32`` ``1×H×W``. Invalid pixels read ``0`` — never NaN, so
  losses cannot be poisoned — and ``<field>_valid`` (``bool`` ``1×H×W``) says which are valid:
  depth finite and > 0, sparse > 0 (0 = no return), teacher finite. ``teacher_conf`` has no mask.
* ``pairs``: ``float32`` ``P×5`` ``(y_a, x_a, y_b, x_b, order)``, 0-based pixels, with NaN rows as
  padding after the real ones, and ``pairs_valid`` (``bool`` ``P``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SPATIAL_MASKS = {
    "depth": lambda a: np.isfinite(a) & (a > 0),
    "sparse": lambda a: np.isfinite(a) & (a > 0),
    "teacher": np.isfinite,
}


def decode(row: dict[str, np.ndarray], rgb_float: bool = False) -> dict[str, Any]:
    """Tensors of one sample from its per-field numpy rows. Every tensor is a new copy: the rows
    may be views into a shard buffer that the reader recycles."""
    out: dict[str, Any] = {}
    for name, a in row.items():
        if name == "rgb":
            t = torch.from_numpy(a.transpose(2, 0, 1).copy())
            out[name] = t.float().div_(255.0) if rgb_float else t
        elif name == "pairs":
            pairs = np.array(a, dtype=np.float32)
            out["pairs"] = torch.from_numpy(pairs)
            out["pairs_valid"] = torch.from_numpy(np.isfinite(pairs).all(axis=1))
        else:
            clean = np.array(a, dtype=np.float32)
            valid = SPATIAL_MASKS.get(name, np.isfinite)(clean)
            np.copyto(clean, np.float32(0), where=~valid)
            out[name] = torch.from_numpy(clean[None])
            if name in SPATIAL_MASKS:
                out[f"{name}_valid"] = torch.from_numpy(valid[None])
    return out
