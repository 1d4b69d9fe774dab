"""Checking a store: ``verify`` re-hashes every written shard; ``inspect`` summarises it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from depthdata.store import consolidated as cons
from depthdata.store import manifest as mf
from depthdata.store import plan as pl
from depthdata.store import versions as vs
from depthdata.store.fields import field_spec
from depthdata.store.store import WORKING, Group, Store, seal_broken


@dataclass
class Problem:
    group: str
    stage: str
    shard: int
    problem: str
    #: the file the problem is in, relative to the store's root ("" when it is not one file)
    file: str = ""

    def __str__(self) -> str:
        """``<file>: <what>``, the file relative to the store's root (the group when the problem
        is not one file's)."""
        where = f"shard {self.shard}" if self.shard >= 0 else "manifest" if self.stage else "group"
        stage = f" ({self.stage})" if self.stage else ""
        return f"{self.file or self.group}: {self.group} {where}{stage}: {self.problem}"


@dataclass
class VerifyReport:
    url: str
    shards_checked: int = 0
    samples_checked: int = 0
    #: checksum mismatches, unreadable parts, data missing behind a manifest part
    problems: list[Problem] = field(default_factory=list)
    #: shards a stage has not completed (no manifest part): an interrupted or partial build
    incomplete: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.incomplete

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "shards_checked": self.shards_checked,
                "samples_checked": self.samples_checked,
                "problems": [asdict(p) for p in self.problems], "incomplete": [asdict(p) for p in self.incomplete]}


def verify_store(url: str, storage_options: dict[str, Any] | None = None, groups: list[str] | None = None,
                 progress: bool = False) -> VerifyReport:
    """Re-read every shard that has a manifest part and compare per-sample checksums.

    A shard whose part exists but whose data is missing or altered is a *problem*; a shard with
    no part for a stage that other shards of the group have completed is *incomplete*.
    """
    # everything on disk, committed or not: a build in progress is checked too
    store = Store.open(url, storage_options=storage_options, version=WORKING)
    report = VerifyReport(url)
    if seal_broken(store.meta):
        report.problems.append(Problem("(store)", "", -1, "the store's metadata (catalog, versions) does not match "
                                                          "its checksum: altered after writing", "zarr.json"))
    paths = groups or store.group_paths()
    work = []
    opened: dict[str, Group] = {}
    for path in paths:
        group = _open_group(store, path, report)
        if group is None:
            continue
        opened[path] = group
        stages = group.stages() or ["ingest"]
        for stage in stages:
            # one listing per stage says which parts exist (not one request per shard)
            listed = {int(m.group(1)) for n in cons.list_stage(store.fs, group.stage_dir(stage))
                      if (m := cons.PART_RE.match(n))}
            live = set(group.live_shards())  # a retired shard (every sample removed) needs no part
            for k in range(group.num_shards):
                if k in live or k in listed:
                    work.append((group, stage, k, k in listed))
    iterator = work
    if progress:
        from tqdm import tqdm

        iterator = tqdm(work, desc="verify", unit="shard")
    for group, stage, k, listed in iterator:
        part = group.part_path(stage, k)
        rel = mf.part_path(group.path, stage, k)
        if not listed:
            report.incomplete.append(Problem(group.path, stage, k, "no manifest part (not written or interrupted)",
                                             rel))
            continue
        try:
            table, meta = mf.read_table(store.fs, part)
        except (OSError, pa.ArrowInvalid, ValueError) as exc:  # ValueError: a footer that is not JSON
            report.problems.append(Problem(group.path, stage, k, f"manifest part unreadable: {exc}", rel))
            continue
        report.shards_checked += 1
        footer = _footer_problem(meta, group.path, stage, k)
        if footer:
            report.problems.append(Problem(group.path, stage, k, footer, rel))
            continue
        idx = group.shard_range(k)
        if table.num_rows != len(idx):
            report.problems.append(Problem(group.path, stage, k, f"manifest part has {table.num_rows} rows, "
                                                                 f"the shard has {len(idx)} samples", rel))
            continue
        ids = table.column("sample_id").to_pylist()
        if ids != group.sample_ids[idx.start: idx.stop]:
            report.problems.append(Problem(group.path, stage, k, "manifest sample ids differ from the plan", rel))
            continue
        for name in meta.get("fields", []):
            data_file = _shard_file(group, name, k)
            try:
                data = group.array(name)[idx.start: idx.stop]
            except Exception as exc:  # noqa: BLE001 - any read failure is a finding, not a crash
                report.problems.append(Problem(group.path, stage, k, f"field {name}: data unreadable: {exc}",
                                               data_file))
                continue
            expected = table.column(f"checksum_{name}").to_pylist()
            dtype = field_spec(name).dtype
            for j, sid in enumerate(ids):
                if mf.checksum(data[j].astype(dtype, copy=False)) != expected[j]:
                    report.problems.append(Problem(group.path, stage, k,
                                                   f"field {name}: checksum mismatch for sample {sid!r} "
                                                   "(data missing or altered after the manifest was written)",
                                                   data_file))
        report.samples_checked += len(idx)
    for group in opened.values():
        for stage in group.stages():
            _check_consolidated(group, stage, report)
    _check_versions(store, report, opened)
    return report


