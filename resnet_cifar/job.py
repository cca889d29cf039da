"""Run one job's training: in this process, as one of torchrun's workers, or by starting its own workers.

The workers' entry point lives here, in an importable module, not in the
command's __main__: spawned workers find it by name, also when the job runs
inside submitit (SLURM, submitit_local) or a joblib worker, where __main__
is the launcher's, not resnet_cifar.train.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import World, check_world, launch, world_from_env
from .placement import gpus_for_job, only_these_gpus, visible_gpus
from .run import train
from .run_folder import RunFolder, RunSpec

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's


def run_worker(config: dict, run_dir: str, overrides: list[str]) -> None:
    """One process of a job's DDP group, started by `distributed.launch` (no Hydra in here)."""
    world = world_from_env()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if world.is_main:
        handlers.append(logging.FileHandler(Path(run_dir) / "train.log"))
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING, format=LOG_FORMAT,
                        handlers=handlers, force=True)
    try:
        train(RunSpec.from_dict(config, overrides), RunFolder(Path(run_dir)), world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_job(spec: RunSpec, folder: RunFolder, world: World) -> None:
    """Train the job unless it is completed: in this process, as one of torchrun's workers, or by starting
    its own workers. A job not placed by torchrun first claims its GPUs (placement.py), so that jobs
    started side by side on one machine do not all land on GPU 0."""
    t = spec.cfg.trainer
    processes = t.nproc_per_node * t.nnodes
    if world.distributed:
        check_world(world, t.nproc_per_node, t.nnodes)
    if folder.completed(spec):  # a finished job starts no workers and loads no data
        return
    if world.distributed:  # torchrun placed the processes: local rank i on GPU i
        train(spec, folder, world)
    elif processes > 1:
        with gpus_for_job(t.device, processes) as gpus, only_these_gpus(gpus):
            launch(t.nproc_per_node, t.nnodes, run_worker, spec.config, str(folder.path), spec.overrides)
    else:
        with gpus_for_job(t.device, 1) as gpus:
            if gpus:
                torch.cuda.set_device(visible_gpus().index(gpus[0]))
            train(spec, folder)
