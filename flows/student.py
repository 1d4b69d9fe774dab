"""The ``student`` flow: distil a compact student from a built store, prune it, export INT8.

Thin over :func:`student.pipeline.run`; it runs in the flow process (training is one job, not
shard-parallel) and publishes the student's report as a markdown artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact


def report_markdown(result: dict[str, Any]) -> str:
    lines = ["# depthdata student", "", f"store `{result['store']}`, groups {', '.join(result['groups'])}", "",
             "| model | group | AbsRel vs GT (affine-invariant) | δ1 (affine-invariant) | AbsRel vs GT (contest) "
             "| AbsRel vs teacher | WHDR |", "|---|---|---|---|---|---|---|"]

    def cell(d: dict, key: str) -> str:
        return f"{d[key]:.3f}" if key in d else "–"

    for model, per_group in result["eval"].items():
        for group, ev in per_group.items():
            affine, contest = ev.get("affine_invariant") or {}, ev.get("contest") or {}
            teacher = ev.get("teacher") or {}
            lines.append(f"| {model} | {group} | {cell(affine, 'abs_rel')} | {cell(affine, 'delta1')} "
                         f"| {cell(contest, 'abs_rel')} | {cell(teacher, 'abs_rel')} | {cell(ev, 'whdr')} |")
    shift = result.get("shift")
    if shift:
        lines += ["", f"Disparity → depth: a per-image shift fitted on {', '.join(shift['groups'])} "
                  f"({shift['images']} images): contest AbsRel {shift['before']:.3f} with the constant eps → "
                  f"{shift['after']:.3f}."]
    lines += ["", "| file | path |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in result["paths"].items()]
    return "\n".join(lines)


@flow(name="depthdata-student", flow_run_name="student-{out_dir}", validate_parameters=True)
def train_student(store_url: str, out_dir: str, steps: int = 40, prune_ratio: float = 0.3,
                  progress: bool = True) -> dict[str, Any]:
    """Train → prune → fine-tune → export FP32 + INT8 ONNX → evaluate; returns the report."""
    from student.pipeline import run

    result = run(store_url, out_dir, steps=steps, prune_ratio=prune_ratio, progress=progress)
    create_markdown_artifact(report_markdown(result), key="depthdata-student", description="student report")
    return result
