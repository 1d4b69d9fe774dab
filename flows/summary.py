"""What a build did, per stage: shards written / skipped / failed, samples, quarantine, time.

Plain dataclasses built from the stages' :class:`~depthdata.stage.ShardResult` values, rendered
as text for the terminal and as markdown for the Prefect artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from depthdata.stage import Quarantined, ShardResult


@dataclass(frozen=True)
class ShardFailure:
    #: group path, or the dataset name when planning it failed
    group: str
    #: 0-based shard index; -1 when the failure is not one shard's (planning, the EDA report)
    shard: int
    reason: str

    @property
    def where(self) -> str:
        return f"{self.group} shard {self.shard}" if self.shard >= 0 else self.group


@dataclass
class StageSummary:
    stage: str
    #: wall-clock seconds of the stage in this run (planning + every shard task)
    seconds: float = 0.0
    #: shards this run wrote (new, or redone after an interruption or a settings change)
    shards_written: int = 0
    #: shards that were already complete and were left alone
    shards_skipped: int = 0
    failures: list[ShardFailure] = field(default_factory=list)
    samples_written: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    #: files the stage produced outside the store (the EDA report)
    outputs: list[str] = field(default_factory=list)

    def add(self, result: ShardResult) -> None:
        if result.skipped:
            self.shards_skipped += 1
            return
        self.shards_written += 1
        self.samples_written += result.written
        self.quarantined.extend(result.quarantined)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class BuildSummary:
    store_url: str
    stages: list[StageSummary] = field(default_factory=list)
    #: the store's version readers see after the build (``None``: none committed)
    version: int | None = None
    version_added: int = 0
    version_removed: int = 0
    #: whether the build has committed (or found nothing to commit)
    committed: bool = False

    def version_line(self) -> str:
        if self.version is None:
            return "no version committed (readers keep the previous one)"
        if not (self.version_added or self.version_removed) and self.committed:
            return f"version {self.version} (samples unchanged)"
        return f"version {self.version}: {self.version_added} sample(s) added, {self.version_removed} removed"

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    @property
    def failures(self) -> list[tuple[str, ShardFailure]]:
        return [(s.stage, f) for s in self.stages for f in s.failures]

    def to_markdown(self) -> str:
        lines = [
            f"# depthdata build: {'complete' if self.ok else 'FAILED'}",
            "",
            f"Store: `{self.store_url}` — {self.version_line()}",
            "",
            "| stage | shards written | shards skipped | shards failed | samples written | quarantined | seconds |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.stages:
            lines.append(f"| {s.stage} | {s.shards_written} | {s.shards_skipped} | {len(s.failures)} | "
                         f"{s.samples_written} | {len(s.quarantined)} | {s.seconds:.1f} |")
        failures = self.failures
        if failures:
            lines += ["", "## Failed shards", "", "| stage | group | shard | reason |", "|---|---|---:|---|"]
            lines += [f"| {st} | {f.group} | {f.shard if f.shard >= 0 else ''} | {_cell(f.reason)} |"
                      for st, f in failures]
        quarantined = [(s.stage, q) for s in self.stages for q in s.quarantined]
        if quarantined:
            lines += ["", "## Quarantined samples", "", "| stage | sample | source | reason |", "|---|---|---|---|"]
            lines += [f"| {st} | {q.sample_id} | {q.source_uri} | {_cell(q.reason)} |" for st, q in quarantined]
        outputs = [o for s in self.stages for o in s.outputs]
        if outputs:
            lines += ["", "## Outputs", ""] + [f"- `{o}`" for o in outputs]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        lines = [f"build {'complete' if self.ok else 'FAILED'} — store {self.store_url} — {self.version_line()}"]
        for s in self.stages:
            if s.stage == "eda":
                state = "FAILED" if s.failures else "report written"
                lines.append(f"  {s.stage:<7} {state}; {s.seconds:.1f} s")
                lines += [f"      FAILED: {f.reason}" for f in s.failures] + [f"      wrote {o}" for o in s.outputs]
                continue
            lines.append(
                f"  {s.stage:<7} {s.samples_written:>6} samples written, {len(s.quarantined)} quarantined; "
                f"shards: {s.shards_written} written, {s.shards_skipped} skipped (already complete), "
                f"{len(s.failures)} failed; {s.seconds:.1f} s"
            )
            for q in s.quarantined:
                lines.append(f"      quarantined {q.sample_id} ({q.source_uri}): {q.reason}")
            for f in s.failures:
                lines.append(f"      FAILED {f.where}: {f.reason}")
            for o in s.outputs:
                lines.append(f"      wrote {o}")
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
