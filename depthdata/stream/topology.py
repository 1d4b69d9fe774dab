"""Where this process sits: its rank among training processes (not DataLoader workers)."""

from __future__ import annotations

import os

from depthdata.errors import DepthdataError


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else from an initialised ``torch.distributed`` process
    group, else from the ``RANK`` / ``WORLD_SIZE`` environment variables (torchrun sets them),
    else a single process ``(0, 1)``. Ranks are 0-based."""
    if (rank is None) != (world_size is None):
        raise DepthdataError("give both rank and world_size, or neither")
    if rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            try:
                rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            except ValueError:
                raise DepthdataError(f"RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} "
                                     "are not integers") from None
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise DepthdataError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return int(rank), int(world_size)
