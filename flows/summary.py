"""What a build did, per stage: shards written / skipped / failed, samples, quarantine, time.

Plain dataclasses built from the stages' :class:`~depthdata.stage.ShardResult` values, rendered
as text for the terminal and as markdown for the Prefect artifact.

Both renderings are for a person scanning them: identical failures (every dataset of a stage
refused for the same missing teacher, say) are one line with a count, and paths are shown
relative to the dataset root or the store they lie in (``{store}/...``, ``{nyu}/...``; the
artifact lists what each stands for) instead of repeating long absolute prefixes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from depthdata.stage import Quarantined, ShardResult

#: longest reason shown in one table cell of the artifact; the run's logs have it whole
MAX_REASON = 600
#: places named in one grouped line before "+N more"
MAX_PLACES = 8


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
    #: for a stage that is not a shard stage (the EDA report): what it did, in words
    note: str = ""
    #: what an operator should know about the stage that is not a failure (a random teacher)
    warnings: list[str] = field(default_factory=list)

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

    @property
    def shard_stage(self) -> bool:
        """Whether the stage runs shards (its counts mean something); not the EDA report, the
        build lock or the commit."""
        return self.stage not in ("eda", "lock", "commit")


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
    #: the catalog file the build ran
    catalog: str = ""
    #: dataset name → its root (paths under it are shown relative to it)
    roots: dict[str, str] = field(default_factory=dict)
    #: things an operator should know that are not failures (a random teacher, a lock taken over)
    warnings: list[str] = field(default_factory=list)

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

    @property
    def all_warnings(self) -> list[str]:
        """The build's warnings, then its stages', each once."""
        out: list[str] = []
        for w in [*self.warnings, *(w for s in self.stages for w in s.warnings)]:
            if w not in out:
                out.append(w)
        return out

    @property
    def catalog_name(self) -> str:
        return Path(self.catalog).stem if self.catalog else ""

    def artifact_key(self) -> str:
        return artifact_key(self.store_url)

    def short_paths(self) -> dict[str, str]:
        """Label → root of the paths shortened in the summary: ``store`` and each dataset."""
        return {"store": self.store_url.removeprefix("file://"), **self.roots}

    def headline(self) -> str:
        """One line for the flow run's state message (the run's details in the UI): per stage
        what it did, then the version."""
        parts = []
        for s in self.stages:
            if not s.shard_stage:
                parts.append(f"{s.stage}: {_eda_state(s) if s.stage == 'eda' else 'FAILED'}")
                continue
            what = [f"{s.samples_written} samples written"]
            what += [f"{len(s.quarantined)} quarantined"] * bool(s.quarantined)
            what += [f"{s.shards_skipped} shards skipped"] * bool(s.shards_skipped)
            what += [f"{len(s.failures)} FAILED"] * bool(s.failures)
            parts.append(f"{s.stage}: {', '.join(what)}")
        return "; ".join([*parts, self.version_line()])

    def to_markdown(self) -> str:
        roots = self.short_paths()
        catalog = f" of catalog `{self.catalog_name}`" if self.catalog else ""
        lines = [
            f"# depthdata build{catalog}: {'complete' if self.ok else 'FAILED'}",
            "",
            f"- **Store** {_link(self.store_url)}: {self.version_line()}",
        ]
        if self.catalog:
            lines.append(f"- **Catalog** {_link(self.catalog)}")
        for s in self.stages:
            if s.stage == "eda":
                lines.append(f"- **EDA report** {_eda_state(s)}" + "".join(f" {_link(o, Path(o).name)}"
                                                                         for o in s.outputs))
        warnings = self.all_warnings
        if warnings:
            lines += ["", "## Warnings", ""] + [f"- {_md(shorten(w, roots))}" for w in warnings]
        shard_stages = [s for s in self.stages if s.shard_stage]
        if shard_stages:
            lines += ["", "| stage | shards written | shards skipped | shards failed | samples written | quarantined "
                      "| seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {s.stage} | {s.shards_written} | {s.shards_skipped} | {len(s.failures)} | "
                      f"{s.samples_written} | {len(s.quarantined)} | {s.seconds:.1f} |" for s in shard_stages]
        failures = group_failures(self.failures, roots)
        if failures:
            lines += ["", "## Failed", "", "| stage | where | reason |", "|---|---|---|"]
            lines += [f"| {st} | {_md(where)} | {_md(_clip(reason))} |" for st, where, reason in failures]
        quarantined = group_quarantined([(s.stage, q) for s in self.stages for q in s.quarantined], roots)
        if quarantined:
            lines += ["", "## Quarantined samples", "", "| stage | samples | source | reason |", "|---|---|---|---|"]
            lines += [f"| {st} | {_md(samples)} | {_md(sources)} | {_md(_clip(reason))} |"
                      for st, samples, sources, reason in quarantined]
        used = [label for label, root in roots.items() if root and f"{{{label}}}/" in "\n".join(lines)]
        if used:
            lines += ["", "Paths: " + "; ".join(f"`{{{label}}}` = `{roots[label]}`" for label in used)]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        roots = self.short_paths()
        catalog = f" — catalog {self.catalog}" if self.catalog else ""
        lines = [f"build {'complete' if self.ok else 'FAILED'} — store {self.store_url} — {self.version_line()}{catalog}"]
        lines += [f"  warning: {w}" for w in self.all_warnings]
        for s in self.stages:
            if not s.shard_stage:
                lines.append(f"  {s.stage:<7} {_eda_state(s) if s.stage == 'eda' else 'FAILED'}; {s.seconds:.1f} s")
                verb = "kept" if "up to date" in s.note else "wrote"
                lines += [f"      FAILED {f.where}: {f.reason}" for f in s.failures]
                lines += [f"      {verb} {o}" for o in s.outputs]
                continue
            lines.append(
                f"  {s.stage:<7} {s.samples_written:>6} samples written, {len(s.quarantined)} quarantined; "
                f"shards: {s.shards_written} written, {s.shards_skipped} skipped (already complete), "
                f"{len(s.failures)} failed; {s.seconds:.1f} s"
            )
            for q in s.quarantined:
                lines.append(f"      quarantined {q.sample_id} ({q.source_uri}): "
                             f"{short_reason(q.reason, q.source_uri, {})}")
            for _, where, reason in group_failures([(s.stage, f) for f in s.failures], roots):
                lines.append(f"      FAILED {where}: {reason}")
        return "\n".join(lines)


def _eda_state(s: StageSummary) -> str:
    if s.failures:
        return "FAILED: " + "; ".join(f.reason for f in s.failures)
    return s.note or "report written"


# -- grouping and shortening ---------------------------------------------------------------------

def shorten(text: str, roots: dict[str, str]) -> str:
    """``text`` with each root of ``roots`` (label → absolute path or URL; the longest first)
    written as ``{label}``, or left out where the label is empty (a path relative to it)."""
    for label, root in sorted(roots.items(), key=lambda kv: -len(kv[1])):
        root = root.rstrip("/")
        if root:
            text = text.replace(root + "/", f"{{{label}}}/" if label else "")
            text = re.sub(re.escape(root) + r"(?![\w.-])", f"{{{label}}}" if label else ".", text)
    return text


def short_reason(reason: str, source_uri: str, roots: dict[str, str]) -> str:
    """A quarantine reason without its leading source path (shown beside it already), shortened."""
    if source_uri and reason.startswith(source_uri + ": "):
        reason = reason[len(source_uri) + 2:]
    return shorten(reason, roots)


def _places(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_PLACES])
    return shown + (f", +{len(names) - MAX_PLACES} more" if len(names) > MAX_PLACES else "")


def _shard_ranges(shards: list[int]) -> str:
    runs: list[list[int]] = []
    for k in sorted(shards):
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    text = ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"shard{'s' * (len(shards) > 1)} {text}"


def group_failures(failures: Iterable[tuple[str, ShardFailure]], roots: dict[str, str]
                   ) -> list[tuple[str, str, str]]:
    """``(stage, where, reason)`` per distinct (stage, reason), in first-seen order: ``where``
    names the one place, or counts and lists them (``5 datasets: nyu, diw, ...``,
    ``3 shards: nyu/train shards 0-2``)."""
    groups: dict[tuple[str, str], list[ShardFailure]] = {}
    for stage, f in failures:
        groups.setdefault((stage, shorten(f.reason, roots)), []).append(f)
    out = []
    for (stage, reason), fs in groups.items():
        if len(fs) == 1:
            out.append((stage, fs[0].where, reason))
            continue
        whole = [f.group for f in fs if f.shard < 0]
        by_group: dict[str, list[int]] = {}
        for f in fs:
            if f.shard >= 0:
                by_group.setdefault(f.group, []).append(f.shard)
        names = whole + [f"{g} {_shard_ranges(ks)}" for g, ks in by_group.items()]
        counts = []
        if whole:
            counts.append(f"{len(whole)} dataset{'s' * (len(whole) > 1)}")
        shards = sum(len(ks) for ks in by_group.values())
        if shards:
            counts.append(f"{shards} shard{'s' * (shards > 1)}")
        out.append((stage, f"{' + '.join(counts)}: {_places(names)}", reason))
    return out


def group_quarantined(items: Iterable[tuple[str, Quarantined]], roots: dict[str, str]
                      ) -> list[tuple[str, str, str, str]]:
    """``(stage, samples, sources, reason)`` per distinct (stage, reason), sources relative to
    their dataset's root."""
    groups: dict[tuple[str, str], list[Quarantined]] = {}
    for stage, q in items:
        groups.setdefault((stage, short_reason(q.reason, q.source_uri, roots)), []).append(q)

    def source(q: Quarantined) -> str:
        dataset = q.sample_id.split("/", 1)[0]
        return shorten(q.source_uri, {"": roots[dataset]} if dataset in roots else roots)

    out = []
    for (stage, reason), qs in groups.items():
        count = f"{len(qs)}: " if len(qs) > 1 else ""
        out.append((stage, count + _places([q.sample_id for q in qs]), _places([source(q) for q in qs]), reason))
    return out


# -- markdown --------------------------------------------------------------------------------------

def artifact_key(store_url: str) -> str:
    """The key of a store's build artifacts: ``depthdata-build-<store name>-<8 hex digits of its
    URL>`` (artifact keys are lowercase letters, digits and dashes). One key per store, so the
    UI's artifact page of a key is one store's history, and two stores both named
    ``store.zarr`` in different folders keep separate ones."""
    url = store_url.rstrip("/")
    name = url.rsplit("/", 1)[-1].removesuffix(".zarr")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "store"
    return f"depthdata-build-{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def _link(location: str, text: str | None = None) -> str:
    """A markdown link where a browser can follow one (http(s) URLs, local paths as ``file://``
    URLs), else the location as code (``s3://`` and other fsspec URLs)."""
    shown = text or location
    if location.startswith(("http://", "https://")):
        return f"[{_md(shown)}]({location})"
    if "://" not in location or location.startswith("file://"):
        path = location.removeprefix("file://")
        if path.startswith("/"):
            return f"[`{shown}`](file://{quote(path)})"
    return f"`{location}`"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def _md(text: str) -> str:
    """Text for a markdown table cell: no pipes or line breaks, no HTML tags."""
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
