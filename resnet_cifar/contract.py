"""The run-folder contract between training and analysis: file names, metrics columns, how each file is read.

Torch-free and Hydra-free, so that analysis (multirun_analysis) and training (run_folder.RunFolder, the one
writer) read a run folder through the same code: one rule for a damaged metrics line (it is dropped and
counted, never a whole run), one place the run's config comes from (summary.json, as it was recorded when
the run started; `.hydra/` is Hydra's copy for people, read back only to recognize a run killed before its
summary.json: leftover_config), one rule for "finished".
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import filesystem
from .errors import FileProblem, RunFolderError, UserError
from .upgrade import upgrade

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
NORMALIZATION_FILE = "normalization.pt"  # the input normalization fitted on the run's training split
LOG_FILE = "train.log"
HYDRA_FOLDER = ".hydra"
LOCK_FILE = ".lock"  # who holds the folder (the lock itself is on the folder)
SWEEP_RECORD = "multirun.yaml"  # Hydra's sweeper writes it into every sweep folder
METRIC_COLUMNS = (
    "iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
    "val_error", "elapsed_s", "images_per_s",
)
OPTIONAL_METRICS = ("val_error",)  # empty when the run holds out no validation images
HEADER = ",".join(METRIC_COLUMNS).encode()
FINAL_METRICS = ("test_error", "test_loss", "train_error", "train_loss", "val_error")  # in summary.json at the end
PERCENTAGES = ("train_error", "test_error", "val_error")  # errors in %: a number in [0, 100]
DATA_SIZES = ("train_images", "val_images", "test_images")  # in summary.json: the images of each split
TRACKER_RUN_ID = "tracker_run_id"  # in summary.json: the live tracker's id of this folder's run (MLflow's run id)


class Status(str, Enum):
    """summary.json's `status` (a str, so that it is written and compared as the plain word)."""

    running = "running"
    completed = "completed"
    failed = "failed"
    diverged = "diverged"
    interrupted = "interrupted"


class UnreadableFile(RunFolderError):
    """A contract file that exists but cannot be read as the contract says (the message says why)."""


def read_summary(run_dir: Path) -> dict | None:
    """A run folder's summary.json (None if it has none); UnreadableFile if it is damaged or not a mapping."""
    path = Path(run_dir) / SUMMARY_FILE
    if not os.path.lexists(path):
        return None
    try:
        summary = json.loads(filesystem.read_text(path, follow=False))
    except (OSError, ValueError, FileProblem, RecursionError) as e:  # RecursionError: nested past Python's limit
        raise UnreadableFile(f"{path} is unreadable ({e}); move the run folder aside or delete the file") from None
    if not isinstance(summary, dict):
        raise UnreadableFile(f"{path} is unreadable (it holds {json.dumps(summary)[:40]}, not a run's summary); "
                             "move the run folder aside or delete the file")
    return summary


def recorded_config(summary: dict, run_dir: Path) -> dict:
    """The one reader of a run's config: the one its summary.json recorded when it started, read as today's
    (upgrade.py: older values and keys added since). Training (a folder resumed or compared), the report and a
    loaded run all read it here; `.hydra/` is Hydra's copy for people, read back only by leftover_config."""
    config = summary.get("config")
    if not isinstance(config, dict):
        raise UnreadableFile(f"{Path(run_dir) / SUMMARY_FILE} holds no run config (a mapping under 'config')")
    return upgrade(config)


def leftover_config(run_dir: Path) -> dict | None:
    """The config in `.hydra/config.yaml` of a folder that has no summary.json: the one thing it may tell, that
    an earlier start of this very run was killed before summary.json was written (RunFolder then goes on in
    it). None where it holds no readable mapping: then the folder's files are not a run's of this config."""
    try:
        text = filesystem.read_text(Path(run_dir) / HYDRA_FOLDER / "config.yaml", limit=2**20, follow=False)
        recorded = OmegaConf.to_container(OmegaConf.create(text))
        return upgrade(recorded) if isinstance(recorded, dict) else None
    except (OSError, UserError, ValueError, yaml.YAMLError, OmegaConfBaseException):
        return None


def valid_metric(name: str, value: object) -> bool:
    """Whether a recorded value of a metric can be one: a finite number, an error in [0, 100] (percent), any
    other metric (loss, lr, time, speed, iteration, epoch) at least 0. NaN, infinity, -5 or 150 are damage."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return 0 <= value <= 100 if name in PERCENTAGES else value >= 0


def _whole(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and float(value).is_integer()


def says_finished(summary: dict, max_iters: object) -> bool:
    """The one rule for "this run finished": its summary says completed, with a final test error that is a
    finite number in [0, 100], at trainer.max_iters. A summary that says completed without them (edited, or
    damaged) is not believed: training resumes it, the report does not count it."""
    error, iteration = summary.get("test_error"), summary.get("iteration")
    return summary.get("status") == Status.completed and valid_metric("test_error", error) and \
        _whole(iteration) and _whole(max_iters) and iteration >= max_iters


@dataclass
class Metrics:
    """metrics.csv read back: its whole rows (text, as written) and how many lines were dropped as damaged."""

    rows: list[dict[str, str]]
    dropped: int

    def numbers(self) -> list[dict[str, float | None]]:
        """The rows as numbers (an empty optional column is None)."""
        return [{k: float(v) if v != "" else None for k, v in row.items()} for row in self.rows]


def parse_metrics_line(raw: bytes) -> dict[str, str] | None:
    """One line of metrics.csv as a row, or None if it is not a whole row of numbers that can be metrics (not
    UTF-8, cut short, an unbalanced quote, NaN, an error outside [0, 100]: valid_metric): each line is parsed
    on its own, so a damaged line never takes a neighbour with it."""
    try:
        fields = next(csv.reader([raw.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(fields) != len(METRIC_COLUMNS) or not fields[0].isdigit():
        return None
    for name, value in zip(METRIC_COLUMNS, fields):
        if value == "" and name in OPTIONAL_METRICS:
            continue
        try:
            number = float(value)
        except ValueError:
            return None
        if not valid_metric(name, number):
            return None
    return dict(zip(METRIC_COLUMNS, fields))


def read_metrics(path: Path) -> Metrics:
    """metrics.csv, a line at a time: a line that is not a whole row (damaged, or cut short by a crash: the
    last line without its end) is dropped and counted."""
    path = Path(path)
    if not os.path.lexists(path):
        return Metrics([], 0)
    try:
        content = filesystem.read_bytes(path, follow=False)
    except (OSError, FileProblem) as e:
        raise UnreadableFile(f"{path} is unreadable ({getattr(e, 'strerror', None) or e})") from None
    *lines, tail = content.split(b"\n")  # tail: a last line without its end (or b"")
    rows, dropped = [], 1 if tail else 0
    for raw in (line.rstrip(b"\r") for line in lines):
        if raw in (b"", HEADER):
            continue
        row = parse_metrics_line(raw)
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    return Metrics(rows, dropped)
