"""A sweep whose jobs run in worker processes on this machine (hydra/launcher=joblib) stops as one run does:
every running job saves a checkpoint and records itself interrupted, then the sweep ends with the command that
resumes it.

Why the sweep's process has to do this: joblib, interrupted in that process (Ctrl-C reaches it with its
workers), kills its workers at once, so every job but the first to stop lost the work since its last
checkpoint and stayed `running` in its summary.json; and a SIGTERM to that process alone ended it while its
workers trained on as orphans to the end of their jobs, holding the cores. Here, on a stop signal, the sweep's
process sends SIGTERM to its workers (each job stops at its next step boundary, as a run alone does: signals.py),
waits until the job folders held when the signal came are released (each job has saved and recorded itself),
and only then ends, so that joblib ends workers that hold nothing unsaved. A job a worker begins meanwhile is
ended before it trains (the relaunch starts or resumes it). A second Ctrl-C stops at once.

The basic launcher needs none of this (its jobs run in the sweep's own process); SLURM's jobs belong to the
cluster (scancel stops them with a checkpoint).
"""
from __future__ import annotations

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

from .filesystem import child_pids, folder_is_held
from .provenance import resume_command
from .signals import STOP_SIGNALS, SweepStopped

log = logging.getLogger(__name__)

WORKER_LAUNCHERS = ("JoblibLauncher",)  # launchers (by class name) whose jobs are this process's children
POLL_S = 0.2


def held_job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of the sweep that a process holds now (a job runs in each)."""
    if not sweep_dir.is_dir():
        return []
    return [folder for folder in sorted(sweep_dir.iterdir()) if folder.is_dir() and not folder.is_symlink()
            and folder_is_held(folder)]


class StopJobsFirst(Callback):
    """Installs, for a launcher whose jobs are worker processes of this one, the stop handling said above."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.stopping: int | None = None
        self.previous: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not str(config.hydra.launcher.get("_target_", "")).endswith(WORKER_LAUNCHERS):
            return
        if threading.current_thread() is not threading.main_thread():  # Python allows handlers only there
            return
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._stop)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for signum, handler in self.previous.items():  # the process goes on as before the sweep
            signal.signal(signum, handler)
        self.previous.clear()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping is not None:  # a second signal while the jobs save: stop at once
            raise KeyboardInterrupt
        self.stopping = signum
        held = held_job_folders(self.sweep_dir)
        for pid in child_pids():  # joblib's workers; its resource trackers ignore SIGTERM
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if held:
            log.warning("stopping on %s: %d running job(s) save a checkpoint first (Ctrl-C again stops at once)",
                        signal.Signals(signum).name, len(held))
        while any(folder_is_held(folder) for folder in held):  # released when its job has saved, or died
            time.sleep(POLL_S)
        log.warning("stopped by %s; the jobs that were running saved a checkpoint; to resume the sweep: %s",
                    signal.Signals(signum).name, resume_command("hydra.sweep.dir", str(self.sweep_dir)))
        raise SweepStopped(signum)
