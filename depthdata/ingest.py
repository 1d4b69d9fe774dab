"""The ingest stage: source items → canonical records → ``rgb``/``depth``/``pairs`` shards.

Planning (:meth:`IngestStage.prepare`) lists every split once and fixes the order of its
samples in the store; a shard task (:meth:`IngestStage.run_shard`) then loads only its own
items, so shards can run anywhere, in any order, and be redone alone. A sample that cannot be
read is quarantined: its slot keeps the fill value, its manifest row says
``status="quarantined"`` and why.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from depthdata.catalog import Catalog, DatasetConfig
from depthdata.errors import CatalogError, DepthdataError, SampleError
from depthdata.sample import Sample, make_sample_id, valid_depth
from depthdata.sources.registry import Source, SourceItem
from depthdata.stage import Quarantined, ShardResult, Stage
from depthdata.store import Group, Store, auto_shard_size, field_spec
from depthdata.store.manifest import Column, checksum
from depthdata.store.plan import fingerprint_files

log = logging.getLogger(__name__)

#: fields a build will eventually hold besides the source's own; they size ``auto`` shards
LATER_FIELDS = ("teacher", "teacher_conf", "sparse")


@dataclass(frozen=True)
class IngestSettings:
    """What ingest needs of the catalog for one dataset: its section and its resolved root."""

    dataset: str
    config: DatasetConfig
    #: the dataset's folder or file URL, made absolute against the catalog's folder
    root: str

    def source(self) -> Source:
        from depthdata.sources import get_source_class

        return get_source_class(self.config.kind)(self.dataset, self.config, self.root)

    def hashed(self) -> dict[str, Any]:
        """Settings that change what ingest writes; hashed into each manifest part."""
        cfg = self.config
        out = {"kind": cfg.kind, "resolution": cfg.resolution if cfg.resolution == "native" else list(cfg.resolution),
               "resize": cfg.resize, "options": cfg.options}
        if cfg.intrinsics is not None:  # only when set: parts written before the option stay complete
            out["intrinsics"] = cfg.intrinsics.model_dump()
        return out

    def load(self, source: Source, split: str, item: SourceItem, size: tuple[int, int]) -> Sample:
        """One item as stored: read, given the catalog's intrinsics if any, resized to ``size``."""
        from depthdata.sources.resize import resize_sample

        sample = source.load(split, item)
        if self.config.intrinsics is not None:
            sample = sample.with_(intrinsics=self.config.intrinsics.for_size(*sample.rgb.shape[:2]))
        return resize_sample(sample, size, self.config.resize)


