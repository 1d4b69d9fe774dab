"""Teacher stage on a GPU: the stage's path vs a bare bf16 ``model(**processor(...))`` loop.

Issue #17's GPU check. The Depth-Anything-V2-Small architecture with random weights (timing does
not depend on the weights), saved and loaded through the project's loader onto CUDA (bf16, as
``teacher.device: auto`` picks), 480×640 images, batch sizes 1-32. The project path is what the
stage runs per shard minus the store I/O: the processor (on the GPU, given the batch as one uint8
tensor: ``depthdata.teacher.predict.pixel_values``), the forward pass, the resize back to
480×640, per-image [0, 1] normalisation, float16. The baseline is the bare loop a user would
write: the processor and the forward pass in bf16 on the same GPU, same batch size, no resize
back. Goal: the project path's best images/s ≥ 0.9× the bare loop's best.

Needs a CUDA GPU: without one it says so and writes nothing (CI and the 2-core machine have none;
the recorded run is from a lent H100).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from benchmarks.harness import alternate, goal, rate, write
from benchmarks.bench_teacher import _images
from depthdata.teacher.model import load_from_directory
from depthdata.teacher.predict import predict_normalised
from depthdata.teacher.tiny import save_random_teacher, small_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="images per repeat (default 64)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats after one warm-up (default 3)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32],
                    help="batch sizes to measure (default 1 4 8 16 32)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_teacher_gpu: needs a CUDA GPU; none here, nothing measured")
        return
    h, w = 480, 640
    images = _images(args.images, h, w)
    with tempfile.TemporaryDirectory(prefix="bench-teacher-gpu-") as tmp:
        save_random_teacher(tmp, small_config(), seed=0)
        teacher = load_from_directory(tmp, device="cuda", model_id="random-init:Depth-Anything-V2-Small")

    def project(bs: int):
        def run() -> None:
            predict_normalised(teacher, images, bs).disparity01.astype(np.float16)
        return run

    def bare(bs: int):
        def run() -> None:
            with torch.inference_mode():
                for i in range(0, len(images), bs):
                    inputs = teacher.processor(images=list(images[i: i + bs]), return_tensors="pt")
                    teacher.model(pixel_values=inputs["pixel_values"].to("cuda", torch.bfloat16))
            torch.cuda.synchronize()
        return run

    results, best = [], {"project": 0.0, "bare": 0.0}
    for bs in args.batch_sizes:
        times = alternate({"project": project(bs), "bare": bare(bs)}, repeats=args.repeats, warmup=1)
        for name in ("project", "bare"):
            r = rate(f"{name} batch {bs}", times[name], args.images, "images/s")
            results.append(r)
            best[name] = max(best[name], r["median"])
            print(f"{name} batch {bs}: {r['median']:.1f} images/s", flush=True)
    ratio = best["project"] / best["bare"]
    goals = [goal("teacher stage path / bare bf16 model(**processor(...)) loop, best batch of each (images/s)",
                  ratio, ">= 0.9")]
    write("teacher_gpu", {"height": h, "width": w, "images": args.images, "repeats": args.repeats,
                          "batch_sizes": args.batch_sizes, "dtype": str(teacher.dtype).removeprefix("torch."),
                          "model": "Depth-Anything-V2-Small architecture, random weights",
                          "input_size": teacher.input_size},
          results, goals, gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
          transformers=__import__("transformers").__version__)
    print(f"best project {best['project']:.1f} / best bare {best['bare']:.1f} images/s = {ratio:.3f}")


if __name__ == "__main__":
    main()
