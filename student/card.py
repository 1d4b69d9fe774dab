"""Model card of an export (``model_card.json`` + ``model_card.md``), and its check.

Written by ``depthdata student export`` beside the files it describes (and by
``depthdata student card`` for an existing export folder). Sections:

* ``architecture``: registry name, design source, :class:`~student.arch.StudentConfig`;
  ``params`` (every parameter of the deployed graph) and ``macs`` (:func:`student.arch.count_macs`,
  batch 1 at ``input_size``);
* ``artefacts``: per file (the ``.safetensors`` weights, each ``.onnx`` / ``.pte``): format,
  runtime, precision, bytes on disk and SHA-256;
* ``latency`` (when measured): median ms per artefact, batch 1, with threads and repeats (with
  ``--openvino`` also ``<file>.onnx (openvino)``: the file in OpenVINO) — this machine's
  numbers, not a phone's;
* ``metrics``: per artefact, :func:`student.evaluate.evaluate` on the held-out groups, with the
  protocols' definitions (:data:`student.evaluate.PROTOCOLS`) and the sample limit;
* ``lineage``: store URL and version, the training groups (from the weights' metadata) with
  their sample counts, the teacher id(s) and weights SHA-256 read from the teacher stage's
  manifest, the LiDAR beam-model preset(s) and per-sample seeds from the lidar stage's, the
  package version;
* ``training``: the resolved training settings (``config.yaml`` beside the checkpoint);
* ``steps``: pruning (``prune.json`` of the folder the model came from) and quantization steps.

:func:`check` recomputes what can be recomputed from the files — parameters and MACs from the
weights, bytes and SHA-256 of every artefact — and lists every disagreement (latency and
metrics are measurements, re-measured only by re-running).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from depthdata.errors import DepthdataError

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".pte": "executorch"}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artefact(path: str | Path, root: Path, runtime: str, precision: str, **extra: Any) -> dict:
    """One file's entry: path relative to the card's folder, format, runtime, precision, bytes, SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise DepthdataError(f"{path}: artefact for the model card not found")
    rel = Path(path).resolve()
    if rel.is_relative_to(root.resolve()):  # a file outside the card's folder keeps its absolute path
        rel = rel.relative_to(root.resolve())
    return {"path": str(rel), "format": FORMATS.get(path.suffix, path.suffix.lstrip(".")), "runtime": runtime,
            "precision": precision, "bytes": path.stat().st_size, "sha256": sha256(path), **extra}


def package_version() -> str:
    try:
        return metadata.version("depthdata")
    except metadata.PackageNotFoundError:
        import depthdata

        return depthdata.__version__


def _distinct(table, column: str) -> list:
    if table is None or column not in table.column_names:
        return []
    return sorted({v for v in table.column(column).to_pylist() if v is not None})


def lineage(store_url: str | None, groups: Sequence[str] | None, version: int | None) -> dict:
    """Where the training data came from (module doc); ``{}`` fields when the store is unknown."""
    out: dict[str, Any] = {"store": store_url, "store_version": version, "package_version": package_version(),
                           "groups": {}}
    if not store_url:
        return out
    from depthdata.store import Store, select_groups

    store = Store.open(store_url, version=version)
    for name in select_groups(store, groups):
        g = store.group(name)
        teacher = g.manifest("teacher", ["teacher_id", "weights_sha256"]) if "teacher" in g.stages() else None
        lidar = g.manifest("lidar", ["beam_model", "seed"]) if "lidar" in g.stages() else None
        seeds = _distinct(lidar, "seed")
        out["groups"][name] = {
            "samples": len(g), "fields": g.fields(),
            "teacher": [{"teacher_id": t, "weights_sha256": s} for t, s in
                        sorted({(r.get("teacher_id"), r.get("weights_sha256")) for r in teacher.to_pylist()})
                        if t is not None] if teacher is not None and "teacher_id" in teacher.column_names else [],
            "lidar_presets": _distinct(lidar, "beam_model"),
            "lidar_sample_seeds": {"count": len(seeds), "min": seeds[0], "max": seeds[-1]} if seeds else None,
        }
    return out