class IngestStage(Stage):
    name = "ingest"
    doc = "sources → rgb, depth, pairs"
    settings_key = "datasets.<name>"
    columns = (
        Column("status", "string", "`ok`: read and stored; `quarantined`: the item could not be read "
               "(its slot keeps the fill value)"),
        Column("reason", "string", "why the item was quarantined (names the file and the problem)"),
        Column("source_uri", "string", "the file the sample was read from"),
        Column("dataset", "string", "dataset name in the catalog"),
        Column("split", "string", "split name"),
        Column("scene", "string", "scene or sequence the source reports (null when unknown)"),
        Column("original_height", "int64", "height of the source image in pixels, before resizing"),
        Column("original_width", "int64", "width of the source image in pixels, before resizing"),
        Column("fx", "double", "focal length x in pixels of the *stored* image (NaN = unknown)"),
        Column("fy", "double", "focal length y in pixels of the stored image (NaN = unknown)"),
        Column("cx", "double", "principal point x, 0-based pixels of the stored image (NaN = unknown)"),
        Column("cy", "double", "principal point y, 0-based pixels of the stored image (NaN = unknown)"),
        Column("depth_valid_fraction", "double", "fraction of pixels with valid depth (groups with `depth`)"),
        Column("depth_min", "double", "smallest valid depth, metres (groups with `depth`; NaN when none)"),
        Column("depth_median", "double", "median valid depth, metres (groups with `depth`)"),
        Column("depth_max", "double", "largest valid depth, metres (groups with `depth`)"),
        Column("n_pairs", "int64", "ordinal pairs stored for the sample (groups with `pairs`)"),
        Column("meta_json", "string", "every other per-source field of the record, as JSON"),
    )

    def settings(self, catalog: Catalog, dataset: str) -> IngestSettings:
        if dataset not in catalog.datasets:
            raise CatalogError(f"no dataset {dataset!r} in the catalog (datasets: {', '.join(catalog.datasets)})")
        return IngestSettings(dataset, catalog.datasets[dataset], catalog.dataset_root(dataset))

    def part_config(self, settings: IngestSettings) -> dict[str, Any]:
        return settings.hashed()

    def prepare(self, store: Store, catalog: Catalog, dataset: str) -> list[Group]:
        """Create (or reopen, on a re-run) the ``dataset/<split>`` groups with all their fields' arrays."""
        settings = self.settings(catalog, dataset)
        cfg = settings.config
        source = settings.source()
        available = source.splits()
        splits = cfg.splits or available
        unknown = [s for s in splits if s not in available]
        if unknown:
            raise CatalogError(f"datasets.{dataset}.splits: {unknown} not found under {settings.root} "
                               f"(found: {available})")
        fields = ["rgb", *source.fields]
        max_pairs = source.max_pairs if "pairs" in fields else 0
        groups = []
        for split in splits:
            items = source.items(split)
            if cfg.limit is not None:
                items = items[: cfg.limit]
            height, width = _native_size(source, split, items) if cfg.resolution == "native" else cfg.resolution
            if catalog.store.shard_size == "auto":
                shard_size = auto_shard_size(height, width, fields + list(LATER_FIELDS), max_pairs)
            else:
                shard_size = int(catalog.store.shard_size)
            ids = [make_sample_id(dataset, split, it.key) for it in items]
            # one stat per file, no read: how a later build notices what changed
            fps = [fingerprint_files(source.item_files(it), it.locator) for it in items]
            group = store.create_group(
                dataset, split, ids, [it.uri for it in items], height, width, shard_size, max_pairs=max_pairs,
                compressor=(catalog.store.compressor.codec, catalog.store.compressor.level),
                locators=[json.dumps(it.locator, sort_keys=True) for it in items], fingerprints=fps,
                resize=cfg.resize,
            )
            change = plan_changes(group, settings, source, split, items, ids, fps)
            first, stop = group.append(change.adds, change.removes, change.touches)
            group.ensure_fields(fields)
            if change:
                log.info("%s: the source changed: %d new, %d changed, %d removed (%d re-read, %d unchanged); "
                         "new shards %d..%d", group.path, change.new, change.changed, change.removed,
                         change.reread, len(change.touches), first, stop - 1)
            log.info("planned %s: %d samples in %d shards of %d", group.path, len(group), group.num_shards,
                     shard_size)
            groups.append(group)
        return groups

    def prepare_group(self, group: Group) -> None:
        """Nothing to add: which of ingest's fields a group has depends on its source, so they
        are created when :meth:`prepare` plans the group."""

    def run_shard(self, group: Group, shard: int, settings: IngestSettings, *, threads: int = 0,
                  force: bool = False) -> ShardResult:
        """Ingest one shard of ``group`` (a group of ``settings.dataset``). Skips a complete shard."""
        t0 = time.perf_counter()
        config = self.part_config(settings)
        result = ShardResult(group.path, self.name, shard)
        if not force and group.is_complete(shard, self.name, config):
            result.skipped = True
            return result
        name = settings.dataset
        source = settings.source()
        split = group.path.split("/", 1)[1]
        fields = [f for f in ("rgb", "depth", "pairs") if f in group.fields()]
        n = len(group.shard_range(shard))
        h, w, max_pairs = group.height, group.width, int(group.plan["max_pairs"])
        data = _empty_shard(n, h, w, max_pairs, fields)
        rows = []
        for j, plan_row in enumerate(group.plan_rows(shard)):
            item = SourceItem(key=plan_row["sample_id"].split("/", 2)[2], uri=plan_row["source_uri"],
                              locator=json.loads(plan_row["locator"] or "{}"))
            try:
                sample = settings.load(source, split, item, (h, w))
                if sample.sample_id != plan_row["sample_id"]:
                    raise SampleError(sample.sample_id, f"the plan expected {plan_row['sample_id']!r} here")
                rows.append(_fill(data, j, sample, max_pairs))
            except Exception as exc:  # noqa: BLE001 - any failure of one file quarantines that file only
                reason = str(exc) if isinstance(exc, DepthdataError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, DepthdataError):
                    log.warning("unexpected error reading %s", item.uri, exc_info=True)
                log.warning("quarantined %s: %s", plan_row["sample_id"], reason)
                for name_, arr in data.items():  # a half-filled slot goes back to the fill value
                    arr[j] = 0 if name_ == "rgb" else np.nan
                result.quarantined.append(Quarantined(plan_row["sample_id"], item.uri, reason))
                rows.append(_quarantine_row(plan_row["source_uri"], reason, name, split))
        group.write_shard(shard, self.name, data, rows, config=config)
        result.written = n - len(result.quarantined)
        result.seconds = time.perf_counter() - t0
        return result


