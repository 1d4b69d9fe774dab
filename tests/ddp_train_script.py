"""Run by tests/test_student_recipes.py under torchrun: train with DistributedDataParallel, then
each rank writes what it ended with, so the test can compare the ranks."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from student.arch import StudentConfig
from student.train import TrainConfig, train

store, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(store_url=store, out_dir=str(out), steps=3, batch_size=2, streams=1, checkpoint_every=100, seed=2,
                  model=StudentConfig(arch="lpcvc-mnv3s"))
result = train(cfg, progress=False)
rank = torch.distributed.get_rank()
# Parameters only: batch-norm statistics are each rank's own (DDP broadcasts rank 0's before every
# forward pass, so after the last one they hold that rank's batch).
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in result.model.parameters())).hexdigest()
# rank 0 makes the output folder when it saves; another rank can get here before it
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({"params": digest, "losses": result.losses}))
torch.distributed.destroy_process_group()
