"""Finding a teacher checkpoint and its lineage without loading it: by Hugging Face id (in the
local cache, offline unless ``allow_download``) or local directory.

Light on purpose (hashlib and huggingface_hub, no torch or transformers): a build's planning
decides from the manifest which teacher shards are done, and for that it needs the weights'
SHA-256, not the model. Lineage: the Hub commit (or ``local``) and the SHA-256 of the weights —
for a single ``model.safetensors`` exactly what ``sha256sum`` prints; for sharded weights the
SHA-256 of the lines ``<file name>:<sha256>`` in name order.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from depthdata.errors import DepthdataError
from depthdata.teacher.config import TeacherConfig

#: files a checkpoint needs; weights in any other format are refused
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors"]
#: the model id of the demo teacher shipped with the package (reserved: never looked up on the Hub)
DEMO_TEACHER_ID = "depthdata/demo-teacher"
#: where the demo teacher's checkpoint lives inside the package
DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent / "demo_weights"
#: a checkpoint directory's lineage record; when present, the weights must match its SHA-256
LINEAGE_FILE = "lineage.json"


class TeacherError(DepthdataError):
    """The teacher cannot be loaded or run (missing or corrupt weights, unusable device, ...)."""


def weights_sha256(directory: str | Path) -> str:
    """Content hash of the ``*.safetensors`` files in ``directory`` (see the module doc)."""
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise TeacherError(f"{directory}: no *.safetensors weights")
    digests = []
    for f in files:
        with open(f, "rb") as fh:
            digests.append((f.name, hashlib.file_digest(fh, "sha256").hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in digests).encode()).hexdigest()


def check_lineage(directory: str | Path, sha: str) -> None:
    """Refuse weights whose SHA-256 differs from the one the directory's ``lineage.json`` records:
    metrics and provenance in that file describe those exact bytes, not edited or half-copied
    ones. A directory without the file (any ``save_pretrained`` output) passes."""
    path = Path(directory) / LINEAGE_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get("weights_sha256")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise TeacherError(f"{path}: unreadable lineage record ({exc})") from None
    if recorded != sha:
        raise TeacherError(f"{directory}: the weights' SHA-256 {sha} does not match {recorded} recorded in {path}; "
                           "the weights were changed or damaged after training (retrain them, e.g. `depthdata teacher "
                           "train-demo`, or restore the file)")


def missing_weights_message(model: str, revision: str | None, why: str) -> str:
    rev = f" (revision {revision})" if revision else ""
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"teacher weights for {model!r}{rev} are not on this machine ({why}). Provide them one of these ways: "
        f"(1) a local directory written with save_pretrained (config.json, preprocessor_config.json, "
        f"model.safetensors) and set teacher.model to its path; "
        f"(2) fill the Hugging Face cache under HF_HOME={hf_home} on a machine with network "
        f"(`hf download {model}`) and copy it here; "
        f"(3) set teacher.allow_download: true where the Hub is reachable. "
        f"For an offline demo, teacher.allow_demo_teacher: true uses the demo teacher shipped with depthdata "
        f"(trained on procedural scenes), or teacher.allow_random_init: true a tiny random model"
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.sep + os.sep in model or model.count("/") > 1


def resolve_checkpoint(config: TeacherConfig) -> tuple[Path, str] | None:
    """The local directory holding ``config.model`` and its revision, or ``None`` if absent.

    :data:`DEMO_TEACHER_ID` names the demo teacher inside the package (revision ``packaged``)."""
    if config.model == DEMO_TEACHER_ID:
        if not (DEMO_WEIGHTS_DIR / "model.safetensors").is_file():
            raise TeacherError(f"{DEMO_WEIGHTS_DIR}: the demo teacher's weights are missing from this installation "
                               "(`depthdata teacher train-demo` writes them)")
        return DEMO_WEIGHTS_DIR, "packaged"
    path = Path(config.model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TeacherError(f"{path}: teacher.model must be a checkpoint directory, not a file")
        return path, "local"
    if _looks_like_path(config.model):
        raise TeacherError(f"{path}: no such teacher checkpoint directory")
    try:
        snap = snapshot_download(config.model, revision=config.revision, allow_patterns=CHECKPOINT_PATTERNS,
                                 local_files_only=True)
    except HFValidationError as exc:
        raise TeacherError(f"teacher.model {config.model!r} is neither an existing directory nor a valid "
                           f"Hugging Face id: {exc}") from None
    except LocalEntryNotFoundError:
        if not config.allow_download:
            return None
        try:
            snap = snapshot_download(config.model, revision=config.revision, allow_patterns=CHECKPOINT_PATTERNS)
        except Exception as exc:  # network, auth, missing repo: all mean "no weights"; say which
            raise TeacherError(missing_weights_message(config.model, config.revision,
                                                        f"download failed: {type(exc).__name__}: {exc}")) from None
    return Path(snap), Path(snap).name


def checkpoint_lineage(config: TeacherConfig) -> dict[str, Any]:
    """The lineage a loaded teacher of ``config`` reports (:meth:`Teacher.lineage`), without
    loading it: what the teacher stage hashes into its manifest parts with the settings."""
    found = resolve_checkpoint(config)
    model_id = config.model
    if found is None and config.allow_demo_teacher:
        found, model_id = resolve_checkpoint(demo_config(config)), DEMO_TEACHER_ID
    if found is not None:
        directory, revision = found
        sha = weights_sha256(directory)
        check_lineage(directory, sha)
        return {"teacher_id": model_id, "teacher_revision": revision, "weights_sha256": sha,
                "teacher_random_init": False}
    if not config.allow_random_init:
        raise TeacherError(missing_weights_message(config.model, config.revision, "not in the Hugging Face cache"))
    return {"teacher_id": random_init_id(config), "teacher_revision": "random",
            "weights_sha256": tiny_weights_sha256(config.random_init_seed), "teacher_random_init": True}


def tiny_weights_sha256(seed: int) -> str:
    """SHA-256 of the tiny random teacher's weights for ``seed``. Making them imports torch and
    transformers and builds the model (~5 s), which every planning of a random-teacher build
    (the offline demo) paid, also with nothing to do; the hash depends only on the seed, the
    tiny model's code and the torch / transformers versions, so it is kept in a small file under
    ``$XDG_CACHE_HOME/depthdata`` keyed by all of them (any change misses the key)."""
    import json
    from importlib import metadata

    tiny = Path(__file__).with_name("tiny.py")
    key = hashlib.sha256(json.dumps([seed, metadata.version("torch"), metadata.version("transformers"),
                                     hashlib.sha256(tiny.read_bytes()).hexdigest()]).encode()).hexdigest()[:32]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "depthdata" / f"tiny-teacher-{key}.sha256"
    try:
        sha = cache.read_text().strip()
        if len(sha) == 64:
            return sha
    except OSError:  # not cached yet (or unreadable): compute it below
        pass
    from depthdata.teacher.tiny import save_tiny_teacher

    with tempfile.TemporaryDirectory(prefix="depthdata-tiny-teacher-") as tmp:
        save_tiny_teacher(tmp, seed=seed)
        sha = weights_sha256(tmp)
    try:  # written whole, then renamed: a reader never sees half a hash
        cache.parent.mkdir(parents=True, exist_ok=True)
        part = cache.with_suffix(f".{os.getpid()}.part")
        part.write_text(sha)
        os.replace(part, cache)
    except OSError:
        pass  # a read-only home: the next planning computes it again
    return sha


def demo_config(config: TeacherConfig) -> TeacherConfig:
    """``config`` with the demo teacher as its model (the fallback of ``allow_demo_teacher``)."""
    return config.model_copy(update={"model": DEMO_TEACHER_ID, "revision": None})


def random_init_id(config: TeacherConfig) -> str:
    return f"random-init:tiny(seed={config.random_init_seed})"


def default_weights_present() -> tuple[bool, str]:
    """Whether the default teacher's weights are on this machine (a local folder or the Hugging
    Face cache; nothing is downloaded), and the model named."""
    from depthdata.teacher.config import TeacherConfig

    config = TeacherConfig()
    return resolve_checkpoint(config) is not None, config.model