stage = IngestStage()


@dataclass
class PlanChange:
    """What a build found changed at a source since the group's plan, as plan operations."""

    #: rows for :meth:`~depthdata.store.Group.append` (new and changed items)
    adds: list[dict[str, Any]] = field(default_factory=list)
    #: live slots to tombstone (removed and changed items)
    removes: list[int] = field(default_factory=list)
    #: (slot, fingerprint) of items whose files were touched but whose content is the same
    touches: list[tuple[int, str]] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    removed: int = 0
    #: items read again to compare their content
    reread: int = 0

    def __bool__(self) -> bool:
        return bool(self.adds or self.removes or self.touches)


def plan_changes(group: Group, settings: IngestSettings, source: Source, split: str, items: list[SourceItem],
                 ids: list[str], fingerprints: list[str]) -> PlanChange:
    """Compare a split's listing with ``group``'s plan.

    An item is *new* when its id is not live in the plan, *removed* when a live id is no longer
    listed. An item whose fingerprint (sizes and mtimes of its files, plus its locator) is the
    one recorded is unchanged without a read. One whose fingerprint differs is read again, only
    when its shard was already ingested, and compared with the stored checksums: same values →
    *touched* (the new fingerprint is recorded), other values → *changed* (its slot is
    tombstoned and it is added again at a new slot). Items of shards not ingested yet are read
    by their shard task anyway."""
    change = PlanChange()
    known = group.layout.live_fingerprints()
    listed = set(ids)
    for sid, (slot, _) in known.items():
        if sid not in listed:
            change.removes.append(slot)
            change.removed += 1
    suspects = []
    for it, sid, fp in zip(items, ids, fingerprints):
        if sid not in known:
            change.adds.append(_plan_row(it, sid, fp))
            change.new += 1
        elif known[sid][1] != fp:
            suspects.append((known[sid][0], it, sid, fp))
    if not suspects:
        return change
    index = group.stage_index(stage.name)
    statuses = group.shard_statuses(stage.name, stage.part_config(settings), index=index)
    done = {k for k, s in enumerate(statuses) if s.complete}
    ingested = [(slot, it, sid, fp) for slot, it, sid, fp in suspects if group.shard_of(slot) in done]
    not_yet = [(slot, fp) for slot, _, _, fp in suspects if group.shard_of(slot) not in done]
    change.touches.extend(not_yet)  # their shard task reads them as they are now
    rows = index.rows(sorted({group.shard_of(s) for s, *_ in ingested}))
    stored = {r["index"]: r for r in rows.to_pylist()} if rows is not None else {}

    def same(job: tuple[int, SourceItem, str, str]) -> bool:
        slot, it, _, _ = job
        return _stored_equals(group, settings, source, split, it, stored.get(slot))

    # decoding releases the GIL: a few threads read changed files in parallel
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(same, ingested))
    change.reread = len(ingested)
    for (slot, it, sid, fp), unchanged in zip(ingested, verdicts):
        if unchanged:
            change.touches.append((slot, fp))
        else:
            change.removes.append(slot)
            change.adds.append(_plan_row(it, sid, fp))
            change.changed += 1
    return change


def _native_size(source: Source, split: str, items: list[SourceItem], tries: int = 16) -> tuple[int, int]:
    """``resolution: native``: the size (height, width) of the split's first readable image."""
    errors = []
    for item in items[:tries]:
        try:
            h, w = source.load(split, item).rgb.shape[:2]
        except Exception as exc:  # noqa: BLE001 - a bad file is quarantined later; try the next one
            errors.append(f"{item.uri}: {exc}")
            continue
        log.info("%s/%s: native resolution %d×%d (from %s)", source.name, split, h, w, item.uri)
        return int(h), int(w)
    raise CatalogError(f"datasets.{source.name}.resolution: native, but none of the first {len(errors)} images of "
                       f"split {split!r} can be read: {errors[0] if errors else 'the split is empty'}")


