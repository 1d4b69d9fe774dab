"""``depthdata demo``: the embedded demo data built end to end through the real flows.

Writes small copies of every source format (``depthdata.demo``), a catalog for them, runs the
``build`` flow (ingest → teacher → lidar → eda) on a local Dask cluster and prints where every
output is. Without real teacher weights on the machine the build falls back to the demo teacher
shipped with depthdata (trained on procedural scenes, not Depth Anything V2), and a banner says
so.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from depthdata.errors import DepthdataError
from depthdata.teacher.checkpoint import DEMO_TEACHER_ID, DEMO_WEIGHTS_DIR, LINEAGE_FILE, default_weights_present


BANNER = """\
==========================================================================================
  NO TEACHER WEIGHTS FOUND for {model!r} on this machine.
  The demo uses the DEMO TEACHER shipped with depthdata ({demo_id}): a small Depth
  Anything trained on procedurally rendered rooms and streets. It is NOT Depth Anything V2:
  its pseudo-labels are depth of a toy world (held-out on rendered scenes: AbsRel {abs_rel},
  delta1 {delta1}), good enough to show the pipeline working, not to train a real student.
  For real labels, put a save_pretrained checkpoint on this machine and set teacher.model
  to its folder in {catalog}, or fill the Hugging Face cache, then run
  `depthdata build {catalog}` again.
==========================================================================================
"""


def banner(model: str, catalog: str) -> str:
    """The banner shown when the demo teacher stands in for ``model``, with its recorded held-out
    metrics (from its lineage file)."""
    try:
        summary = json.loads((DEMO_WEIGHTS_DIR / LINEAGE_FILE).read_text())["heldout"]["summary"]["all"]
        abs_rel, delta1 = f"{summary['abs_rel']:.3f}", f"{summary['delta1']:.3f}"
    except (OSError, KeyError, ValueError):
        abs_rel = delta1 = "unknown"
    return BANNER.format(model=model, catalog=catalog, demo_id=DEMO_TEACHER_ID, abs_rel=abs_rel, delta1=delta1)


def run_demo(out: str, seed: int = 0, workers: int | None = None, progress: bool = True,
             student_steps: int = 40) -> int:
    from flows.local_server import start_early

    # the temporary Prefect server (when no PREFECT_API_URL is set) starts while the demo data
    # are written and the flows imported (flows/local_server.py)
    server = start_early()
    try:
        return _run_demo(out, seed, workers, progress, student_steps, server)
    finally:
        if server is not None:
            server.stop()


def _run_demo(out: str, seed: int, workers: int | None, progress: bool, student_steps: int, server) -> int:
    t0 = time.perf_counter()
    out_dir = Path(out).resolve()
    try:  # an unusable --out is the user's to fix: said in one line, before anything starts
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthdataError(f"--out {out}: cannot make the output folder: {exc.strerror or exc}") from None
    from depthdata.demo import write_demo_catalog, write_demo_data
    from flows.build import BuildFailed, build
    from flows.progress import show_bars
    from flows.runner import prefect_api

    print(f"writing demo data under {out_dir / 'data'} ...")
    paths = write_demo_data(out_dir / "data", seed=seed)
    present, model = default_weights_present()
    catalog = write_demo_catalog(out_dir, paths, demo_teacher=True)
    if not present:
        print(banner(model, catalog), file=sys.stderr)
    report_dir = str(out_dir / "report")
    student = None
    with prefect_api(server):  # one server for the build and the student
        with show_bars(progress):
            try:
                summary = build(catalog_path=catalog, report_dir=report_dir, workers=workers)
            except BuildFailed as exc:
                summary = exc.summary
        print(summary.to_text())
        if summary.ok and student_steps > 0:
            from flows.student import report_markdown, train_student

            print(f"\ntraining the student ({student_steps} steps), pruning and exporting INT8 ONNX ...")
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
        print(f"  teacher   DEMO teacher {DEMO_TEACHER_ID} (trained on procedural scenes, not Depth Anything V2; "
              "no real weights on this machine)")
    print(f"demo {'complete' if summary.ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if summary.ok else 1