def model_info(model_path: str | Path) -> dict:
    """What the weights file says about itself: config, training lineage metadata, resolved
    training settings and pruning report from the checkpoint's folders when present."""
    model_path = Path(model_path)
    with safe_open(str(model_path), framework="pt") as f:
        meta = f.metadata() or {}
    trained_on = json.loads(meta["trained_on"]) if "trained_on" in meta else None
    config_file = model_path.parent / "config.yaml"
    training = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    prune_file = model_path.parent.parent / "prune.json"
    pruning = json.loads(prune_file.read_text()) if prune_file.is_file() else None
    return {"trained_on": trained_on, "training": training, "pruning": pruning}


def sizes(model_path: str | Path, input_size: tuple[int, int]) -> dict:
    """Parameters and MACs (batch 1 at ``input_size``) recomputed from the weights file."""
    from student.arch import count_macs, count_params
    from student.checkpoint import load_model

    model = load_model(model_path)
    return {"params": count_params(model), "macs": count_macs(model, tuple(input_size)),
            "input_size": list(input_size)}


def build_card(model_path: str | Path, out_dir: str | Path, artefacts: Sequence[dict], input_size: tuple[int, int],
               eps: float, store_url: str | None = None, held_out: Sequence[str] | None = None,
               metrics: Mapping[str, Any] | None = None, metric_limit: int | None = None,
               latency: Mapping[str, Any] | None = None, quantization: Sequence[dict] = (),
               extra: Mapping[str, Any] | None = None) -> dict:
    """The card's dictionary (module doc). ``artefacts`` come from :func:`artefact`; ``metrics``
    and ``latency`` are keyed by artefact path; ``quantization`` lists the quantization steps."""
    from student import evaluate as ev
    from student.checkpoint import load_model

    model = load_model(model_path)
    info = model_info(model_path)
    trained_on = info["trained_on"] or {}
    store = trained_on.get("store", store_url)
    steps = ([{"kind": "pruning", **info["pruning"]}] if info["pruning"] else []) + [
        {"kind": "quantization", **q} for q in quantization]
    return {
        "card_version": 1,
        "architecture": {"name": model.name, "source": model.source, "config": json.loads(model.config.to_json()),
                         "output": model.output, "inputs": list(model.inputs)},
        **sizes(model_path, input_size),
        "export": {"eps": model.shift.what if getattr(model, "shift", None) is not None
                   else eps, "io": "input B×3×H×W float RGB 0–255; output depth B×1×H×W relative in (0, 1], "
                   "near = small" if model.output == "disparity" else "inputs RGB 0–255 + sparse metres; depth metres"},
        "artefacts": list(artefacts),
        "latency": dict(latency) if latency else None,
        "metrics": {"held_out_groups": list(held_out) if held_out else None, "limit_per_group": metric_limit,
                    "protocols": ev.PROTOCOLS, "by_artefact": dict(metrics) if metrics else None},
        "lineage": lineage(store, trained_on.get("groups"), trained_on.get("version")) | (
            {"store_used_for_export": store_url} if store_url and store_url != store else {}),
        "training": info["training"],
        "steps": steps,
        **(dict(extra) if extra else {}),
    }


def _fmt(n: float | None, unit: str = "") -> str:
    if n is None:
        return "—"
    if isinstance(n, float):
        return f"{n:.4g}{unit}"
    return f"{n:,}{unit}"


