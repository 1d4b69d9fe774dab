"""Teacher throughput: the project's teacher path vs a bare ``model(**processor(...))`` loop.

Real Depth-Anything-V2-Small architecture with random weights (timing does not depend on the
weights), saved and loaded through the project's loader, at 480×640 on CPU. The project path
is what the stage runs per shard minus the store I/O: batched preprocessing + forward, resize
back to 480×640, per-image [0, 1] normalisation, float16. The baseline is the bare loop one
image at a time without resize-back. TTA (flip + second scale, for ``teacher_conf``) is timed
separately as its own ratio to the plain project path. Peak RSS is recorded. On a CUDA machine
the same script adds a bf16 GPU case.
"""

from __future__ import annotations

import argparse
import resource
import tempfile

import numpy as np
import torch

from benchmarks.harness import alternate, goal, rate, write
from depthdata.teacher.model import load_from_directory
from depthdata.teacher.predict import predict_confidence, predict_normalised, predict_raw
from depthdata.teacher.tiny import save_random_teacher, small_config


def _images(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200
    return np.stack([np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=2,
                    help="images per repeat (about 2.7 s each on 2 idle CPU cores; the recorded run used 4)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats after one warm-up")
    ap.add_argument("--batch-size", type=int, default=4, help="the project path's batch size")
    args = ap.parse_args()
    h, w = 480, 640
    images = _images(args.images, h, w)

    with tempfile.TemporaryDirectory(prefix="bench-teacher-") as tmp:
        save_random_teacher(tmp, small_config(), seed=0)
        teacher = load_from_directory(tmp, device="cpu", model_id="random-init:Depth-Anything-V2-Small")

    def project() -> None:
        norm = predict_normalised(teacher, images, args.batch_size)
        norm.disparity01.astype(np.float16)

    def bare() -> None:
        for img in images:
            with torch.inference_mode():
                teacher.model(**teacher.processor(img, return_tensors="pt"))

    times = alternate({"project": project, "bare": bare}, repeats=args.repeats, warmup=1)
    results = [rate("teacher_path_cpu", times["project"], args.images, "images/s"),
               rate("bare_model_processor_loop_cpu", times["bare"], args.images, "images/s")]
    ratio = results[0]["median"] / results[1]["median"]
    goals = [goal("teacher_path_cpu / bare_model_processor_loop_cpu (throughput; overhead <= 10%)", ratio, ">= 0.9")]

    # TTA cost: the plain path vs the path with teacher_conf (flip + 0.75 scale), side by side
    tta_images = images[:2]

    def plain_small() -> None:
        predict_normalised(teacher, tta_images, args.batch_size)

    def with_tta() -> None:
        norm = predict_normalised(teacher, tta_images, args.batch_size)
        predict_confidence(teacher, tta_images, norm.disparity01, args.batch_size, 0.75, 0.05)

    tta_times = alternate({"plain": plain_small, "tta": with_tta}, repeats=2, warmup=0)
    results += [rate("teacher_path_cpu_2img", tta_times["plain"], len(tta_images), "images/s"),
                rate("teacher_path_cpu_with_tta", tta_times["tta"], len(tta_images), "images/s")]
    tta_ratio = results[3]["median"] / results[2]["median"]
    # reported, not a goal: two extra forward passes (one at 0.75² the pixels) should cost ~2.5×
    results.append({"case": "tta_throughput_ratio", "median": round(tta_ratio, 4), "min": round(tta_ratio, 4),
                    "max": round(tta_ratio, 4), "unit": "with_tta / plain"})

    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory(prefix="bench-teacher-") as tmp:
            save_random_teacher(tmp, small_config(), seed=0)
            gpu = load_from_directory(tmp, device="cuda", model_id="random-init:Depth-Anything-V2-Small")
        gpu_times = alternate({"gpu": lambda: predict_raw(gpu, images, args.batch_size)}, repeats=args.repeats)
        results.append(rate(f"teacher_path_cuda_{str(gpu.dtype).removeprefix('torch.')}", gpu_times["gpu"],
                            args.images, "images/s"))

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    results.append({"case": "peak_rss", "median": round(peak_mib, 1), "min": round(peak_mib, 1),
                    "max": round(peak_mib, 1), "unit": "MiB"})
    write("teacher", {"height": h, "width": w, "images": args.images, "repeats": args.repeats,
                      "batch_size": args.batch_size, "model": "Depth-Anything-V2-Small architecture, random weights",
                      "input_size": teacher.input_size, "threads": torch.get_num_threads(), "tta_images": 2},
          results, goals, transformers=__import__("transformers").__version__)


if __name__ == "__main__":
    main()