def _plan_row(item: SourceItem, sample_id: str, fingerprint: str) -> dict[str, Any]:
    return {"sample_id": sample_id, "source_uri": item.uri, "locator": json.dumps(item.locator, sort_keys=True),
            "fingerprint": fingerprint}


def _stored_equals(group: Group, settings: IngestSettings, source: Source, split: str, item: SourceItem,
                   row: dict[str, Any] | None) -> bool:
    """Whether reading ``item`` now gives exactly what its ingest row recorded (the checksums of
    every field). A quarantined row, or an item that cannot be read now, counts as changed: the
    new shard stores it, or quarantines it with today's reason."""
    if row is None or row.get("status") != "ok":
        return False
    h, w, max_pairs = group.height, group.width, int(group.plan["max_pairs"])
    data = _empty_shard(1, h, w, max_pairs, [f for f in ("rgb", "depth", "pairs") if f in group.fields()])
    try:
        _fill(data, 0, settings.load(source, split, item, (h, w)), max_pairs)
    except Exception:  # noqa: BLE001 - unreadable now: its replacement is quarantined with the reason
        return False
    return all(row.get(f"checksum_{name}") == checksum(arr[0].astype(field_spec(name).dtype, copy=False))
               for name, arr in data.items())


def _empty_shard(n: int, h: int, w: int, max_pairs: int, fields: list[str]) -> dict[str, np.ndarray]:
    """Fill-valued buffers of ``n`` samples for ingest's ``fields``."""
    data: dict[str, np.ndarray] = {"rgb": np.zeros((n, h, w, 3), np.uint8)}
    if "depth" in fields:
        data["depth"] = np.full((n, h, w), np.nan, np.float32)
    if "pairs" in fields:
        data["pairs"] = np.full((n, max_pairs, 5), np.nan, np.float32)
    return data


def _fill(data: dict[str, np.ndarray], j: int, sample: Sample, max_pairs: int) -> dict[str, Any]:
    data["rgb"][j] = sample.rgb
    row: dict[str, Any] = {
        "status": "ok", "reason": "", "source_uri": sample.meta["source_uri"],
        "dataset": sample.meta["dataset"], "split": sample.meta["split"], "scene": sample.meta.get("scene"),
    }
    orig = sample.meta.get("original_size") or [sample.height, sample.width]
    row["original_height"], row["original_width"] = int(orig[0]), int(orig[1])
    k = sample.intrinsics
    row.update({"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy} if k else
               {"fx": np.nan, "fy": np.nan, "cx": np.nan, "cy": np.nan})
    if "depth" in data:
        depth = sample.depth if sample.depth is not None else np.full(sample.rgb.shape[:2], np.nan, np.float32)
        data["depth"][j] = depth
        ok = valid_depth(depth)
        vals = depth[ok]
        row["depth_valid_fraction"] = float(ok.mean())
        row["depth_min"] = float(vals.min()) if vals.size else np.nan
        row["depth_median"] = float(np.median(vals)) if vals.size else np.nan
        row["depth_max"] = float(vals.max()) if vals.size else np.nan
    if "pairs" in data:
        pairs = sample.pairs if sample.pairs is not None else np.zeros((0, 5), np.float32)
        if len(pairs) > max_pairs:
            raise SampleError(sample.sample_id, f"{len(pairs)} ordinal pairs, the store holds at most {max_pairs}")
        data["pairs"][j, : len(pairs)] = pairs
        row["n_pairs"] = int(len(pairs))
    extra = {k: v for k, v in sample.meta.items() if k not in ("source_uri", "dataset", "split", "scene", "original_size")}
    row["meta_json"] = json.dumps(extra, sort_keys=True)
    return row


def _quarantine_row(uri: str, reason: str, dataset: str, split: str) -> dict[str, Any]:
    return {"status": "quarantined", "reason": reason, "source_uri": uri, "dataset": dataset, "split": split}
