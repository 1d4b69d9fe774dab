"""Demo data: exact rendered depth, deterministic by seed, readable through its own catalog."""

import argparse

import numpy as np
import pytest

from depthdata.catalog import load_catalog
from depthdata.cli import sources_cmd
from depthdata.errors import CatalogError
from depthdata.demo import write_demo_catalog, write_demo_data
from depthdata.demo.data import sample_pair
from depthdata.demo.render import Scene, _box, _sphere, render
from depthdata.sample import Intrinsics


def test_render_depth_is_exact_for_analytic_scenes():
    intr = Intrinsics(50.0, 50.0, 31.5, 23.5)
    s = Scene()
    s.add(_box((100, 100, 0.1), (0, 0, 3.05)), (0.5, 0.5, 0.5), ("checker", 0.5))  # wall, front face z = 3
    s.add(_sphere(0.5, (0.0, 0.0, 2.0)), (0.9, 0.2, 0.2), ("plain", 1))
    r = render(s, intr, (48, 64))
    # the ray through the principal point hits the sphere's front at z = 2 − 0.5
    assert r.depth[round(intr.cy), round(intr.cx)] == pytest.approx(1.5, abs=0.01)  # sphere mesh facets
    assert r.depth[0, 0] == pytest.approx(3.0, abs=1e-4)  # the wall is a plane at z = 3 everywhere
    assert r.depth[47, 63] == pytest.approx(3.0, abs=1e-4)
    assert r.rgb.dtype == np.uint8 and r.rgb.std() > 5  # shaded and textured, not flat


def test_sample_pair_orders_by_exact_depth():
    depth = np.full((10, 10), 1.0, np.float32)
    depth[:, 5:] = 4.0
    depth[0, 0] = np.nan
    rng = np.random.default_rng(0)
    for _ in range(20):
        (ya, xa, yb, xb), order = sample_pair(depth, rng)
        da, db = depth[ya - 1, xa - 1], depth[yb - 1, xb - 1]  # 1-based
        assert np.isfinite(da) and np.isfinite(db) and da != db
        assert order == (">" if da > db else "<")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = write_demo_data(out, seed=5, n_per_dataset=3, size=(48, 64))
    return out, paths, write_demo_catalog(out, paths, resolution=(24, 32))


def test_demo_catalog_reads_every_dataset(demo):
    out, paths, cat_path = demo
    assert set(paths) == {"nyu", "nyu_densedepth", "synthia", "diw", "photos"}
    cat = load_catalog(cat_path)
    assert {n: d.kind for n, d in cat.datasets.items()} == {"nyu": "nyuv2", "nyu_densedepth": "nyuv2",
                                                            "synthia": "synthia", "diw": "diw", "photos": "images"}
    assert all(list(d.resolution) == [24, 32] for d in cat.datasets.values())
    counts = {}
    for name in cat.datasets:
        src = cat.source(name)
        for split in src.splits():
            items = src.items(split)
            counts[(name, split)] = len(items)
            for it in items:
                s = src.load(split, it)
                if "depth" in src.fields:
                    assert np.isfinite(s.depth).mean() > 0.5
    # 3 NYU samples: every third (1-based 3) is test; photos: six scikit-image pictures
    assert counts[("nyu", "train")] == 2 and counts[("nyu", "test")] == 1
    assert counts[("photos", "train")] == 6
    assert counts[("diw", "train")] + counts[("diw", "test")] == 3
    dd = cat.source("nyu").__class__("dd", cat.datasets["nyu"].model_copy(update={"options": {}}),
                                     paths["nyu_densedepth"])
    assert dd.layout == "densedepth" and dd.splits() == ["train", "test"]


def test_demo_is_deterministic_by_seed(demo, tmp_path):
    out, paths, cat_path = demo
    again = write_demo_data(tmp_path / "a", seed=5, n_per_dataset=3, size=(48, 64))
    other = write_demo_data(tmp_path / "b", seed=6, n_per_dataset=3, size=(48, 64))
    cat = load_catalog(cat_path)

    def first(root):
        src = cat.source("synthia").__class__("synthia", cat.datasets["synthia"], root)
        return src.load("train", src.items("train")[0])

    a, b, c = first(paths["synthia"]), first(again["synthia"]), first(other["synthia"])
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.rgb, c.rgb)
    assert (out / "diw" / "DIW_test.csv").read_text() == (tmp_path / "a" / "diw" / "DIW_test.csv").read_text()


def run_cli(argv):
    """Parse with only this part's commands (the full CLI imports every part, torch included)."""
    parser = argparse.ArgumentParser(prog="depthdata")
    sources_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_preview_and_demo_data(tmp_path, capsys):
    assert run_cli(["sources", "list"]) == 0
    listed = capsys.readouterr().out
    for kind in ("nyuv2", "synthia", "diw", "images"):
        assert f"{kind}  (" in listed
    assert "options.layout" in listed and "options.max_depth: 655.0" in listed
    assert run_cli(["demo-data", "--out", str(tmp_path), "-n", "3", "--size", "48", "64"]) == 0
    assert (tmp_path / "catalog.yaml").is_file()
    # offline (no weights here): the catalog builds as written, with the tiny random teacher, and says so
    assert "tiny random teacher" in capsys.readouterr().out
    assert load_catalog(tmp_path / "catalog.yaml").teacher.allow_random_init
    assert run_cli(["sources", "preview", str(tmp_path / "catalog.yaml"), "--dataset", "nyu", "-n", "2",
                    "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "nyu/train/00000  48×64  depth " in text and "nyu/train/00001  48×64" in text
    with pytest.raises(CatalogError, match="no dataset 'nope'"):
        run_cli(["sources", "preview", str(tmp_path / "catalog.yaml"), "--dataset", "nope"])


def test_sources_commands_are_registered_in_the_cli():
    from depthdata.cli import COMMAND_MODULES

    assert "depthdata.cli.sources_cmd" in COMMAND_MODULES
