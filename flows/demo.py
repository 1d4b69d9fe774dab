"""``depthdata demo``: the embedded demo data built end to end through the real flows.

Writes small copies of every source format (``depthdata.demo``), a catalog for them, runs the
``build`` flow (ingest → label → lidar → eda) on a local Dask cluster and prints where every
output is. Without real teacher weights on the machine the catalog is switched to the tiny
randomly initialised teacher, and a banner says so: its labels only exercise the pipeline.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

#: samples per shard in the demo store: small, so that the demo's few samples make enough
#: shards to keep every worker busy (a real build sizes shards to ~96 MiB)
DEMO_SHARD_SIZE = 4

BANNER = """\
==========================================================================================
  NO TEACHER WEIGHTS FOUND for {model!r} on this machine.
  The demo uses a TINY RANDOMLY INITIALISED teacher of the same architecture: its
  pseudo-labels (and the LiDAR simulated from them) are MEANINGLESS and only exercise the
  pipeline. For real labels, put a save_pretrained checkpoint on this machine and set
  teacher.model to its folder in {catalog}, or fill the Hugging Face cache, then run
  `depthdata build {catalog}` again.
==========================================================================================
"""


def teacher_weights_present(catalog_path: str) -> tuple[bool, str]:
    """Whether the catalog's teacher weights are on this machine, and the model named."""
    from depthdata.catalog import load_catalog
    from depthdata.teacher.model import resolve_checkpoint

    cat = load_catalog(catalog_path)
    return resolve_checkpoint(cat.teacher) is not None, cat.teacher.model


def prepare_catalog(catalog_path: str, random_teacher: bool) -> None:
    """Set the demo's shard size and, when asked, the tiny random teacher, in the catalog."""
    path = Path(catalog_path)
    header = "".join(line + "\n" for line in path.read_text().splitlines() if line.startswith("#"))
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("store", {})["shard_size"] = DEMO_SHARD_SIZE
    if random_teacher:
        doc.setdefault("teacher", {})["allow_random_init"] = True
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))


def run_demo(out: str, seed: int = 0, workers: int | None = None, progress: bool = True) -> int:
    from depthdata.cli.build_cmd import _progress
    from depthdata.demo import write_demo_catalog, write_demo_data
    from flows.build import BuildFailed, build, with_runner
    from flows.runner import prefect_api

    t0 = time.perf_counter()
    out_dir = Path(out).resolve()
    print(f"writing demo data under {out_dir / 'data'} ...")
    paths = write_demo_data(out_dir / "data", seed=seed)
    catalog = write_demo_catalog(out_dir, paths)
    present, model = teacher_weights_present(catalog)
    if not present:
        print(BANNER.format(model=model, catalog=catalog), file=sys.stderr)
    prepare_catalog(catalog, random_teacher=not present)
    report_dir = str(out_dir / "report")
    flow_obj = with_runner(build, None, workers)
    with prefect_api(), _progress(progress):
        try:
            summary = flow_obj(catalog_path=catalog, report_dir=report_dir)
        except BuildFailed as exc:
            summary = exc.summary
    print(summary.to_text())
    print("\nOutputs:")
    for name, root in paths.items():
        print(f"  data      {name:<15} {root}")
    print(f"  catalog   {catalog}")
    print(f"  store     {summary.store_url}   (check: depthdata verify {summary.store_url})")
    for s in summary.stages:
        for o in s.outputs:
            print(f"  report    {o}")
    if not present:
        print("  teacher   tiny RANDOM teacher (no real weights on this machine; labels are meaningless)")
    print(f"demo {'complete' if summary.ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if summary.ok else 1
