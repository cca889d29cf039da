"""Trackers: a live view of a run's metrics beside metrics.csv (which is always written and which the report
reads), a plug-in named by `logger._target_` (conf/logger/; none for logger=csv).

The protocol is small. The callable is called on the run's first process as
`factory(run_dir=Path, config=dict, resumed_at=int, [run_id=str|None], **the YAML's keys)` when the run starts
or resumes (`resumed_at`: the iteration of the checkpoint it goes on from, 0 for a new run), and returns an
object with

- `log(row)`: one metrics row (metrics.csv's columns, `iteration` among them; None where a value is not
  measured), at each evaluation;
- `close(status)`: the run ended as `status` (completed, interrupted, failed, diverged);
- optionally `run_id`: what identifies this run folder's run in the tracker's own store. The run folder
  records it (summary.json's `tracker_run_id`) and gives it back as `run_id=` to a factory that takes it when
  the run resumes (None for a run folder that has none: a new run), so that a tracker never finds a run by
  a name or path that another run may have had before (MLflow).

A resumed run writes again the rows after its checkpoint: a tracker must not show them twice (TensorBoard
purges them, MLflow skips the steps it already holds). A factory may have `check_available(...)`, called
before the run with the YAML's keys and `run_dir` (where known) if it takes them, raising a UserError when
what it needs is not installed or cannot be used (an unwritable store, a deleted experiment).

A tracker never stops the training (GuardedTracker): each call runs while a stop signal can still end the
run as interrupted (a server that does not answer is not waited for), and a `log` that fails costs one
warning, after which the tracker is not called again; metrics.csv stays the record.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from ..config import BaseConfig
from ..contract import TRACKER_RUN_ID
from ..errors import UserError
from ..plugins import ConfigSource, Plugin, takes
from ..signals import Interrupted, StopRequest

log = logging.getLogger(__name__)

CLOSE_AFTER_STOP_S = 10.0  # how long a tracker may take to record the end of a run that failed or was stopped
LOG_PATIENCE_S = 120.0  # how long the run waits for one row to be logged before going on without the tracker


class Tracker(Protocol):
    def log(self, row: dict) -> None: ...

    def close(self, status: str) -> None: ...


def tracker_arguments(run_dir: Path, config: dict, resumed_at: int) -> dict:
    return {"run_dir": Path(run_dir), "config": config, "resumed_at": resumed_at}


def build_tracker(cfg: BaseConfig, run_dir: Path, config: dict, resumed_at: int,
                  run_id: str | None = None) -> Tracker | None:
    """The run's tracker (None for logger=csv: metrics.csv alone); `run_id`: the one its run folder recorded."""
    plugin = Plugin.of(cfg, "logger")
    if plugin.makes_nothing:
        return None
    return plugin.build(optional={"run_id": run_id}, **tracker_arguments(run_dir, config, resumed_at))


def check_tracker(cfg: BaseConfig, sources: Iterable[ConfigSource] = (), run_dir: Path | None = None) -> None:
    """Before a run: the tracker imports, takes its keys, and what it needs is installed and can be used
    (its check_available, given the YAML's keys and the run folder it takes)."""
    plugin = Plugin.of(cfg, "logger", sources)
    if plugin.makes_nothing:
        return
    factory, _ = plugin.prepare(**tracker_arguments(Path("."), {}, 0))
    check = getattr(factory, "check_available", None)
    if callable(check):
        given = {k: v for k, v in {**plugin.keys, "run_dir": run_dir}.items() if takes(check, k)}
        try:
            check(**given)
        except UserError as e:
            raise plugin.fail(str(e)) from None


class _Call:
    """A tracker call in a thread of its own, so that the run can stop waiting for it."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True, name="tracker")

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.error = e

    def wait(self, stop: StopRequest, grace_s: float | None = None) -> bool:
        """Wait until the call ends (True), a stop signal arrives meanwhile, or `grace_s` passes (False)."""
        signum, deadline = stop.signum, None if grace_s is None else time.monotonic() + grace_s
        self.thread.start()
        while self.thread.is_alive():
            self.thread.join(0.05)
            if stop.signum != signum or (deadline is not None and time.monotonic() > deadline):
                return not self.thread.is_alive()
        return True


class GuardedTracker:
    """A run's tracker, called so that it can never stop the training or keep it from stopping.

    - started (`start`) while the run's stop handling is on: a stop signal while it connects ends the run as
      interrupted at once, resumable (an unreachable server retries for minutes);
    - `log` that fails (the store broken mid-run), that a stop signal cuts short or that takes longer than
      LOG_PATIENCE_S (a server that stopped answering): one warning in train.log, and the tracker is not
      called again in this run; metrics.csv keeps every row;
    - `close` that fails: a warning; for a run that did not complete (failed, diverged, stopped) it is
      called after the run's status is recorded and given CLOSE_AFTER_STOP_S, not more.
    """

    def __init__(self, tracker: Tracker, stop: StopRequest) -> None:
        self.tracker, self.stop, self.broken = tracker, stop, False

    @classmethod
    def start(cls, make: Callable[[], Tracker | None], stop: StopRequest, iteration: int) -> GuardedTracker | None:
        """The tracker `make` builds, or None (logger=csv); a failure to build it ends the run as it says."""
        call = _Call(make)
        if not call.wait(stop):
            log.warning("the tracker had not started when %s arrived: stopping without it",
                        signal.Signals(stop.signum).name)
            raise Interrupted(stop.signum, iteration)
        if call.error is not None:
            raise call.error
        return None if call.result is None else cls(call.result, stop)

    @property
    def run_id(self) -> str | None:
        run_id = getattr(self.tracker, "run_id", None)
        return run_id if isinstance(run_id, str) else None

    def log(self, row: dict) -> None:
        if self.broken:
            return
        call = _Call(lambda: self.tracker.log(row))
        if not call.wait(self.stop, LOG_PATIENCE_S) or call.error is not None:
            self.broken = True
            why = (f"{type(call.error).__name__}: {call.error}" if call.error is not None
                   else "cut short by a stop signal" if self.stop.signum is not None
                   else f"no answer within {LOG_PATIENCE_S:g} s")
            log.warning("the tracker failed to record iteration %s (%s); it is not called again in this run: "
                        "metrics.csv keeps every row", row.get("iteration"), " ".join(why.split())[:500])

    def close(self, status: str) -> None:
        """Tell the tracker how the run ended; a tracker that fails then (its server gone) costs a warning,
        never the run's own record (recorded before this is called)."""
        if self.broken:
            return
        call = _Call(lambda: self.tracker.close(status))
        grace = CLOSE_AFTER_STOP_S if status != "completed" or self.stop.signum is not None else None
        if not call.wait(self.stop, grace):
            log.warning("the tracker did not record the end of the run within %s: left as it is",
                        f"{CLOSE_AFTER_STOP_S:g} s" if grace else "the stop signal")
        elif call.error is not None:
            log.warning("the tracker could not record the end of the run (%s: %s)", type(call.error).__name__,
                        call.error)
