"""python -m resnet_cifar.train [overrides]: one Hydra-configured training run, or a -m sweep of them.

Examples:
    python -m resnet_cifar.train                                # ResNet-20, the paper's recipe
    python -m resnet_cifar.train depth=56 arch=plain budget=quick
    python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet
    python -m resnet_cifar.train -m +experiment=table6 hydra.sweep.dir=multirun/table6
    python -m resnet_cifar.train --config-dir my_conf arch=wide depth=28   # your own model (docs/guide/your-own.md)
    python -m resnet_cifar.train depth=110 trainer.nproc_per_node=2     # DDP, workers started here
    torchrun --nproc_per_node=2 -m resnet_cifar.train depth=110        # DDP, workers started by torchrun

What a run does is command.py's; torchrun's processes agree on a folder in torchrun.py. Importing this module
loads no torch and sets nothing in the process: it registers the schema and resolvers with Hydra (a launcher's
job imports it to find `main`, and composes with them); the OpenMP wait policy is chosen when the command or a
job starts, before torch loads.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .cores import openmp_wait_note
from .errors import EXIT_BAD_INPUT
from .hydra_setup import register
from .signals import SweepStopped

# Overrides of keys that older versions had and today's moved: (the key, what to write today).
MOVED_KEYS = {"data.augment": "augment=random|static|none (augmentation is a plug-in group now)"}

register()  # the schema and resolvers, for Hydra started here (also in a launcher's job, which imports this)


def moved_key_error(args: list[str]) -> str | None:
    """One line for an override of a key that moved (data.augment=true from an older version's docs or sweep)."""
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and key in MOVED_KEYS:
            return (f"error: {arg}: {key} is no longer a key; write {MOVED_KEYS[key]}. An old sweep that used it "
                    "is relaunched with the version that started it.")
    return None


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run; returns its final validation error (what hydra/sweeper=optuna
    minimizes; None without data.val_size)."""
    note = openmp_wait_note()
    from .command import run_command  # torch loads here, after the wait policy is chosen

    return run_command(cfg, note)


def cli() -> None:
    moved = moved_key_error(sys.argv[1:])
    if moved:
        print(moved, file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    openmp_wait_note()
    from .distributed import world_from_env  # torch loads here
    from .torchrun import torchrun_arguments

    world = world_from_env()
    if world.distributed:  # started by torchrun
        sys.argv[1:] = torchrun_arguments(sys.argv[1:], world)
    try:
        main()
    except SweepStopped as e:  # the sweep's jobs saved and the command that resumes was logged (sweep_stop.py)
        sys.exit(e.exit_code)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli()
