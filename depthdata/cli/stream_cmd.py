"""``depthdata stream check STORE``: what a training job would be served, per group and rank."""

from __future__ import annotations

import argparse

from depthdata.stream.order import TAILS, plan_epoch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="inspect what streaming into PyTorch would serve",
                       description="Inspect what ShardDataset would serve from a store.")
    ssub = p.add_subparsers(dest="stream_command", metavar="ACTION", required=True)
    c = ssub.add_parser("check", help="servable samples, skipped shards and epoch sizes per rank",
                        description="List, per group, the servable shards and samples for FIELDS (shards whose "
                        "stages are incomplete and samples not 'ok' are skipped and logged), then the "
                        "samples each rank gets per epoch under the tail policy.")
    c.add_argument("store", help="store path or fsspec URL")
    c.add_argument("--groups", nargs="+", metavar="DATASET/SPLIT", help="groups to serve (default: all)")
    c.add_argument("--fields", default="rgb,teacher,teacher_conf",
                   help="comma-separated fields to load (default: %(default)s)")
    c.add_argument("--world-size", type=int, default=1, help="number of training processes (default: 1)")
    c.add_argument("--batch-size", type=int, default=1, help="DataLoader batch size (default: 1)")
    c.add_argument("--streams", type=int, default=4,
                   help="streams per rank; DataLoader workers must divide it (default: 4)")
    c.add_argument("--tail", choices=TAILS, default="drop",
                   help="uneven tail policy: drop (at most once) or pad (at least once) (default: drop)")
    c.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    c.add_argument("--epoch", type=int, default=0, help="epoch to plan (default: 0)")
    c.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from depthdata.stream.dataset import ShardDataset

    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    ds = ShardDataset(args.store, groups=args.groups, fields=fields, seed=args.seed, rank=0,
                      world_size=args.world_size, batch_size=args.batch_size, streams=args.streams, tail=args.tail)
    for position, path in enumerate(ds.group_paths):
        refs = [r for r in ds.shards if r.group == position]
        print(f"{path}: {sum(len(r.indices) for r in refs)} servable samples in {len(refs)} shard(s)")
    for rank in range(args.world_size):
        plan = plan_epoch(ds.shards, len(ds.group_paths), seed=args.seed, epoch=args.epoch, shuffle=True,
                          world_size=args.world_size, rank=rank, streams=args.streams, batch_size=args.batch_size,
                          window=ds.window, tail=args.tail)
        print(f"rank {rank}/{args.world_size} epoch {args.epoch}: {len(plan)} samples "
              f"({len(plan) // args.batch_size} batches of {args.batch_size}); "
              f"dropped {plan.dropped}, padded {plan.padded} (tail={args.tail})")
    return 0
