"""The epoch plan: which sample each rank, stream and DataLoader worker serves, in what order.

Everything here is a pure function of plain data (shard descriptions, seed, epoch, sizes), so
every process — each rank, each DataLoader worker, a resumed job — computes the same plan
without talking to the others.

Design (the "canonical streams" idea of MosaicML's StreamingDataset): an epoch's samples are
dealt, as whole shards, to ``world_size × streams`` *streams* of exactly equal length. A rank
delivers its ``streams`` streams interleaved batch by batch (stream 0's first batch, stream 1's
first batch, ...). DataLoader workers each take every ``num_workers``-th stream; because the
DataLoader itself takes batches from its workers round-robin, the delivered order is the same
whatever the number of workers (any divisor of ``streams``). A stream reads whole shards, so
each shard is fetched by one process only.

An *item* is a row ``(group, index)``: the group's position in the dataset's group list and the
0-based sample index in that group.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from depthdata.errors import DepthdataError

TAILS = ("drop", "pad")


@dataclass(frozen=True)
class ShardRef:
    """A servable shard: group position, shard number, and its servable sample indices (0-based)."""

    group: int
    shard: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: ``streams[v]`` is an ``(L, 2)`` int64 array of items, all the same ``L``."""

    streams: tuple[np.ndarray, ...]
    batch_size: int
    dropped: int
    padded: int

    def __len__(self) -> int:
        return sum(len(s) for s in self.streams)


def group_quotas(sizes: Sequence[int], weights: Sequence[float] | None, total: int | None) -> list[int]:
    """Samples each group contributes to an epoch.

    Without weights every servable sample is used once (``total`` must then be ``None``).
    With weights, ``total`` (default: all servable samples) is split in proportion to them by
    the largest-remainder method, so the quotas sum to exactly ``total``.
    """
    if weights is None:
        if total is not None and total != sum(sizes):
            raise DepthdataError("samples_per_epoch needs group weights (without them an epoch is every sample once)")
        return list(sizes)
    if len(weights) != len(sizes):
        raise DepthdataError(f"{len(weights)} weights for {len(sizes)} groups")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise DepthdataError(f"group weights must be finite, non-negative and not all zero, got {list(weights)}")
    for size, weight in zip(sizes, w):
        if weight > 0 and size == 0:
            raise DepthdataError("a group with a positive weight has no servable samples")
    n = sum(sizes) if total is None else int(total)
    exact = w / w.sum() * n
    quotas = np.floor(exact).astype(np.int64)
    # largest remainder; ties go to the earlier group so the result is deterministic
    order = sorted(range(len(w)), key=lambda g: (-(exact[g] - quotas[g]), g))
    for g in order[: n - int(quotas.sum())]:
        quotas[g] += 1
    return [int(q) for q in quotas]


def _units(shards: Sequence[ShardRef], quotas: Sequence[int], shuffle: bool,
           rng: np.random.Generator) -> list[np.ndarray]:
    """Shard visits of the epoch, each an ``(n, 2)`` item array; a group cycles its shards as its
    quota needs (weights larger than its share) and stops mid-shard when the quota is met."""
    by_group: dict[int, list[ShardRef]] = {}
    for ref in shards:
        if ref.indices:
            by_group.setdefault(ref.group, []).append(ref)
    units: list[np.ndarray] = []
    for g in sorted(by_group):
        refs = by_group[g]
        need = quotas[g]
        while need > 0:
            order = rng.permutation(len(refs)) if shuffle else range(len(refs))
            for j in order:
                idx = np.asarray(refs[j].indices, dtype=np.int64)
                if shuffle:
                    idx = rng.permutation(idx)
                idx = idx[:need]
                units.append(np.stack([np.full(len(idx), g, np.int64), idx], axis=1))
                need -= len(idx)
                if need == 0:
                    break
    if shuffle:
        units = [units[j] for j in rng.permutation(len(units))]
    return units


def _deal(units: list[np.ndarray], n_streams: int) -> list[list[np.ndarray]]:
    """Whole shard visits to streams, each to the stream with the fewest samples so far."""
    streams: list[list[np.ndarray]] = [[] for _ in range(n_streams)]
    heap = [(0, t) for t in range(n_streams)]
    for unit in units:
        size, t = heapq.heappop(heap)
        streams[t].append(unit)
        heapq.heappush(heap, (size + len(unit), t))
    return streams


