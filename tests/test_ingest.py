import textwrap

import cv2
import numpy as np
import pytest

from depthdata.catalog import load_catalog
from depthdata.errors import CatalogError, StoreError
from depthdata.ingest import stage as ingest
from depthdata.pipeline import open_store
from depthdata.store import Store
from depthdata.store.verify import verify_store

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 100, 50), (10, 20, 30)]


@pytest.fixture
def image_catalog(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i, rgb in enumerate(COLOURS):
        img = np.empty((60, 90, 3), np.uint8)
        img[:] = rgb
        cv2.imwrite(str(root / f"img{i}.png"), img[:, :, ::-1])  # OpenCV writes BGR
    (root / "img5.jpg").write_bytes(b"")  # zero-byte
    (root / "img6.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    cat = tmp_path / "catalog.yaml"
    cat.write_text(textwrap.dedent(
        """
        store: {url: build/s.zarr, shard_size: 3}
        datasets:
          photos:
            kind: images
            root: photos
            resolution: [30, 45]
        """
    ))
    return cat


def test_ingest_writes_good_samples_and_quarantines_bad_ones(image_catalog, tmp_path):
    catalog = load_catalog(image_catalog)
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "photos")
    assert (group.path, len(group), group.num_shards) == ("photos/train", 7, 3)
    results = [ingest.run_shard(group, k, ingest.settings(catalog, "photos")) for k in range(group.num_shards)]
    assert sum(r.written for r in results) == 5
    bad = {q.sample_id: q for r in results for q in r.quarantined}
    assert sorted(bad) == ["photos/train/img5.jpg", "photos/train/img6.png"]
    assert all(q.source_uri.endswith(q.sample_id.rsplit("/", 1)[1]) for q in bad.values())
    store = Store.open(catalog.store_url)
    g = store.group("photos/train")
    for i, colour in enumerate(COLOURS):  # a flat colour survives any resampling exactly
        rgb = g.read(f"photos/train/img{i}.png", ["rgb"])["rgb"]
        assert rgb.shape == (30, 45, 3)
        assert (rgb == np.array(colour, np.uint8)).all()
    rows = g.manifest("ingest").to_pandas().set_index("sample_id")
    assert rows.loc["photos/train/img5.jpg", "status"] == "quarantined"
    for name in ("img5.jpg", "img6.png"):  # the reason names the file and the problem
        reason = rows.loc[f"photos/train/{name}", "reason"]
        assert name in reason and len(reason) > len(str(tmp_path / "photos" / name)) + 2
    assert rows.loc["photos/train/img0.png", "original_height"] == 60
    assert (g.read("photos/train/img6.png", ["rgb"])["rgb"] == 0).all()  # quarantined slot keeps the fill
    assert verify_store(catalog.store_url).ok


def test_rerun_skips_complete_shards_and_redoes_changed_settings(image_catalog, tmp_path):
    catalog = load_catalog(image_catalog)
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "photos")
    first = ingest.run_shard(group, 0, ingest.settings(catalog, "photos"))
    assert not first.skipped
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "photos")  # a re-run plans the same group again
    assert ingest.run_shard(group, 0, ingest.settings(catalog, "photos")).skipped
    assert not ingest.run_shard(group, 1, ingest.settings(catalog, "photos")).skipped
    text = image_catalog.read_text().replace("resolution: [30, 45]", "resolution: [30, 45]\n    resize: center_crop")
    image_catalog.write_text(text)
    changed = load_catalog(image_catalog)
    assert not ingest.run_shard(group, 0, ingest.settings(changed, "photos")).skipped




def _flat(path, h, w, rgb):
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    cv2.imwrite(str(path), img[:, :, ::-1])


def test_native_resolution_keeps_the_first_images_size_and_fits_others_to_it(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    _flat(root / "a.png", 21, 33, (10, 20, 30))  # 1.57 aspect: kept as is
    _flat(root / "b.png", 42, 66, (40, 50, 60))  # same aspect, twice the size
    cat = tmp_path / "catalog.yaml"
    cat.write_text("store: {url: s.zarr, shard_size: 2}\n"
                   "datasets: {pics: {kind: images, root: pics, resolution: native}}\n")
    catalog = load_catalog(cat)
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "pics")
    assert (group.height, group.width) == (21, 33)
    ingest.run_shard(group, 0, ingest.settings(catalog, "pics"))
    rgb = group.array("rgb")[:]
    assert (rgb[0] == (10, 20, 30)).all() and (rgb[1] == (40, 50, 60)).all()


def test_catalog_intrinsics_replace_the_sources_and_are_scaled_to_the_stored_size(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    _flat(root / "a.png", 20, 30, (1, 2, 3))
    cat = tmp_path / "catalog.yaml"
    cat.write_text("store: {url: s.zarr, shard_size: 2}\n"
                   "datasets: {pics: {kind: images, root: pics, resolution: [10, 15],\n"
                   "  intrinsics: {fx: 100, fy: 90, cx: 14.5, cy: 9.5, width: 30, height: 20}}}\n")
    catalog = load_catalog(cat)
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "pics")
    ingest.run_shard(group, 0, ingest.settings(catalog, "pics"))
    row = group.manifest("ingest").to_pylist()[0]
    # half the size: focal lengths halve; pixel centres: c' = (c + 0.5) * 0.5 - 0.5
    assert (row["fx"], row["fy"], row["cx"], row["cy"]) == (50.0, 45.0, 7.0, 4.5)
    cat.write_text(cat.read_text().replace("cx: 14.5", "cx: 31"))
    with pytest.raises(CatalogError, match=r"datasets\.pics\.intrinsics.*principal point \(31.0, 9.5\) lies outside"):
        load_catalog(cat)


def test_a_group_whose_creation_was_cut_short_is_finished_by_the_next_build(image_catalog):
    """A build killed (or cut off from an object store) right after the group's zarr.json was
    written, before its plan: the next build finishes the group instead of refusing it as built
    "with other settings" (every value None) for ever."""
    catalog = load_catalog(image_catalog)
    store = open_store(catalog, create=True)
    store.root.require_group("photos").require_group("train")  # all that reached the store
    [group] = ingest.prepare(open_store(catalog, create=True), catalog, "photos")
    assert (len(group), group.num_shards, group.height, group.width) == (7, 3, 30, 45)
    assert sum(ingest.run_shard(group, k, ingest.settings(catalog, "photos")).written for k in range(3)) == 5
    assert verify_store(catalog.store_url).ok
