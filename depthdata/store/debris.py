"""Temporary files a killed writer leaves in a local store, and their removal.

zarr's ``LocalStore`` writes every file (a chunk, a ``zarr.json``) as ``<stem>.<uuid4
hex>.partial`` beside it and renames it into place. A writer killed between the two (SIGKILL,
OOM, a lost node) leaves that temporary file behind: it is never read (zarr only reads final
names), so nothing breaks, but it holds disk space and looks like data. Object stores write a
whole object or nothing, so only local stores gather such debris.

A build removes it when it took the build lock over from a dead build (:mod:`.lock`), once its
own work is done: only files older than the moment it took the lock, which no live writer can
still be renaming (one lock holder writes a store at a time).
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from depthdata.store.lock import BuildLock

log = logging.getLogger(__name__)

#: zarr's temporary name: ``Path.with_suffix(f".{uuid4().hex}.partial")`` of the final name
PARTIAL_RE = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_partial_writes(root: str, before: float) -> list[str]:
    """Remove zarr's temporary files under the local folder ``root`` last modified before
    ``before`` (seconds since the epoch); returns their paths relative to ``root``, sorted.

    Files named otherwise, and newer ones, are left alone; a file that cannot be removed is
    logged and kept (debris is never worth failing a build over)."""
    removed = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not PARTIAL_RE.search(name):
                continue
            path = os.path.join(folder, name)
            try:
                if os.stat(path).st_mtime >= before:
                    continue
                os.unlink(path)
            except FileNotFoundError:  # gone meanwhile: nothing to remove
                continue
            except OSError as exc:
                log.warning("%s: could not remove a killed writer's temporary file: %s", path, exc)
                continue
            removed.append(os.path.relpath(path, root))
    return sorted(removed)


def clean_after_takeover(lock: BuildLock) -> list[str]:
    """What :func:`remove_partial_writes` removed from the store ``lock`` holds, when the lock
    was taken over from a dead build (:attr:`BuildLock.taken_over`) and the store is on the local
    disk; nothing otherwise. Files older than this holder are the dead build's (one holder at a
    time); newer ones may be a live writer's and are kept."""
    from fsspec.implementations.local import LocalFileSystem

    if not lock.taken_over or not isinstance(lock.fs, LocalFileSystem):
        return []
    return remove_partial_writes(lock.root, before=float(lock.holder["started"]))
