"""Demo data: exact rendered depth, deterministic by seed, readable through its own catalog."""

import argparse

import numpy as np
import pytest

from depthdata.catalog import load_catalog
from depthdata.cli import sources_cmd
from depthdata.errors import CatalogError
from depthdata.demo import write_demo_catalog, write_demo_data
from depthdata.demo.data import sample_pair
from depthdata.demo.render import Camera, Lighting, Scene, _box, _sphere, intrinsics_from_fov, render
from depthdata.demo.scenes import VIEWS, random_render, random_view, room_scene, street_scene
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


def test_render_depth_is_exact_for_a_pitched_and_rolled_camera():
    """A wall at z = 3 m (rest frame) seen by a camera pitched down by p: the ray through pixel
    row v has camera direction (x, y, 1), y = (v − cy)/fy, whose rest-frame z is cos p − y·sin p,
    so the hit is at t = 3 / (cos p − y·sin p), and t is the pixel's z-depth."""
    intr = Intrinsics(60.0, 60.0, 39.5, 29.5)
    s = Scene()
    s.add(_box((100, 100, 0.1), (0, 0, 3.05)), (0.5, 0.5, 0.5), ("noise", 0.5))
    p = 0.2
    r = render(s, intr, (60, 80), pitch=p)
    v = np.arange(60)
    y = (v - intr.cy) / intr.fy
    np.testing.assert_allclose(r.depth[:, 40], 3.0 / (np.cos(p) - y * np.sin(p)), rtol=1e-4)
    # a roll turns the image about the optical axis: the centre pixel sees the same depth
    rolled = render(s, intr, (60, 80), pitch=p, roll=0.3)
    assert rolled.depth[30, 40] == pytest.approx(3.0 / (np.cos(p) - (30 - intr.cy) / intr.fy * np.sin(p) * np.cos(0.3)
                                                        - (40 - intr.cx) / intr.fx * np.sin(p) * np.sin(0.3)), rel=1e-4)
    # rotations keep directions' lengths, so the camera axis stays unit length
    assert np.linalg.norm(Camera(intr, 0.4, p, 0.3).rotation() @ [0, 0, 1]) == pytest.approx(1.0)


def test_intrinsics_from_fov():
    intr = intrinsics_from_fov((60, 80), 90.0)
    assert intr.fx == pytest.approx(40.0) and intr.fy == intr.fx and (intr.cx, intr.cy) == (39.5, 29.5)


def test_low_light_is_dim_noisy_and_seeded():
    s = room_scene(np.random.default_rng(0), cam_h=1.4, layout="box")
    intr = intrinsics_from_fov((48, 64), 70.0)
    day = render(s, intr, (48, 64))
    night = Lighting(exposure=0.2, noise=4.0)
    a = render(s, intr, (48, 64), lighting=night, rng=np.random.default_rng(1))
    b = render(s, intr, (48, 64), lighting=night, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, day.depth)  # light changes pixels, never depth
    assert a.rgb.mean() < 0.35 * day.rgb.mean()
    with pytest.raises(ValueError, match="rng"):
        render(s, intr, (48, 64), lighting=night)


def test_random_scenes_vary_layout_camera_and_light():
    rng = np.random.default_rng(0)
    cams = [random_view(rng, "room", (48, 64)) for _ in range(50)]
    lo, hi = VIEWS["room"].pitch
    pitches = [c.pitch for c, _ in cams]
    assert lo <= min(pitches) < max(pitches) <= hi and max(pitches) - min(pitches) > 0.3
    fx = [c.intrinsics.fx for c, _ in cams]
    assert max(fx) / min(fx) > 1.4  # fields of view from 50° to 85°
    counts = {len(room_scene(np.random.default_rng(i)).meshes) for i in range(12)}
    assert len(counts) > 4  # furniture counts vary
    assert len({len(street_scene(np.random.default_rng(i)).meshes) for i in range(6)}) > 3
    for kind in ("room", "street"):
        r = random_render(np.random.default_rng(3), kind, (48, 64))
        again = random_render(np.random.default_rng(3), kind, (48, 64))
        np.testing.assert_array_equal(r.rgb, again.rgb)
        d = r.depth[np.isfinite(r.depth)]
        assert d.size > 0.3 * r.depth.size and d.min() > 0
        # rooms are enclosed; streets have sky
        assert np.isfinite(r.depth).all() if kind == "room" else np.isnan(r.depth).any() or d.max() > 20


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
    # offline (no weights here): the catalog builds as written, with the demo teacher, and says so
    out = capsys.readouterr().out
    assert "DEMO TEACHER" in out and "not Depth Anything V2" in out
    teacher = load_catalog(tmp_path / "catalog.yaml").teacher
    assert teacher.allow_demo_teacher and not teacher.allow_random_init
    assert run_cli(["sources", "preview", str(tmp_path / "catalog.yaml"), "--dataset", "nyu", "-n", "2",
                    "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "nyu/train/00000  48×64  depth " in text and "nyu/train/00001  48×64" in text
    with pytest.raises(CatalogError, match="no dataset 'nope'"):
        run_cli(["sources", "preview", str(tmp_path / "catalog.yaml"), "--dataset", "nope"])


def test_sources_commands_are_registered_in_the_cli():
    from depthdata.cli import COMMAND_MODULES

    assert "depthdata.cli.sources_cmd" in COMMAND_MODULES