def _check_versions(store: Store, report: VerifyReport, opened: dict[str, Group]) -> None:
    """Every committed version is readable and names plan segments and consolidated files that
    exist (a reader pinned to it would fail otherwise)."""
    for number in vs.numbers(store.fs, store.fs_root):
        rel = f"{vs.VERSIONS_DIR}/{vs.version_name(number)}"
        try:
            version = vs.read(store.fs, store.fs_root, number, store.url)
        except Exception as exc:  # noqa: BLE001 - a finding, not a crash
            report.problems.append(Problem("(store)", "", -1, f"version {number}: {exc}", rel))
            continue
        for path, gv in version.groups.items():
            group = opened.get(path)
            if group is None:
                continue  # not verified this time (--group), or reported above
            if gv.segments > group.layout.segments:
                report.problems.append(Problem(path, "", -1, f"version {number} names {gv.segments} plan segments, "
                                                             f"{group.layout.segments} exist", rel))
            for stage, name in gv.stages.items():
                if name not in cons.list_stage(store.fs, group.stage_dir(stage)):
                    report.problems.append(Problem(path, stage, -1, f"version {number} names {name}, which is gone",
                                                   rel))


def _open_group(store: Store, path: str, report: VerifyReport) -> Group | None:
    """The group with its plan read, or ``None`` with the problem reported naming the file."""
    try:
        group = store.group(path)
    except Exception as exc:  # noqa: BLE001 - JSON, Unicode, Zarr errors: a finding, not a crash
        report.problems.append(Problem(path, "", -1, f"group metadata unreadable: {type(exc).__name__}: {exc}",
                                       f"{path}/zarr.json"))
        return None
    try:
        arrays = group.array_names()
    except Exception as exc:  # noqa: BLE001 - see above
        report.problems.append(Problem(path, "", -1, f"array metadata unreadable: {type(exc).__name__}: {exc}",
                                       f"{path}/<field>/zarr.json"))
        return None
    if group.fields() != arrays:
        report.problems.append(Problem(path, "", -1, f"the group's recorded fields {group.fields()} are not its "
                                                     f"arrays {arrays}", f"{path}/zarr.json"))
    segments = pl.list_segments(store.fs, group.manifest_dir)
    for name in segments:
        rel = f"{mf.group_dir(path)}/{name}"
        try:
            _, footer = mf.read_table(store.fs, f"{group.manifest_dir}/{name}")
        except Exception as exc:  # noqa: BLE001 - see above
            report.problems.append(Problem(path, "", -1, f"plan segment unreadable: {type(exc).__name__}: {exc}", rel))
            return None
        # each segment's footer keeps a second copy of the group's plan attributes
        if {k: v for k, v in footer.items() if k not in ("group", "segment")} != group.plan:
            report.problems.append(Problem(path, "", -1, f"the group's plan attributes differ from the copy in {name}",
                                           f"{path}/zarr.json"))
    for name in pl.list_segments(store.fs, group.manifest_dir, pl.CHECKPOINT_RE):
        # a checkpoint must hold exactly its segments: pinned readers read it instead of them
        n = int(pl.CHECKPOINT_RE.match(name).group(1))
        try:
            same = [t.to_pylist() for t in pl.read_checkpoint(store.fs, group.manifest_dir, n)] == \
                [t.to_pylist() for t in pl.read_segments(store.fs, group.manifest_dir, n)]
        except Exception as exc:  # noqa: BLE001 - see above
            same, why = False, f"unreadable: {type(exc).__name__}: {exc}"
        else:
            why = f"differs from segments 0-{n - 1}"
        if not same:
            report.problems.append(Problem(path, "", -1, f"plan checkpoint {why}", f"{mf.group_dir(path)}/{name}"))
    try:
        if not segments:
            raise ValueError("no plan segment")
        plan = group.layout
        arrays_len = {name: group.array(name).shape[0] for name in arrays}
        short = {n: k for n, k in arrays_len.items() if k < plan.slots}
        if short:
            raise ValueError(f"arrays shorter than the plan's {plan.slots} slots: {short}")
    except Exception as exc:  # noqa: BLE001 - see above
        report.problems.append(Problem(path, "", -1, f"plan unreadable: {type(exc).__name__}: {exc}",
                                       f"{mf.group_dir(path)}/{segments[-1] if segments else '_plan-000000.parquet'}"))
        return None
    return group


