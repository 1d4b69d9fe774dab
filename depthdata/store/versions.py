"""Committed versions of a store: what a reader sees, and what a training run can pin.

A build writes shards, manifest parts and plan segments as it goes; none of that is visible to
readers until the build commits a version: ``_versions/v000007.json``, written once, atomically,
after every stage of the build finished. It names, per group, how many plan segments it saw and
the consolidated manifest file of each stage (:mod:`depthdata.store.consolidated`) — exactly
the rows a reader serves — plus what the build added and removed, the catalog's hash, the
package version and the time. This is the Delta Lake / Iceberg pattern: a version is a
committed manifest snapshot, and the data files it names are never rewritten by appends.

A reader opens the newest version (one listing and one small read, instead of one listing per
group and stage) or a pinned one. A killed build commits nothing, so readers keep the previous
version; its next run finishes the work and commits. Consolidated files a committed version
names are never pruned by later builds.

What a version does *not* freeze: a stage re-run with other settings (new teacher weights)
rewrites that stage's fields of existing shards in place (Zarr has no copy-on-write), so an
older version then reads the new values; its manifest rows (and checksums) stay the old ones,
and ``depthdata verify`` reports the difference.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from depthdata.errors import StoreError
from depthdata.store import manifest as mf

VERSIONS_DIR = "_versions"
VERSION_RE = re.compile(r"^v(\d{6,})\.json$")


def version_name(number: int) -> str:
    return f"v{number:06d}.json"


def _doc(text: str, **kw: Any) -> Any:
    """A dataclass field documented once: the reference docs are generated from ``metadata["doc"]``."""
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class GroupVersion:
    """One group as a version saw it."""

    segments: int = _doc("plan segments included (`_plan-000000` … `_plan-<segments-1>`)")
    samples: int = _doc("live samples: added and not removed")
    added: int = _doc("samples added since the previous version (new or changed at the source)", default=0)
    removed: int = _doc("slots tombstoned since the previous version (removed or changed at the source)", default=0)
    stages: dict[str, str] = _doc("stage → its consolidated manifest file in `_manifest/<group>/<stage>/`: exactly "
                                  "the rows readers of this version serve", default_factory=dict)
    plan_checkpoint: bool = _doc("`_plan-upto-<segments>.parquet` holds all those segments in one file, and "
                                 "readers of this version read it instead of each segment (written at commit "
                                 "when there are two segments or more)", default=False)


@dataclass(frozen=True)
class Version:
    """One committed version (the JSON file, as a dataclass)."""

    number: int = _doc("1, 2, …: the `N` readers pin with `version=N`")
    committed: str = _doc("when it was committed, UTC, ISO 8601")
    kind: str = _doc("what committed it: `build` (a Prefect build), `run` (a stage run from the CLI), `compact` "
                     "(`depthdata compact --drop-removed`)")
    package_version: str = _doc("the depthdata version that committed it")
    catalog_hash: str | None = _doc("hash of the catalog the build ran (null for commits without one)")
    groups: dict[str, GroupVersion] = _doc("`dataset/split` → the group as this version has it (below)")
    parent: int | None = _doc("the version this one follows (null for the first)", default=None)
    expires_before: int | None = _doc("versions older than this one can no longer be read: a compaction "
                                      "deleted shards they name (null: every version is readable)", default=None)

    @property
    def added(self) -> int:
        return sum(g.added for g in self.groups.values())

    @property
    def removed(self) -> int:
        return sum(g.removed for g in self.groups.values())

    @property
    def samples(self) -> int:
        return sum(g.samples for g in self.groups.values())

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content (without its ``checksum``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Version":
        groups = {p: GroupVersion(**g) for p, g in d["groups"].items()}
        return cls(**{**d, "groups": groups})


def versions_dir(fs_root: str) -> str:
    return f"{fs_root}/{VERSIONS_DIR}"


def numbers(fs: fsspec.AbstractFileSystem, fs_root: str) -> list[int]:
    """Committed version numbers, ascending (one listing)."""
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(versions_dir(fs_root), detail=False, refresh=True)]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := VERSION_RE.match(n)))


def read(fs: fsspec.AbstractFileSystem, fs_root: str, number: int, url: str = "") -> Version:
    """Version ``number``; :class:`StoreError` naming the file when it is missing or unreadable."""
    path = f"{versions_dir(fs_root)}/{version_name(number)}"
    try:
        raw = json.loads(mf.read_bytes(fs, path))
        body = {k: v for k, v in raw.items() if k != "checksum"}
        if raw.get("checksum") != mf.config_hash(body):
            raise ValueError("its content does not match its checksum: altered after it was committed")
        return Version.from_dict(body)
    except FileNotFoundError:
        have = numbers(fs, fs_root)
        raise StoreError(f"{url or fs_root}: no version {number} (versions: "
                         f"{', '.join(map(str, have)) or 'none committed yet'})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: unreadable version file ({type(exc).__name__}: {exc})") from None


def history(fs: fsspec.AbstractFileSystem, fs_root: str, url: str = "") -> list[Version]:
    """Every committed version, oldest first."""
    return [read(fs, fs_root, n, url) for n in numbers(fs, fs_root)]


def write(fs: fsspec.AbstractFileSystem, fs_root: str, version: Version) -> str:
    """Commit ``version``: refuse a number already taken (the build lock makes that a bug, not a
    race), then write the file atomically."""
    path = f"{versions_dir(fs_root)}/{version_name(version.number)}"
    if fs.exists(path):
        raise StoreError(f"{path}: version {version.number} is already committed")
    body = version.to_dict()
    # sealed like the store's root metadata: verify tells an altered version file from a good one
    body["checksum"] = mf.config_hash(body)
    mf.atomic_write(fs, path, json.dumps(body, indent=1, sort_keys=True).encode())
    return path


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
