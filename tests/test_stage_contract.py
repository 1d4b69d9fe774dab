"""The stage contract: every stage runs through the one in-process runner, and writes exactly the
fields and manifest columns it declares (the reference docs are generated from those declarations,
so a column written but not declared, or declared but never written, fails here)."""

from __future__ import annotations

import pytest

from depthdata.catalog import load_catalog
from depthdata.demo import write_demo_catalog, write_demo_data
from depthdata.pipeline import STAGES, open_store, run_local
from depthdata.stage import StageTotals
from depthdata.store import FIELDS
from depthdata.store.manifest import PART_COLUMNS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every demo dataset (depth, pairs, plain photos) through every stage, in process."""
    out = tmp_path_factory.mktemp("contract")
    paths = write_demo_data(out / "data", seed=1, n_per_dataset=3, size=(48, 64))
    catalog = load_catalog(write_demo_catalog(out, paths, resolution=(24, 32), random_teacher=True))
    store = open_store(catalog, create=True)
    totals = {name: StageTotals() for name in STAGES}
    for name, stage in STAGES.items():
        for ds in catalog.datasets:
            t = run_local(stage, stage.prepare(store, catalog, ds), stage.settings(catalog, ds), threads=1,
                          progress=False)
            totals[name].written += t.written
    return store, totals


def test_stages_are_in_pipeline_order_with_one_name_each():
    assert list(STAGES) == ["ingest", "teacher", "lidar"]
    assert all(stage.name == name for name, stage in STAGES.items())
    # every field belongs to exactly one stage, and every stage writes at least one field
    owned = [f for stage in STAGES.values() for f in stage.fields]
    assert sorted(owned) == sorted(FIELDS)
    assert all(stage.fields for stage in STAGES.values())


def test_every_stage_writes_its_fields_and_exactly_its_declared_columns(built):
    store, totals = built
    assert totals["ingest"].written > 0 and totals["teacher"].written > 0 and totals["lidar"].written > 0
    store_columns = {c.name for c in PART_COLUMNS if c.name != "checksum_<field>"}
    for name, stage in STAGES.items():
        declared = {c.name for c in stage.columns}
        assert len(declared) == len(stage.columns), f"{name}: a column is declared twice"
        seen: set[str] = set()
        for path in store.group_paths():
            group = store.group(path)
            written = set(group.manifest(name).column_names)
            fields = [f for f in stage.fields if f in group.fields()]
            checksums = {f"checksum_{f}" for f in fields}
            undeclared = written - store_columns - checksums - declared
            assert not undeclared, f"{name} writes undeclared manifest columns {sorted(undeclared)} in {path}"
            assert checksums <= written
            seen |= written
        # some columns only exist for groups with that field (depth stats, pairs): across the demo's
        # groups every declared column appears somewhere
        assert declared <= seen, f"{name} declares columns it never writes: {sorted(declared - seen)}"


def test_a_stage_run_twice_skips_every_complete_shard(built):
    store, _ = built
    catalog_dict = store.meta["catalog"]
    from depthdata.catalog import parse_catalog

    catalog = parse_catalog(catalog_dict, check_roots=False)
    lidar = STAGES["lidar"]
    groups = [store.group(p) for p in store.group_paths()]
    again = run_local(lidar, groups, lidar.settings(catalog, "nyu"), threads=1, progress=False)
    assert again.written == 0 and again.skipped == sum(g.num_shards for g in groups)
