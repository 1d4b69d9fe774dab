"""The build lock: one build writes a store at a time.

Zarr has no locking, and two builds of one store would race on array creation and redo each
other's shards (issue #15). A build therefore holds ``_build.lock`` at the store's root: a small
JSON file created *exclusively* (``O_EXCL`` locally, a conditional ``If-None-Match: *`` PUT on
S3), naming its holder (host, pid, command, start time) and renewed by a heartbeat thread. A
second build is refused with a message naming the holder. A lock left by a killed build does not
block forever: it is taken over once its heartbeat is older than ``ttl_s``, or at once when its
holder ran on this host and that process is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import fsspec

from depthdata.errors import StoreError

log = logging.getLogger(__name__)

LOCK_FILE = "_build.lock"
#: a lock whose heartbeat is older than this (seconds) belongs to a dead build
TTL_S = 120.0
#: how often a holder renews its heartbeat (seconds)
HEARTBEAT_S = 20.0


class StoreLocked(StoreError):
    """Another build holds the store."""


def _now() -> float:
    return time.time()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class BuildLock:
    """``with BuildLock(fs, root, url): ...`` holds the store at ``root`` (in ``fs``) meanwhile."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str, ttl_s: float = TTL_S,
                 heartbeat_s: float = HEARTBEAT_S):
        self.fs, self.root, self.path, self.url = fs, root, f"{root}/{LOCK_FILE}", url
        #: why the lock was taken over from another build ("" when it was free): that build died,
        #: and may have left temporary files behind (:mod:`.debris`)
        self.taken_over = ""
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.token = uuid.uuid4().hex
        self.holder = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                       "command": " ".join(sys.argv)[:200], "started": _now()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquiring -------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLocked` naming the build that holds it."""
        if self._create():
            return self._start()
        current = self._read()
        if current and current.get("token") == self.token:
            # a retried acquire whose first PUT landed although its answer was lost (an outage):
            # the lock is already ours
            return self._start()
        why = self._stale(current)
        if not why:
            raise StoreLocked(self._describe(current))
        log.warning("%s: taking over the build lock of %s (%s)", self.url, self._who(current), why)
        # set before the takeover's writes: a retried acquire whose first PUT landed returns early
        self.taken_over = f"{self._who(current)}: {why}"
        self._remove_if(current)
        if not self._create():  # another build took it over first
            raise StoreLocked(self._describe(self._read()))
        self._start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self._read()
        if current is not None and current.get("token") == self.token:
            self._remove_if(current)

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- internals -------------------------------------------------------------------------
    def _payload(self) -> bytes:
        return json.dumps({**self.holder, "heartbeat": _now()}).encode()

    def _create(self) -> bool:
        """Create the lock file exclusively; ``False`` when it exists."""
        try:
            self.fs.pipe_file(self.path, self._payload(), mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # S3's refused conditional PUT arrives as a generic OSError
            if "PreconditionFailed" in str(exc) or "412" in str(exc) or self.fs.exists(self.path):
                return False
            raise

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or corrupt lock file holds nobody
            return {}

    def _stale(self, lock: dict[str, Any] | None) -> str:
        """Why ``lock`` no longer holds the store ("" when it does)."""
        if lock is None:
            return "it was released"
        if not lock.get("token"):
            return "the lock file is unreadable"
        age = _now() - float(lock.get("heartbeat", 0))
        if age > self.ttl_s:
            return f"no heartbeat for {age:.0f} s (more than {self.ttl_s:.0f} s)"
        if lock.get("host") == socket.gethostname() and not _alive(int(lock.get("pid", 0))):
            return f"process {lock.get('pid')} on this host is gone"
        return ""

    def _remove_if(self, lock: dict[str, Any] | None) -> None:
        current = self._read()
        if current == lock:
            with contextlib.suppress(FileNotFoundError):  # gone already: nothing to remove
                self.fs.rm_file(self.path)

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():  # a retried acquire: beating already
            return
        self._thread = threading.Thread(target=self._beat, name="depthdata-build-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            # Reading the lock fails like renewing it during a storage outage: either way the
            # beat is missed and tried again at the next one. An exception escaping here would
            # end the thread (with a traceback on stderr) and the lock would expire under a
            # build that is still running (issue #15).
            try:
                current = self._read()
                if current is None or current.get("token") != self.token:
                    log.error("%s: the build lock was taken over by %s; another build may now write this store",
                              self.url, self._who(current))
                    return
                self.fs.pipe_file(self.path, self._payload())
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                log.warning("%s: could not renew the build lock: %s: %s", self.url, type(exc).__name__, exc)

    @staticmethod
    def _who(lock: dict[str, Any] | None) -> str:
        if not lock:
            return "an unknown build"
        return f"pid {lock.get('pid')} on {lock.get('host')} ({lock.get('command', '')!r})"

    def _describe(self, lock: dict[str, Any] | None) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float((lock or {}).get("started", 0))))
        heard = _now() - float((lock or {}).get("heartbeat", 0))
        return (f"{self.url}: another build is writing this store: {self._who(lock)}, started {started}, last "
                f"heartbeat {heard:.0f} s ago. Wait for it to finish; if it died, its lock ({self.path}) expires "
                f"{max(0.0, self.ttl_s - heard):.0f} s from now")