def render_markdown(card: Mapping[str, Any]) -> str:
    a = card["architecture"]
    lines = [f"# Model card: {a['name']}", "", f"Design: {a['source']}.", "",
             f"- parameters: **{card['params']:,}**; MACs at {card['input_size'][0]}×{card['input_size'][1]}, "
             f"batch 1: **{card['macs'] / 1e9:.4f} G** ({card['macs']:,})",
             f"- I/O: {card['export']['io']} (eps {card['export']['eps']})",
             f"- config: `{json.dumps(a['config'], sort_keys=True)}`", "", "## Files", "",
             "| file | format | runtime | precision | bytes | SHA-256 |", "|---|---|---|---|---|---|"]
    for f in card["artefacts"]:
        lines.append(f"| `{f['path']}` | {f['format']} | {f['runtime']} | {f['precision']} | {f['bytes']:,} | "
                     f"`{f['sha256'][:16]}…` |")
    lat = card.get("latency")
    lines += ["", "## Latency", ""]
    if lat:
        lines += [f"Median of {lat['repeats']} runs, batch 1, {lat['threads']} threads, on this machine "
                  f"({lat['machine']}); not a phone's latency.", "", "| file | ms |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in lat["median_ms"].items()]
    else:
        lines.append("Not measured (`--latency` measures it).")
    m = card["metrics"]
    lines += ["", "## Held-out metrics", ""]
    if m["by_artefact"]:
        lines.append(f"Groups {', '.join(m['held_out_groups'] or ['all'])}, at most {m['limit_per_group'] or 'all'} "
                     "samples each. Protocols:")
        lines += [f"- `{k}`: {v}" for k, v in m["protocols"].items()]
        lines += ["", "| file | group | protocol | AbsRel | δ1 |", "|---|---|---|---|---|"]
        for path, groups in m["by_artefact"].items():
            for g, protos in groups.items():
                for p, vals in protos.items():
                    if isinstance(vals, dict) and "abs_rel" in vals:
                        lines.append(f"| `{path}` | {g} | {p} | {_fmt(vals['abs_rel'])} | {_fmt(vals.get('delta1'))} |")
    else:
        lines.append("Not evaluated (`--held-out` groups evaluate it).")
    lin = card["lineage"]
    lines += ["", "## Data lineage", "", f"- store: `{lin['store']}` version {lin['store_version']}",
              f"- package: depthdata {lin['package_version']}"]
    for g, d in lin["groups"].items():
        teachers = "; ".join(f"{t['teacher_id']} (sha256 `{t['weights_sha256']}`)" for t in d["teacher"]) or "none"
        seeds = d["lidar_sample_seeds"]
        lines.append(f"- `{g}`: {d['samples']} samples; teacher {teachers}; LiDAR preset(s) "
                     f"{', '.join(d['lidar_presets']) or 'none'}"
                     + (f", {seeds['count']} per-sample seeds in [{seeds['min']}, {seeds['max']}]" if seeds else ""))
    lines += ["", "## Training", ""]
    lines.append(f"```yaml\n{yaml.safe_dump(card['training'], sort_keys=True).strip()}\n```" if card["training"]
                 else "No training settings found beside the weights.")
    lines += ["", "## Steps applied", ""]
    if card["steps"]:
        for s in card["steps"]:
            detail = {k: v for k, v in s.items() if k not in ("kind", "steps", "start")}
            lines.append(f"- {s['kind']}: `{json.dumps(detail, default=str)[:400]}`")
    else:
        lines.append("None (the model is exported as trained).")
    return "\n".join(lines) + "\n"


def write_card(card: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / CARD_JSON, out / CARD_MD
    js.write_text(json.dumps(card, indent=2, default=str) + "\n")
    md.write_text(render_markdown(card))
    return js, md


def check(card_path: str | Path) -> list[str]:
    """Disagreements between a card and its files (module doc); empty when every number holds."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    root = card_path.parent
    problems = []
    weights = [a for a in card["artefacts"] if a["format"] == "safetensors"]
    if weights:
        got = sizes(root / weights[0]["path"], tuple(card["input_size"]))
        for key in ("params", "macs"):
            if got[key] != card[key]:
                problems.append(f"{key}: card {card[key]}, weights {got[key]}")
    for a in card["artefacts"]:
        path = root / a["path"]
        if not path.is_file():
            problems.append(f"{a['path']}: missing")
            continue
        if path.stat().st_size != a["bytes"]:
            problems.append(f"{a['path']}: card {a['bytes']} bytes, file {path.stat().st_size}")
        if sha256(path) != a["sha256"]:
            problems.append(f"{a['path']}: SHA-256 differs")
    return problems
