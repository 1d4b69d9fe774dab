"""What every shard-sized unit of work returns, whatever the stage.

A stage function has the shape ``run_shard(group, shard, config, ...) -> ShardResult``: it
reads what it needs from the group, writes its fields of that one shard with
:meth:`depthdata.store.Group.write_shard` (data, then the manifest part), and reports. Flows
collect these to print the closing summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
