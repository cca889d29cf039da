"""How many CPU cores a run may use, and how many of them are free when it starts.

On a shared or busy machine the default of one OpenMP thread per core is the slowest choice: measured on the
2-core Xeon with one other busy process, ResNet-20 fp32 trained at 117-131 images/s on two threads that spin
while they wait, 204-222 on one thread (docs: Performance). So a run on the CPU takes as many threads as cores
were free when it started (trainer.threads=null; a number sets them), and on a machine that was busy then,
its OpenMP threads wait passively instead of spinning (set before torch loads; OMP_WAIT_POLICY of the
environment wins). Torch-free: the command's entry point asks before it imports torch.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import cache

SAMPLE_S = 0.25  # how long the machine's idle time is watched when a run starts
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def usable_cores() -> int:
    """The cores this process may run on (its affinity), or the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _idle_and_total() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])  # idle + iowait, all but guests


def free_cores(sample_s: float = SAMPLE_S) -> float | None:
    """Cores of this machine left idle by everything else over `sample_s` (None where /proc/stat cannot tell)."""
    before = _idle_and_total()
    time.sleep(sample_s)
    after = _idle_and_total()
    if before is None or after is None or after[1] <= before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * (os.cpu_count() or 1)


def thread_limit_from_environment() -> int | None:
    """The threads a launcher allowed this process (OMP_NUM_THREADS: joblib's jobs side by side, torchrun's
    workers), None where nothing set a limit. Read from the environment, not from torch: a run sets torch's
    own count, so a later job of the same process would otherwise only ever get fewer."""
    try:
        limit = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return limit if limit > 0 else None


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def choose_threads(requested: int | None, processes_here: int, free: float | None,
                   allowed: int | None = None) -> ThreadChoice:
    """The threads of one of `processes_here` training processes of a run on this machine: `requested`, else
    its share of the cores that were free (never more than its share of the usable ones, nor than the threads
    it was `allowed` when it started: OMP_NUM_THREADS, a launcher's limit for jobs side by side; at least one)."""
    share = max(1, usable_cores() // processes_here)
    if allowed is not None:
        share = max(1, min(share, allowed))
    if requested is not None:
        return ThreadChoice(requested, f"trainer.threads={requested}")
    if free is None:
        return ThreadChoice(share, f"{share} of the {usable_cores()} cores (their share for {processes_here} "
                                   "process(es); how busy the machine was could not be read)")
    threads = max(1, min(share, int(free / processes_here + 0.5)))
    return ThreadChoice(threads, f"{free:.1f} of the {os.cpu_count()} cores were free when the run started "
                                 f"({processes_here} training process(es) here)")


def passive_wait_if_busy(free: float | None) -> str | None:
    """Before torch loads: on a machine busy with other work, OpenMP threads wait passively (spinning takes the
    cores from the work they wait for); said in the log. The environment's own setting wins."""
    if WAIT_POLICY_ENV in os.environ or free is None or free >= usable_cores() - 0.5:
        return None
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return f"{WAIT_POLICY_ENV}=PASSIVE: only {free:.1f} of {usable_cores()} cores were free when the command started"


FRESH_S = 60.0  # a reading this recent (the command's own, as it started) decides the run's threads too


@dataclass(frozen=True)
class Reading:
    free: float | None  # cores free, as free_cores()
    at: float  # time.monotonic() when it was taken


@cache
def command_start_reading() -> Reading:
    """The cores free as this process's command started (once per process, before torch loads)."""
    return Reading(free_cores(), time.monotonic())


def free_at_run_start() -> float | None:
    """The cores free as a run starts: the command's own reading while it is recent, so that one reading
    decides both OpenMP's wait policy and the run's threads (two readings seconds apart disagreed on a machine
    whose load flickers: a run logged 0.0 free cores and no passive waits); a new one for a run that starts
    later in the same process (a sweep's jobs one after another)."""
    start = command_start_reading()
    return start.free if time.monotonic() - start.at <= FRESH_S else free_cores()


@cache
def openmp_wait_note() -> str:
    """Once per process, before torch loads (its OpenMP reads the wait policy once): a machine busy with other
    work gets passive waits. What OpenMP's threads do while they wait and why, for train.log.

    Here, not in train.py: a launcher's job (submitit) unpickles train.main in a process whose __main__ is not
    train.py, so what main calls must live in a module that job can import."""
    if WAIT_POLICY_ENV in os.environ:
        return (f"OpenMP waits: {WAIT_POLICY_ENV}={os.environ[WAIT_POLICY_ENV]}, from the environment (yours, or "
                "the choice of the command that started this process)")
    if "torch" in sys.modules:
        return "OpenMP waits: OpenMP's default (torch had loaded before the command could choose)"
    free = command_start_reading().free
    passive = passive_wait_if_busy(free)
    if passive:
        return passive
    seen = "how busy the machine was could not be read" if free is None else (
        f"{free:.1f} of {usable_cores()} cores were free when the command started")
    return f"OpenMP waits: OpenMP's default (its threads spin a while before they sleep): {seen}"
