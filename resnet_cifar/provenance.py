"""What summary.json says about where and with what a run ran: figures mean little without it."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import torch
import torch.distributed as dist

from .distributed import World


def gpu_uuids(device: torch.device, world: World) -> list[str] | None:
    """Which physical GPU each process used, by rank (None on the CPU): names and indices depend on
    CUDA_VISIBLE_DEVICES, the UUID does not (`nvidia-smi -L` lists them)."""
    if device.type != "cuda":
        return None
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"  # nvidia-smi's form
    uuids: list = [uuid]
    if world.distributed:
        uuids = [None] * world.world_size
        dist.all_gather_object(uuids, uuid)
    return uuids


def slurm_job() -> dict | None:
    """The SLURM job this run is part of (None outside SLURM): its id as squeue and sacct show it
    (ARRAY_TASK for a sweep's job array), the node, and how many times SLURM requeued it."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {"job": "_".join(array) if all(array) else env["SLURM_JOB_ID"], "job_id": env["SLURM_JOB_ID"],
            "node": env.get("SLURMD_NODENAME"), "restart_count": int(env.get("SLURM_RESTART_COUNT", 0))}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model, for the summary: figures mean little without it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{models[0]} ({os.cpu_count()} logical cores)"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "hydra-core", "omegaconf", "numpy", "resnet-cifar"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
