"""``depthdata demo``: the embedded demo data built end to end through the real flows.

Writes small copies of every source format (``depthdata.demo``), a catalog for them, runs the
``build`` flow (ingest → teacher → lidar → eda) on a local Dask cluster and prints where every
output is. Without real teacher weights on the machine the catalog is switched to the tiny
randomly initialised teacher, and a banner says so: its labels only exercise the pipeline.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from depthdata.errors import DepthdataError
from depthdata.teacher.checkpoint import default_weights_present


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


def run_demo(out: str, seed: int = 0, workers: int | None = None, progress: bool = True,
             student_steps: int = 40) -> int:
    from depthdata.demo import write_demo_catalog, write_demo_data
    from flows.build import BuildFailed, build
    from flows.progress import show_bars
    from flows.runner import prefect_api

    t0 = time.perf_counter()
    out_dir = Path(out).resolve()
    try:  # an unusable --out is the user's to fix: said in one line, before anything starts
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthdataError(f"--out {out}: cannot make the output folder: {exc.strerror or exc}") from None
    print(f"writing demo data under {out_dir / 'data'} ...")
    paths = write_demo_data(out_dir / "data", seed=seed)
    present, model = default_weights_present()
    catalog = write_demo_catalog(out_dir, paths, random_teacher=not present)
    if not present:
        print(BANNER.format(model=model, catalog=catalog), file=sys.stderr)
    report_dir = str(out_dir / "report")
    with prefect_api(), show_bars(progress):
        try:
            summary = build(catalog_path=catalog, report_dir=report_dir, workers=workers)
        except BuildFailed as exc:
            summary = exc.summary
    print(summary.to_text())
    student = None
    if summary.ok and student_steps > 0:
        from flows.student import report_markdown, train_student

        print(f"\ntraining the student ({student_steps} steps), pruning and exporting INT8 ONNX ...")
        with prefect_api():
            student = train_student(store_url=summary.store_url, out_dir=str(out_dir / "student"),
                                    steps=student_steps, progress=progress)
        print(report_markdown(student))
    print("\nOutputs:")
    for name, root in paths.items():
        print(f"  data      {name:<15} {root}")
    print(f"  catalog   {catalog}")
    print(f"  store     {summary.store_url}   (check: depthdata verify {summary.store_url})")
    for s in summary.stages:
        for o in s.outputs:
            print(f"  report    {o}")
    if student is not None:
        for name, path in student["paths"].items():
            print(f"  student   {name:<15} {path}")
        print(f"  student   report          {out_dir / 'student' / 'report.json'}")
    if not present:
        print("  teacher   tiny RANDOM teacher (no real weights on this machine; labels are meaningless)")
    print(f"demo {'complete' if summary.ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if summary.ok else 1
