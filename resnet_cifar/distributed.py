"""Data-parallel processes: who am I, the process group, and launching workers for one job.

Two ways in, one code path:
- `torchrun --nproc_per_node=N -m resnet_cifar.train ...`: torchrun starts the
  workers; `torchrun.torchrun_arguments` makes them agree on one run folder before
  Hydra runs.
- `trainer.nproc_per_node=N` (alone or in a sweep): the job process starts the
  workers through PyTorch's elastic launch API (`launch`) and waits for them.
"""
from __future__ import annotations

import multiprocessing
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from .config import Device
from .cores import choose_threads, thread_limit_from_environment
from .errors import ConfigError


COLLECTIVE_TIMEOUT = timedelta(minutes=10)  # a peer that stops answering fails the job, never hangs it


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over all processes, in place (a no-op alone)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor


def world_from_env() -> World:
    """The process's place, from the variables torchrun and the elastic agent set."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                 int(env.get("LOCAL_WORLD_SIZE", 1)))


def resolve_device(device: Device, world: World) -> torch.device:
    """The device of this process: with several processes on a node, GPU i for local rank i; alone,
    the current GPU (the one job.run_job claimed, see placement.py)."""
    if device is Device.cuda and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda is not allowed here: no CUDA device is available "
                          "(use trainer.device=cpu or auto)")
    if device is Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"{world.local_world_size} processes per node but only {torch.cuda.device_count()} "
                          "GPUs here: lower trainer.nproc_per_node (or torchrun's --nproc_per_node)")
    return torch.device("cuda", world.local_rank if world.distributed else torch.cuda.current_device())


def init_process_group(world: World) -> None:
    """gloo for CPU tensors, and nccl for CUDA tensors where there is a GPU."""
    if world.distributed and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)


def prepare_process(device: Device, threads: int | None, world: World, free: float | None = None,
                    ) -> tuple[torch.device, str]:
    """Everything a training process sets for itself before its run is built, owned here rather than hidden in
    the loop: its device, its process group, and on the CPU its threads (`threads`, else its share of the cores
    `free` when it started: cores.choose_threads), on a GPU cuDNN's choice of the fastest algorithms (fixed
    shapes). Returns (the device, what was chosen, for the log)."""
    resolved = resolve_device(device, world)
    init_process_group(world)
    if resolved.type == "cpu":
        choice = choose_threads(threads, world.local_world_size, free, thread_limit_from_environment())
        torch.set_num_threads(choice.threads)
        return resolved, f"{choice.threads} thread(s): {choice.reason}"
    torch.backends.cudnn.benchmark = True  # fixed shapes: time the algorithms once, keep the fastest
    return resolved, "cuDNN benchmark mode"


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the whole global batch for CPU processes (torch's SyncBatchNorm is GPU only).

    The per-channel sums are added up with a differentiable all_reduce, so the
    backward pass sees the statistics' dependence on every process's images,
    as SyncBatchNorm's does. Same parameters and buffers as BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype)
        stats = dist_fn.all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels:2 * channels] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, channels, 1, 1)
        scale = self.weight.view(shape) * torch.rsqrt(var.view(shape) + self.eps)
        return (x - mean.view(shape)) * scale + self.bias.view(shape)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BN statistics over the global batch: torch's SyncBatchNorm on GPUs, CpuSyncBatchNorm on CPUs."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum).to(child.weight.device)
            synced.load_state_dict(child.state_dict())
            setattr(model, name, synced)
        else:
            convert_sync_batchnorm(child, device)
    return model


def check_world(world: World, nproc_per_node: int, nnodes: int) -> None:
    if world.world_size != nproc_per_node * nnodes:
        raise ConfigError(
            f"trainer.nproc_per_node={nproc_per_node} x trainer.nnodes={nnodes} does not match the "
            f"{world.world_size} processes that were started; leave both at their defaults under torchrun"
        )


def start_processes_as_anywhere() -> None:
    """In a joblib (loky) worker the default start method is loky's, which a job's own processes cannot use:
    a DataLoader's workers failed ("'Process' object has no attribute 'env'") and torch's spawned DDP workers
    too ("cannot find context for 'loky'"). The job's processes start the platform's way, as anywhere else."""
    standard = multiprocessing.get_all_start_methods()
    if multiprocessing.get_start_method(allow_none=True) not in (None, *standard):
        multiprocessing.set_start_method(standard[0], force=True)  # the first is the platform's default


def launch(nproc_per_node: int, nnodes: int, entrypoint: Callable, *args: Any) -> dict[int, Any]:
    """Start the job's workers with torch.distributed's elastic launcher and wait for all of them.

    A worker that fails (exception, kill) makes the agent stop the others and
    raise ChildFailedError: the job fails in bounded time instead of hanging.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nnodes > 1:
        raise ConfigError(f"trainer.nnodes={nnodes} is not allowed without torchrun: start the command with "
                          "torchrun --nnodes=... --rdzv-endpoint=... on every node (see docs/guide/ddp.md)")
    config = LaunchConfig(  # what `torchrun --standalone` does
        min_nodes=1, max_nodes=1, nproc_per_node=nproc_per_node, rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0, monitor_interval=0.5,
        start_method="spawn",
    )
    return elastic_launch(config, entrypoint)(*args)
