"""Which GPUs a job takes when several jobs start at once on one machine.

torchrun and SLURM place processes themselves: torchrun puts local rank i on
GPU i, and SLURM hands each job the GPUs it allocated in CUDA_VISIBLE_DEVICES.
Everything else that starts jobs side by side on one machine (the joblib
launcher with n_jobs = the number of GPUs, submitit_local, several shells)
starts each job as local rank 0, and every job would land on GPU 0. So a job
started that way first claims free GPUs: one machine-wide lock per GPU
(filesystem.MachineLock: an abstract socket, no file in the shared temporary
folder for another user to tamper with, the same whatever TMPDIR says), held
while the job runs and released by the kernel however its process ends. When
every GPU is held, the job waits for one to come free, saying who holds them
(user and pid), rather than share it: with the captured training step
one run keeps a GPU busy, and sharing gained nothing (measured on an H200,
docs/guide/performance.md "On a GPU").

An explicit choice is respected: only the GPUs in CUDA_VISIBLE_DEVICES are
candidates, named as it names them. Only runs of this project coordinate
this way; other programs on the GPUs are not seen.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from .config import Device
from .errors import ConfigError
from .filesystem import MachineLock

log = logging.getLogger(__name__)

CLAIM_POLL_S = 1.0  # how often a waiting job tries the GPUs again


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the names CUDA_VISIBLE_DEVICES gives them (indices otherwise)."""
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in listed.split(",") if name.strip()][:count]


def _gpu_lock(gpu: str) -> MachineLock:
    return MachineLock(f"gpu-{gpu}")


@contextmanager
def claimed_gpus(count: int, gpus: list[str]) -> Iterator[list[int]]:
    """Hold `count` of `gpus` that no other job of this machine holds, waiting until there are;
    yield their indices in `gpus` (lowest first)."""
    if count > len(gpus):
        raise ConfigError(f"{count} processes need {count} GPUs, but only {len(gpus)} are visible here "
                          f"({', '.join(gpus) or 'none'}); lower trainer.nproc_per_node")
    held: dict[int, MachineLock] = {}  # index in gpus -> its lock
    told = False
    try:
        while True:
            for index, gpu in enumerate(gpus):
                if len(held) < count and index not in held:
                    lock = _gpu_lock(gpu)
                    if lock.try_acquire():
                        held[index] = lock
            if len(held) == count:
                break
            if not told:
                holders = "; ".join(f"GPU {gpu}: {_gpu_lock(gpu).holder()}" for i, gpu in enumerate(gpus)
                                    if i not in held)
                log.info("waiting for %d free GPU(s): other runs hold %d of the %d visible (%s)", count,
                         len(gpus) - len(held), len(gpus), holders)
                told = True
            time.sleep(CLAIM_POLL_S)
        yield sorted(held)
    finally:
        for lock in held.values():
            lock.release()


@contextmanager
def gpus_for_job(device: Device, processes: int) -> Iterator[list[str] | None]:
    """The GPUs (CUDA_VISIBLE_DEVICES names) for a job of `processes` processes on this machine, held
    while it runs; None where no GPU is used or the scheduler chose them (SLURM)."""
    if device is Device.cpu or not torch.cuda.is_available():
        yield None
        return
    gpus = visible_gpus()
    if "SLURM_JOB_ID" in os.environ:  # SLURM allocated this job's GPUs: CUDA_VISIBLE_DEVICES lists them
        yield gpus[:processes]
        return
    with claimed_gpus(processes, gpus) as indices:
        yield [gpus[i] for i in indices]


@contextmanager
def only_these_gpus(gpus: list[str] | None) -> Iterator[None]:
    """Processes started inside see only `gpus` (as devices 0, 1, ...); None leaves the environment."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        yield
    finally:
        if gpus is not None:
            if before is None:
                del os.environ["CUDA_VISIBLE_DEVICES"]
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
