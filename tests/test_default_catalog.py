from pathlib import Path

import yaml

from depthdata.catalog import load_catalog
from depthdata.demo import write_demo_catalog

REPO = Path(__file__).resolve().parents[1]


def test_default_catalog_is_valid_and_matches_what_the_demo_writes(tmp_path):
    default = load_catalog(REPO / "catalog.yaml", check_roots=False)
    names = {"nyu": "nyu_v2", "nyu_densedepth": "nyu_densedepth", "synthia": "synthia_rand", "diw": "diw",
             "photos": "photos"}
    demo_path = write_demo_catalog(tmp_path, {k: str(tmp_path / "data" / v) for k, v in names.items()},
                                   demo_teacher=True)
    demo = yaml.safe_load(Path(demo_path).read_text())
    committed = yaml.safe_load((REPO / "catalog.yaml").read_text())
    for ds in committed["datasets"].values():
        ds["root"] = ds["root"].removeprefix("demo-out/")
    committed["store"]["url"] = committed["store"]["url"].removeprefix("demo-out/")
    for doc in (demo, committed):
        for ds in doc["datasets"].values():
            ds["resolution"] = list(ds["resolution"])
    assert committed == demo
    assert default.store_url == str(REPO / "demo-out" / "demo.zarr")
    assert default.teacher.allow_demo_teacher and not default.teacher.allow_random_init
