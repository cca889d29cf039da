"""Stop a run cleanly on the signals clusters and users send: at a step boundary, after a checkpoint.

SIGTERM and SIGUSR1 (SLURM before preemption or at the time limit), SIGUSR2
(submitit's preemption signal) and SIGINT (Ctrl-C) only raise a flag; the
training loop sees it after the step in flight, writes a checkpoint, records
the run as interrupted and ends. A handler that was there before ours (for
instance submitit's, which requeues the job) is then called in turn. A second
Ctrl-C stops at once (the last checkpoint is kept).
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class Interrupted(BaseException):
    """The run stopped on a signal after saving a checkpoint; not an Exception, so a sweep ends too."""

    def __init__(self, signum: int, iteration: int) -> None:
        self.signum, self.iteration = signum, iteration
        super().__init__(f"stopped by {signal.Signals(signum).name} at iteration {iteration}; a checkpoint "
                         "was saved")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


class SweepStopped(BaseException):
    """A sweep of worker processes stopped on a signal once its running jobs saved (sweep_stop.py)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"the sweep stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """While entered, STOP_SIGNALS set `signum` instead of ending the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():  # kept in `previous` for pass_on
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the step boundary
        self.signum = signum

    def pass_on(self) -> None:
        """Call the handler that was installed before ours for the signal received (if Python's own)."""
        handler = self.previous.get(self.signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.signum, None)
