"""Trackers: a live view of a run's metrics beside metrics.csv (which is always written and which the report
reads), a plug-in named by `logger._target_` (conf/logger/; none for logger=csv).

The protocol is small. The callable is called on the run's first process as
`factory(run_dir=Path, config=dict, resumed_at=int, **the YAML's keys)` when the run starts or resumes
(`resumed_at`: the iteration of the checkpoint it goes on from, 0 for a new run), and returns an object with

- `log(row)`: one metrics row (metrics.csv's columns, `iteration` among them; None where a value is not
  measured), at each evaluation;
- `close(status)`: the run ended as `status` (completed, interrupted, failed, diverged).

A resumed run writes again the rows after its checkpoint: a tracker must not show them twice (TensorBoard
purges them, MLflow skips the steps it already holds). A factory may have `check_available()`, called
before the run, raising a UserError when what it needs is not installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

from ..config import BaseConfig
from ..errors import UserError
from ..plugins import ConfigSource, Plugin


class Tracker(Protocol):
    def log(self, row: dict) -> None: ...

    def close(self, status: str) -> None: ...


def tracker_arguments(run_dir: Path, config: dict, resumed_at: int) -> dict:
    return {"run_dir": Path(run_dir), "config": config, "resumed_at": resumed_at}


def build_tracker(cfg: BaseConfig, run_dir: Path, config: dict, resumed_at: int) -> Tracker | None:
    """The run's tracker (None for logger=csv: metrics.csv alone)."""
    plugin = Plugin.of(cfg, "logger")
    if plugin.makes_nothing:
        return None
    return plugin.build(**tracker_arguments(run_dir, config, resumed_at))


def check_tracker(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> None:
    """Before a run: the tracker imports, takes its keys, and what it needs is installed."""
    plugin = Plugin.of(cfg, "logger", sources)
    if plugin.makes_nothing:
        return
    factory, _ = plugin.prepare(**tracker_arguments(Path("."), {}, 0))
    check = getattr(factory, "check_available", None)
    if callable(check):
        try:
            check()
        except UserError as e:
            raise plugin.fail(str(e)) from None