def _windows(units: list[np.ndarray], window: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
    """A stream's items: its shard visits pooled ``window`` at a time and shuffled within each pool."""
    parts = []
    for start in range(0, len(units), window):
        pool = np.concatenate(units[start: start + window])
        parts.append(pool[rng.permutation(len(pool))] if shuffle else pool)
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


def _equalize(streams: list[np.ndarray], batch_size: int, tail: str) -> tuple[list[np.ndarray], int, int]:
    """Make every stream exactly ``L`` items, ``L`` a multiple of ``batch_size``.

    Surplus items move from the end of long streams to the end of short ones (costing at most a
    few extra shard reads), so only the remainder of ``total / (streams × batch_size)`` is
    dropped (``tail="drop"``) or filled by repeating the epoch's first items (``tail="pad"``).
    """
    n = len(streams)
    total = sum(len(s) for s in streams)
    per_round = n * batch_size
    rounds = total // per_round if tail == "drop" else -(-total // per_round)
    length = rounds * batch_size
    surplus = [s[length:] for s in streams]
    pool = np.concatenate(surplus) if surplus else np.zeros((0, 2), np.int64)
    streams = [s[:length] for s in streams]
    out = []
    for s in streams:
        need = length - len(s)
        out.append(np.concatenate([s, pool[:need]]))
        pool = pool[need:]
    dropped = len(pool)
    padded = 0
    if tail == "pad" and total:
        source = np.concatenate(out)
        for t, s in enumerate(out):
            need = length - len(s)
            if need:
                reps = -(-need // len(source))
                out[t] = np.concatenate([s, np.tile(source, (reps, 1))[:need]])
                padded += need
    return out, dropped, padded


def plan_epoch(shards: Sequence[ShardRef], n_groups: int, *, seed: int, epoch: int, shuffle: bool,
               world_size: int, rank: int, streams: int, batch_size: int, window: int, tail: str,
               weights: Sequence[float] | None = None, samples_per_epoch: int | None = None) -> EpochPlan:
    """The epoch plan of ``rank``: shard order, within-window order, streams, tail handling.

    The randomness is drawn from ``(seed, epoch)`` only, so every process agrees. ``tail``:
    ``"drop"`` serves each sample at most once (dropping fewer than ``world_size × streams ×
    batch_size`` per epoch); ``"pad"`` serves each at least once (repeating as few).
    """
    if tail not in TAILS:
        raise DepthdataError(f"tail policy must be one of {TAILS}, got {tail!r}")
    for name, value in (("world_size", world_size), ("streams", streams), ("batch_size", batch_size),
                        ("window", window)):
        if value < 1:
            raise DepthdataError(f"{name} must be >= 1, got {value}")
    if not 0 <= rank < world_size:
        raise DepthdataError(f"rank {rank} outside 0..{world_size - 1}")
    sizes = [0] * n_groups
    for ref in shards:
        sizes[ref.group] += len(ref.indices)
    quotas = group_quotas(sizes, weights, samples_per_epoch)
    rng = np.random.default_rng([int(seed), int(epoch)])
    units = _units(shards, quotas, shuffle, rng)
    dealt = _deal(units, world_size * streams)
    items = [_windows(u, window, shuffle, rng) for u in dealt]
    items, dropped, padded = _equalize(items, batch_size, tail)
    mine = tuple(items[rank * streams: (rank + 1) * streams])
    return EpochPlan(mine, batch_size, dropped, padded)


def interleave(streams: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Items in delivery order: one batch from each stream in turn, skipping exhausted streams."""
    out = []
    pos = [0] * len(streams)
    while True:
        progressed = False
        for v, s in enumerate(streams):
            if pos[v] < len(s):
                out.append(s[pos[v]: pos[v] + batch_size])
                pos[v] += batch_size
                progressed = True
        if not progressed:
            break
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def remaining(plan: EpochPlan, delivered: int) -> list[np.ndarray]:
    """The streams still to deliver after the first ``delivered`` items, rotated so that the
    stream due next comes first (a resumed DataLoader starts again at worker 0)."""
    b = plan.batch_size
    v_count = len(plan.streams)
    if delivered % b:
        raise DepthdataError(f"resume point {delivered} is not a multiple of the batch size {b} "
                             "(count delivered samples per full batch, see ResumableLoader)")
    if not 0 <= delivered <= len(plan):
        raise DepthdataError(f"resume point {delivered} outside this epoch's 0..{len(plan)} samples")
    batches = delivered // b
    rounds, k = divmod(batches, v_count)
    rotated = []
    for v in [*range(k, v_count), *range(k)]:
        done = (rounds + (1 if v < k else 0)) * b
        rotated.append(plan.streams[v][done:])
    return rotated


def worker_streams(streams: Sequence[np.ndarray], worker: int, num_workers: int) -> list[np.ndarray]:
    """The streams DataLoader worker ``worker`` of ``num_workers`` serves (every n-th one)."""
    if len(streams) % num_workers:
        raise DepthdataError(
            f"{num_workers} DataLoader workers cannot share {len(streams)} streams evenly; "
            f"use a number of workers that divides streams={len(streams)} (or set streams)")
    return list(streams[worker::num_workers])
