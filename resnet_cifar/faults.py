"""Fault injection for the reliability tests: inert unless its environment variables are set.

The tests kill or starve real training processes at chosen points, so that
resuming can be checked against an uninterrupted run:

- RESNET_CIFAR_TEST_KILL_AT_ITERATION="N" (or "N:RANK"): SIGKILL right after iteration N
  (only the process of that rank).
- RESNET_CIFAR_TEST_KILL_IN_WRITE="NAME:K": SIGKILL during the K-th write of the run-folder
  file NAME by this process: between the temporary file and the rename for files replaced
  atomically, halfway through the row for metrics.csv.
- RESNET_CIFAR_TEST_FAIL_WRITE="NAME:K": the K-th write of NAME fails as on a full disk.
"""
from __future__ import annotations

import errno
import os
import signal
from collections import Counter

KILL_AT_ITERATION_ENV = "RESNET_CIFAR_TEST_KILL_AT_ITERATION"
KILL_IN_WRITE_ENV = "RESNET_CIFAR_TEST_KILL_IN_WRITE"
FAIL_WRITE_ENV = "RESNET_CIFAR_TEST_FAIL_WRITE"

_writes: Counter[str] = Counter()


def kill_iteration(rank: int) -> int:
    """The iteration after which this process is to be killed, or -1."""
    iteration, _, only_rank = os.environ.get(KILL_AT_ITERATION_ENV, "-1").partition(":")
    return int(iteration) if only_rank in ("", str(rank)) else -1


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _is_due(env: str, name: str, count: int) -> bool:
    target, _, k = os.environ.get(env, "").partition(":")
    return target == name and k.isdigit() and int(k) == count


def count_write(name: str) -> tuple[bool, bool]:
    """Count a write of run-folder file `name`: (kill during it?, fail it?)."""
    _writes[name] += 1
    if _is_due(FAIL_WRITE_ENV, name, _writes[name]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _is_due(KILL_IN_WRITE_ENV, name, _writes[name])
