"""python -m resnet_cifar.train [overrides]: one Hydra-configured training run, or a -m sweep of them.

Examples:
    python -m resnet_cifar.train                                # ResNet-20, the paper's recipe
    python -m resnet_cifar.train depth=56 arch=plain budget=quick
    python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet
    python -m resnet_cifar.train -m +experiment=table6 hydra.sweep.dir=multirun/table6
    python -m resnet_cifar.train --config-dir my_conf arch=wide depth=28   # your own model (docs/guide/your-own.md)
    python -m resnet_cifar.train depth=110 trainer.nproc_per_node=2     # DDP, workers started here
    torchrun --nproc_per_node=2 -m resnet_cifar.train depth=110        # DDP, workers started by torchrun

What a run does is command.py's; torchrun's processes agree on a folder in torchrun.py.
"""
from __future__ import annotations

import sys

from .cores import free_cores, passive_wait_if_busy

# Before torch loads (its OpenMP reads the wait policy once): a machine busy with other work gets passive waits.
WAIT_POLICY_NOTE = passive_wait_if_busy(free_cores())

import hydra  # noqa: E402
import torch.distributed as dist  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from .command import run_command  # noqa: E402
from .hydra_setup import register  # noqa: E402
from .distributed import world_from_env  # noqa: E402
from .torchrun import torchrun_arguments  # noqa: E402


register()  # the schema and resolvers, for Hydra started here (also in a launcher's job, which imports this)


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run; returns its final validation error (what hydra/sweeper=optuna
    minimizes; None without data.val_size)."""
    return run_command(cfg, WAIT_POLICY_NOTE)


def cli() -> None:
    world = world_from_env()
    if world.distributed:  # started by torchrun
        sys.argv[1:] = torchrun_arguments(sys.argv[1:], world)
    try:
        main()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli()
