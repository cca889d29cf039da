"""What summary.json says about where and with what a run ran: figures mean little without it."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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


def cuda_versions(device: torch.device) -> dict | None:
    """CUDA and cuDNN versions of this torch build, on a GPU (None on the CPU)."""
    if device.type != "cuda":
        return None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"cuda": torch.version.cuda, "cudnn": cudnn}


def source_version() -> dict | None:
    """The git commit of the project when it runs from a checkout, and whether the tree had changes that are
    not committed (None for an installed copy, or without git)."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def resume_command(folder_key: str, folder: str, torchrun: bool = False) -> str:
    """The command that resumes this run or sweep: the command as typed, with its folder (`folder_key`:
    hydra.run.dir, or hydra.sweep.dir for a sweep) unless it already named it: a default folder is named by
    the date and time it was started, so the same command alone would start anew."""
    args = shlex.split(command_line())
    if not any(a.startswith(f"{folder_key}=") for a in args):
        args.append(f"{folder_key}={folder}")
    if torchrun:
        return f"the same torchrun command on every node, with {shlex.quote(f'{folder_key}={folder}')}"
    return shlex.join(args)


def command_line() -> str:
    """The command as typed: `python -m resnet_cifar.train ...` for the module (whose argv[0] is its file)."""
    args = list(sys.argv)
    if args and args[0].endswith(os.path.join("resnet_cifar", "train.py")):
        args[:1] = ["python", "-m", "resnet_cifar.train"]
    return shlex.join(args)
