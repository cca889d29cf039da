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
from omegaconf import OmegaConf

from . import config as schema
from .distributed import World, check_world, launch, world_from_env
from .engine import already_completed, previous_summary, train
from .placement import gpus_for_job, only_these_gpus, visible_gpus

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's


def run_worker(config: dict, run_dir: str, overrides: list[str]) -> None:
    """One process of a job's DDP group, started by `distributed.launch` (no Hydra in here)."""
    world = world_from_env()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if world.is_main:
        handlers.append(logging.FileHandler(Path(run_dir) / "train.log"))
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING, format=LOG_FORMAT,
                        handlers=handlers, force=True)
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema.BaseConfig), config))
    try:
        train(typed, Path(run_dir), config, overrides, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_job(typed: schema.BaseConfig, run_dir: Path, config: dict, overrides: list[str], world: World) -> None:
    """Train in this process, as one of torchrun's workers, or by starting this job's own workers; a job
    not placed by torchrun first claims its GPUs (placement.py), so that jobs started side by side on one
    machine do not all land on GPU 0."""
    t = typed.trainer
    processes = t.nproc_per_node * t.nnodes
    if world.distributed:  # torchrun placed the processes: local rank i on GPU i
        check_world(world, t.nproc_per_node, t.nnodes)
        train(typed, run_dir, config, overrides, world)
    elif processes > 1:
        if not already_completed(previous_summary(run_dir, config), run_dir):  # a finished job starts no workers
            with gpus_for_job(t.device, processes) as gpus, only_these_gpus(gpus):
                launch(t.nproc_per_node, t.nnodes, run_worker, config, str(run_dir), overrides)
    else:
        with gpus_for_job(t.device, 1) as gpus:
            if gpus:
                torch.cuda.set_device(visible_gpus().index(gpus[0]))
            train(typed, run_dir, config, overrides)
