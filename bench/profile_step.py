"""Where a training step spends its time on this machine's CPU, op by op.

    python bench/profile_step.py bf16 [--depth 20] [--data data] [--steps 20]

Profiles (torch.profiler, CPU) the step `python -m resnet_cifar.speed` times (speed.ours(...).train_one)
after 10 warm-up steps and prints each kind of op's share of the step: the convolutions are the only part
the matrix units speed up, so their share bounds how close the step can come to the matmul rate.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from resnet_cifar import speed

OPTIMIZER = "optimizer"
KINDS = (  # (kind, substrings of an aten op's name), first match wins; an op inside the optimizer's step is
    # the optimizer's whatever its name (its adds and multiplies are not the net's)
    ("convolution (fwd+bwd)", ("convolution", "conv2d")),
    ("batch norm (fwd+bwd)", ("batch_norm",)),
    ("relu (fwd+bwd)", ("relu", "threshold", "clamp_min")),
    ("last linear layer", ("addmm", "linear")),
    ("elementwise add/mul", ("add", "mul", "sub")),
    ("casts and copies", ("_to_copy", "copy_", "clone")),
    (OPTIMIZER, ("sgd", "foreach", "optimizer")),
    ("data (crop and flip)", ("index", "gather", "flip", "where", "rand")),
)


def kind(op: str) -> str:
    name = op.lower()
    return next((k for k, parts in KINDS if any(p in name for p in parts)), "other")


def inside_optimizer(event) -> bool:
    """Whether a profiled op ran within `Optimizer.step` (torch.profiler's record of the optimizer's step)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints each kind of op's share of the step and returns the shares (percent)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", help="fp32 or bf16 (as python -m resnet_cifar.speed --variants)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    loop = speed.ours(args.data, args.depth, args.variant, args.batch, "cpu")
    for _ in range(10):
        loop.train_one(0.1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            loop.train_one(0.1)
    shares: collections.Counter[str] = collections.Counter()
    for event in prof.events():
        shares[OPTIMIZER if inside_optimizer(event) else kind(event.name)] += event.self_cpu_time_total
    total = sum(shares.values())
    print(f"{args.variant} depth {args.depth}, batch {args.batch}, {torch.get_num_threads()} threads: "
          f"{total / args.steps / 1000:.1f} ms of op time per step (profiled)")
    for name, t in shares.most_common():
        print(f"  {name:24s} {t / args.steps / 1000:7.1f} ms  {100 * t / total:5.1f}%")
    return {name: 100 * t / total for name, t in shares.items()}


if __name__ == "__main__":
    main()
