"""A sweep whose jobs run in worker processes on this machine (hydra/launcher=joblib) stops as one run does:
every running job saves a checkpoint and records itself interrupted, then the sweep ends with the command that
resumes it.

Why the sweep's process has to do this: joblib, interrupted in that process (Ctrl-C reaches it with its
workers), kills its workers at once, so every job but the first to stop lost the work since its last
checkpoint and stayed `running` in its summary.json; and a SIGTERM to that process alone ended it while its
workers trained on as orphans to the end of their jobs, holding the cores. And a worker must never die of a
signal: loky then kills every other worker at once, the ones saving included.

So, on a stop signal, the sweep's process
1. marks the sweep as stopping (an abstract socket named by its folder: nothing on disk, gone with the
   process), so that a job a worker takes from joblib's queue now is not started (`job_may_start`);
2. sends SIGTERM, every POLL_S, to each worker that holds a job folder (Linux's /proc: folders_open_in), until
   none does: a job in its training loop stops at the next step with a checkpoint (signals.py); a job still
   setting up ignores stop signals (`ignore_stop_signals`, as idle workers do) and stops at its first step;
3. says which of those jobs recorded their stop and which did not, with the command that resumes, and ends
   (SweepStopped: exit status 128 + the signal), so that joblib ends workers that hold nothing unsaved.
A second signal ends the sweep at once.

Not covered: a terminal's Ctrl-C also reaches workers directly, and one that has not run a job yet (more
workers than jobs: joblib's n_jobs=-1 on a large machine) dies of it, and loky then kills the others: the jobs
keep their last checkpoint, and step 3 names them. `kill` (SIGTERM) to the sweep's process alone has no such
gap. The basic launcher needs none of this (its jobs run in the sweep's own process); SLURM's jobs belong to
the cluster (scancel stops them with a checkpoint).
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .contract import Status
from .filesystem import MachineLock, child_pids, folders_open_in, sees_processes
from .provenance import resume_command
from .signals import STOP_SIGNALS, SweepStopped
from .sweep import job_summary

log = logging.getLogger(__name__)

WORKER_LAUNCHERS = ("JoblibLauncher",)  # launchers (by class name) whose jobs are worker processes of the sweep's
POLL_S = 0.2
NOTE_EVERY_S = 30.0


def runs_jobs_in_workers(launcher: DictConfig) -> bool:
    """Whether a launcher's jobs run in worker processes of the sweep's process started afresh (joblib's loky
    backend, its default: not threads, not forked copies of this process), and this system shows which
    folders they hold (Linux): then the sweep stops as the module's docstring says; elsewhere as joblib does."""
    return (str(launcher.get("_target_", "")).endswith(WORKER_LAUNCHERS)
            and launcher.get("backend") in (None, "loky") and launcher.get("prefer") != "threads"
            and sees_processes())


def stopping_mark(sweep_dir: Path) -> MachineLock:
    """The sweep's 'stopping' mark: held by the sweep's process from its stop signal to its end."""
    return MachineLock(f"sweep-stopping/{hashlib.sha256(str(Path(sweep_dir).absolute()).encode()).hexdigest()[:32]}")


def job_may_start(sweep_dir: Path) -> bool:
    """False once the job's sweep is stopping: the job is then not started (the relaunch starts it)."""
    return not stopping_mark(sweep_dir).held_elsewhere()


def in_a_worker() -> bool:
    """Whether this job runs in a worker process, not in the sweep's own (joblib with n_jobs=1 runs its jobs
    there, one after another: they handle stop signals as the basic launcher's do). The sweep's process is the
    one whose SIGTERM handler is a StopJobsFirst; a worker starts with Python's own."""
    return not isinstance(getattr(signal.getsignal(signal.SIGTERM), "__self__", None), StopJobsFirst)


def ignore_stop_signals() -> None:
    """For a job in a worker process of the sweep: stop signals are ignored outside the training loop, which
    handles them (signals.StopRequest puts this back after), and by the idle worker after the job, which must
    not die of one (see the module's docstring). The sweep's process asks the job to stop when it stops."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


class StopJobsFirst(Callback):
    """Installs, for a launcher whose jobs are worker processes of this one, the stop handling said above."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.stopping: int | None = None
        self.previous: dict[int, Any] = {}
        self.mark: MachineLock | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not runs_jobs_in_workers(config.hydra.launcher) or threading.current_thread() is not threading.main_thread():
            return  # Python allows handlers only in the main thread
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._stop)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self.previous.items():  # the process goes on as before the sweep
            signal.signal(signum, handler)
        self.previous.clear()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        resume = resume_command("hydra.sweep.dir", str(self.sweep_dir))
        if self.stopping is not None:
            self._restore()
            log.warning("stopped at once by a second signal (%s): jobs still saving were ended and keep their last "
                        "checkpoint; to resume the sweep: %s", name, resume)
            raise SweepStopped(signum)
        self.stopping = signum
        self.mark = stopping_mark(self.sweep_dir)
        self.mark.try_acquire()  # held until this process ends; a second sweep stopping in this folder holds it too
        asked: dict[Path, None] = {}  # the job folders whose jobs were asked to stop, in order
        started = noted = time.monotonic()
        held = folders_open_in(child_pids(), self.sweep_dir)
        if held:
            log.warning("stopping on %s: the running jobs save a checkpoint first (a second Ctrl-C stops at once)",
                        name)
        while held:
            for pid, folders in held.items():
                asked.update(dict.fromkeys(folders))
                try:
                    os.kill(pid, signal.SIGTERM)  # again at each look: a job setting up ignores it until its loop
                except ProcessLookupError:
                    pass
            if time.monotonic() - noted > NOTE_EVERY_S:
                noted = time.monotonic()
                log.warning("still waiting (%.0f s) for the jobs in %s: a job stops at its next training step (one "
                            "waiting for a free GPU only once it has one); a second signal stops at once",
                            noted - started, ", ".join(str(f) for folders in held.values() for f in folders))
            time.sleep(POLL_S)
            held = folders_open_in(child_pids(), self.sweep_dir)
        self._restore()
        statuses: dict[str, list[str]] = {}
        for folder in asked:
            status = job_summary(folder)["status"]
            statuses.setdefault(getattr(status, "value", status), []).append(str(folder))
        saved = statuses.pop(Status.interrupted.value, [])
        if statuses:  # completed meanwhile, failed (a checkpoint that could not be written), or no record
            log.warning("stopped by %s; %d job(s) saved a checkpoint; the others recorded: %s; to resume the sweep: "
                        "%s", name, len(saved), "; ".join(f"{status}: {', '.join(folders)}"
                                                          for status, folders in statuses.items()), resume)
        elif asked:
            log.warning("stopped by %s; the %d running job(s) saved a checkpoint; to resume the sweep: %s", name,
                        len(asked), resume)
        else:  # before a job started, or joblib ran the job in this process (n_jobs=1), where it stopped itself
            log.warning("stopped by %s; to resume the sweep: %s", name, resume)
        raise SweepStopped(signum)