def _shard_file(group: Group, field: str, shard: int) -> str:
    """Store-relative path of the Zarr object holding ``field`` of ``shard`` (default chunk keys)."""
    ndim = len(field_spec(field).shape(1, 1, 1)) + 1
    return "/".join([group.path, field, "c", str(shard), *["0"] * (ndim - 1)])


def _footer_problem(meta: dict[str, Any], group: str, stage: str, shard: int) -> str:
    """What is wrong with a manifest part's footer, or "": it must name its own group, stage and
    shard, and its settings must still hash to the hash that skip checks compare."""
    named = (meta.get("group"), meta.get("stage"), meta.get("shard"))
    if named != (group, stage, shard):
        return f"manifest part footer names {named}, not ({group!r}, {stage!r}, {shard})"
    if mf.config_hash(meta.get("config") or {}) != meta.get("config_hash"):
        return "manifest part footer: the settings recorded do not match their hash (altered after writing)"
    return ""


def _check_consolidated(group: Group, stage: str, report: VerifyReport) -> None:
    """A consolidated manifest that readers would ignore, or whose rows differ from the parts
    it says it was made from, is a problem (readers trust it for those parts)."""
    index = cons.load(group.store.fs, group.stage_dir(stage), stage)
    where = f"{group.stage_dir(stage)}/{index.consolidated}"
    for warning in index.warnings:
        report.problems.append(Problem(group.path, stage, -1, warning))
    if not index.consolidated:
        return
    for shard in sorted(set(index.parts) - set(index.read_from_parts)):
        try:
            part, _ = mf.read_table(group.store.fs, group.part_path(stage, shard))
        except (OSError, pa.ArrowInvalid) as exc:
            report.problems.append(Problem(group.path, stage, shard, f"manifest part unreadable: {exc}"))
            continue
        mine = index.rows([shard])
        missing = [c for c in part.column_names if c not in mine.column_names]
        if missing or _rows(mine.select(part.column_names)) != _rows(part):
            report.problems.append(Problem(group.path, stage, shard, f"{where}: its rows for this shard differ "
                                                                     "from the shard's manifest part"))


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows in index order, comparable with ``==`` (NaN made equal to NaN)."""
    def norm(v: Any) -> Any:
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    table = table.sort_by("index")
    return [tuple(norm(v) for v in row.values()) for row in table.to_pylist()]


def inspect_store(url: str, storage_options: dict[str, Any] | None = None,
                  version: int | str | None = None) -> dict[str, Any]:
    """Groups, sample counts, fields, per-stage shard completeness, bytes on disk, schema, at the
    newest committed version (or ``version``: a number, or ``"working"`` for everything on disk)."""
    store = Store.open(url, storage_options=storage_options, version=version)
    meta = store.meta
    sizes = store.sizes()
    latest = store.latest_version()
    out: dict[str, Any] = {
        "url": url, "schema_version": meta["schema_version"], "package_version": meta.get("package_version"),
        "created": meta.get("created"),
        "version": store.version.number if store.version else None,
        "latest_version": latest.number if latest else None, "groups": {},
    }
    for path in store.group_paths():
        g = store.group(path)
        stages = {}
        for stage in g.stages():
            done, live = set(g.complete_shards(stage)), g.live_shards()
            stages[stage] = {"complete": len(done & set(live)), "of": len(live),
                             "incomplete_shards": [k for k in live if k not in done]}
        status_counts: dict[str, int] = {}
        if "ingest" in stages:
            table = g.manifest("ingest", columns=["status"])
            if "status" in table.column_names:
                for s in table.column("status").to_pylist():
                    status_counts[s] = status_counts.get(s, 0) + 1
        out["groups"][path] = {
            "samples": len(g), "shard_size": g.shard_size, "shards": g.num_shards,
            "resolution": [g.height, g.width], "fields": g.fields(), "stages": stages,
            "status": status_counts, "bytes": sizes.get(path, 0),
        }
    return out
