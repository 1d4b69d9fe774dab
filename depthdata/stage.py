"""The stage contract: what every stage of the pipeline is, and what a shard of work returns.

A *stage* (ingest, teacher, lidar) turns some fields of a group into others, one shard at a
time. Each is one object implementing :class:`Stage`; :mod:`depthdata.pipeline` lists them in
pipeline order and runs them in one process, and ``flows`` runs the same objects as Prefect
tasks on Dask. A new stage is one module with one :class:`Stage` subclass, listed in
:data:`depthdata.pipeline.STAGES`.

The contract a stage keeps (what makes resume and parallel writers correct):

* :meth:`Stage.prepare` runs once per dataset in the orchestrating process, before any shard
  task: it returns the groups the stage works on with the stage's arrays created
  (:meth:`Stage.prepare_group`; Zarr array creation from several workers at once is not safe);
* :meth:`Stage.run_shard` reads what it needs of one shard, writes *all* of the stage's fields
  of that shard with :meth:`depthdata.store.Group.write_shard` (data, then the manifest part),
  and returns a :class:`ShardResult`. It skips a shard already complete with the same settings
  (unless ``force``), so a re-run after a kill redoes exactly the missing shards;
* the stage's manifest part holds one row per sample with the columns in :attr:`Stage.columns`
  (besides the store's own, :data:`depthdata.store.manifest.PART_COLUMNS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from depthdata.store.manifest import Column, read_table

if TYPE_CHECKING:
    from depthdata.store import Group, Store

#: a :class:`depthdata.catalog.Catalog`. Named, not imported: the catalog imports the settings
#: models of the packages whose stages implement this contract, so importing it here (even for
#: type checking) would make a cycle.
Catalog = Any


@dataclass(frozen=True)
class Quarantined:
    """A sample a stage could not process: which, from where, and why."""

    sample_id: str
    source_uri: str
    reason: str


@dataclass
class ShardResult:
    group: str
    stage: str
    shard: int
    #: samples written with status ``ok``
    written: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    #: the shard was already complete and was left alone
    skipped: bool = False
    seconds: float = 0.0


class Stage(ABC):
    """One stage of the pipeline (see the module doc for the contract)."""

    #: the stage's one name: command line, flows, store (manifest folder) and docs
    name: ClassVar[str]
    #: one line for ``--help``, summaries and the docs
    doc: ClassVar[str]
    #: the catalog section holding its settings (``datasets.<name>``, ``teacher``, ``lidar``)
    settings_key: ClassVar[str]
    #: stages whose completion of a shard this one needs before it runs that shard
    requires: ClassVar[tuple[str, ...]] = ()
    #: stages whose output of a shard this one reads (when complete): a change there redoes the
    #: shard (see :meth:`upstream`)
    consumes: ClassVar[tuple[str, ...]] = ()
    #: manifest columns this stage adds to each row, besides the store's own
    columns: ClassVar[tuple[Column, ...]]
    #: its shards run best on a GPU: a build can route them to workers that have one
    wants_gpu: ClassVar[bool] = False

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this stage writes (the store's field table says which stage owns each)."""
        from depthdata.store import STAGES

        return STAGES[self.name]

    def settings(self, catalog: Catalog, dataset: str) -> Any:
        """The settings this stage runs dataset ``dataset`` with: the catalog's section named
        :attr:`settings_key` (the same for every dataset unless a stage says otherwise)."""
        return getattr(catalog, self.settings_key)

    @abstractmethod
    def part_config(self, settings: Any) -> dict[str, Any]:
        """What :meth:`run_shard` hashes into each manifest part for ``settings``: a shard whose
        part has the same hash is complete and is skipped, so planning can tell from the
        manifest alone which shards need a task. Cheap: it must not load models."""

    def prepare(self, store: Store, catalog: Catalog, dataset: str) -> list[Group]:
        """The groups of ``dataset`` this stage works on, with its arrays created.

        Later stages work on whatever groups ingest made; ingest overrides this to plan the
        groups from the source."""
        groups = [store.group(p) for p in store.group_paths() if p.split("/", 1)[0] == dataset]
        for g in groups:
            self.prepare_group(g)
        return groups

    def prepare_group(self, group: Group) -> None:
        """Create this stage's arrays in an existing ``group`` (once, before its shard tasks)."""
        group.ensure_fields(self.fields)

    @abstractmethod
    def run_shard(self, group: Group, shard: int, settings: Any, *, threads: int = 0,
                  force: bool = False) -> ShardResult:
        """Process one shard of ``group`` with ``settings`` (from :meth:`settings`).

        ``threads``: CPU threads the shard may use (0 = the libraries' own choice; a Dask
        worker running one task per core passes 1)."""

    def recorded_result(self, group: Group, shard: int) -> tuple[ShardResult, str]:
        """What the complete manifest part of ``shard`` says this stage did there, and when
        (the part's ``written`` time, ISO 8601 UTC to the microsecond; to the second in parts
        written by earlier versions): samples written (any status
        but ``quarantined`` and ``skipped``) and those quarantined, with their reasons.

        For a retry that finds the shard complete because the attempt before it wrote every
        object and lost only a reply: the retry skips it, and the task reports this instead."""
        table, meta = read_table(group.store.fs, group.part_path(self.name, shard))
        rows = table.to_pylist()
        quarantined = [Quarantined(r["sample_id"], r.get("source_uri") or "", r.get("reason") or "")
                       for r in rows if r.get("status") == "quarantined"]
        written = sum(r.get("status", "ok") not in ("quarantined", "skipped") for r in rows)
        result = ShardResult(group.path, self.name, shard, written=written, quarantined=quarantined)
        return result, str(meta.get("written", ""))

    def upstream(self, group: Group, shard: int, indexes: dict[str, Any] | None = None) -> dict[str, str]:
        """Digests (:meth:`~depthdata.store.Group.part_digest`) of the :attr:`consumes` parts of
        ``shard`` as they are now ("" for one not written): recorded in the shard's part, and
        compared when deciding whether it is complete. ``indexes``: stage → a loaded index."""
        indexes = indexes or {}
        return {st: group.part_digest(st, shard, indexes.get(st)) for st in self.consumes}

    def upstream_all(self, group: Group) -> dict[int, dict[str, str]]:
        """:meth:`upstream` of every shard of ``group``, from the stage indexes (planning)."""
        indexes = {st: group.stage_index(st) for st in self.consumes}
        return {k: self.upstream(group, k, indexes) for k in range(group.num_shards)}

    def __repr__(self) -> str:
        return f"<stage {self.name}>"

    def check_prepared(self, group: Group) -> None:
        """Raise :class:`~depthdata.errors.StoreError` when ``group`` lacks this stage's arrays."""
        from depthdata.errors import StoreError

        missing = [f for f in self.fields if f not in group.fields()]
        if missing:
            raise StoreError(f"{group.store.url}: group {group.path} has no {missing} arrays: the {self.name} "
                             f"stage was not prepared for it (Stage.prepare, or run it through depthdata.pipeline)")


@dataclass
class StageTotals:
    """Totals of a stage run shard by shard in one process (the ``depthdata <stage> run`` commands)."""

    written: int = 0
    skipped: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)

    def add(self, result: ShardResult) -> None:
        self.written += result.written
        self.skipped += result.skipped
        self.quarantined += result.quarantined

    def quarantine_lines(self) -> list[str]:
        return [f"  quarantined {q.sample_id} ({q.source_uri}): {q.reason}" for q in self.quarantined]
