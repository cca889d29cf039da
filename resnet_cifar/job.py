"""Run one job's training: in this process, as one of torchrun's workers, or by starting its own workers.

The workers' entry point lives here, in an importable module, not in the
command's __main__: spawned workers find it by name, also when the job runs
inside submitit (SLURM, submitit_local) or a joblib worker, where __main__
is the launcher's, not resnet_cifar.train.
"""
from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from .console import ConsoleFormatter
from .distributed import World, launch, world_from_env
from .placement import gpus_for_job, only_these_gpus, visible_gpus
from .training_run import train_run
from .run_folder import RunFolder
from .run_spec import RunSpec


def run_worker(config: dict, run_dir: str, overrides: list[str]) -> None:
    """One process of a job's DDP group, started by `distributed.launch` (no Hydra in here)."""
    world = world_from_env()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter())
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING, handlers=[console], force=True)
    folder = RunFolder(Path(run_dir))
    try:
        with folder.log_to_file() if world.is_main else nullcontext():
            train_run(RunSpec.from_dict(config, overrides), folder, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_job(spec: RunSpec, folder: RunFolder, world: World) -> None:
    """Train a job that is not completed (the caller checked: RunFolder.completed): in this process, as
    one of torchrun's workers, or by starting its own workers. A job not placed by torchrun first claims
    its GPUs (placement.py), so that jobs started side by side on one machine do not all land on GPU 0."""
    t = spec.config.trainer
    processes = t.nproc_per_node * t.nnodes
    if world.distributed:  # torchrun placed the processes: local rank i on GPU i
        train_run(spec, folder, world)
    elif processes > 1:
        with gpus_for_job(t.device, processes) as gpus, only_these_gpus(gpus):
            launch(t.nproc_per_node, t.nnodes, run_worker, spec.recorded, str(folder.path), spec.overrides)
    else:
        with gpus_for_job(t.device, 1) as gpus:
            if gpus:
                torch.cuda.set_device(visible_gpus().index(gpus[0]))
            train_run(spec, folder)
