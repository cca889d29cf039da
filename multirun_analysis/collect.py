"""Run folders -> pandas frames: one row per run, and the curves in long form.

Reads a run folder only through the run-folder contract (resnet_cifar.contract, torch-free, the code the
training side reads it with): the run's config from summary.json (as `evaluate` and `load_run` read it),
older config values read as today's (resnet_cifar.config.upgrade), metrics.csv a line at a time (a damaged
line is dropped and counted, never the whole run). Never imports the training code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from resnet_cifar.config import NAME_KEY, upgrade
from resnet_cifar.contract import (
    DATA_SIZES, FINAL_METRICS, HYDRA_FOLDER, METRIC_COLUMNS, METRICS_FILE, SUMMARY_FILE, Status, UnreadableFile,
    read_metrics, read_summary, run_config,
)

DEFAULT_DIRS = ("multirun", "outputs")  # where Hydra puts sweeps and single runs
CURVE_METRICS = ("lr", "train_loss", "train_error", "test_loss", "test_error", "val_error")
FLOATS = "%.10g"  # how the report's CSV files write floats: 21.8, not the 21.799999999999997 of 100 - 78.2
ARCH = f"arch.{NAME_KEY}"  # the net's name (its arch option): a row of the table, a panel of Figure 6


class BrokenRun(Exception):
    """A run folder with a missing, truncated or unreadable file."""


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per run: "run", "status", final values, flattened config
    curves: pd.DataFrame  # long form: run, iteration, metric, value
    broken: dict[str, str] = field(default_factory=dict)  # run folder -> what is wrong with it
    config_columns: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # run folder -> what was dropped from it


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every folder below `paths` that a run was made in (it holds summary.json or Hydra's .hydra/)."""
    found = set()
    for path in paths:
        for marker in (SUMMARY_FILE, HYDRA_FOLDER):
            if (path / marker).exists():
                found.add(path)
            found.update(p.parent for p in path.rglob(marker))
    return sorted(found)


def flatten_config(config: dict) -> dict:
    """Dotted keys; lists become their text so that runs can be grouped by them."""
    flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, list[str], int]:
    """(row, curves, config keys, damaged metrics lines dropped) of one run folder, or BrokenRun."""
    try:
        summary = read_summary(run_dir)
        if summary is None:
            raise BrokenRun(f"{SUMMARY_FILE} is missing")
        config = upgrade(run_config(summary, run_dir))
    except UnreadableFile as e:
        raise BrokenRun(str(e).replace(str(run_dir / SUMMARY_FILE), SUMMARY_FILE)) from e
    except Exception as e:  # a config too damaged to read as today's
        raise BrokenRun(f"{SUMMARY_FILE} holds a config that cannot be read ({type(e).__name__}: {e})") from e
    flat = flatten_config(config)
    status = summary.get("status", "unknown")
    metrics_path = run_dir / METRICS_FILE
    if status == Status.completed and not metrics_path.exists():
        raise BrokenRun(f"{METRICS_FILE} is missing")
    metrics = read_metrics(metrics_path)
    numbers = pd.DataFrame(metrics.numbers(), columns=list(METRIC_COLUMNS))
    if status == Status.completed and numbers.empty:
        raise BrokenRun(f"{METRICS_FILE} holds no whole row")
    row = {"run": str(run_dir), "status": status,
           "iteration": summary.get("iteration"), "params": summary.get("params"),
           "wall_time_s": summary.get("wall_time_s"), "error": summary.get("error"),
           **{key: summary.get(key) for key in DATA_SIZES},
           "commit": (summary.get("source") or {}).get("commit")}  # the project's code, when run from a checkout
    last = numbers.iloc[-1] if len(numbers) else {}
    for column in FINAL_METRICS:  # the end of training (or the latest evaluation of a running run)
        value = summary.get(column) if status == Status.completed else None
        row[column] = value if value is not None else last.get(column)
    if row["test_error"] is not None and not pd.isna(row["test_error"]):
        row["test_accuracy"] = 100.0 - row["test_error"]
    curves = numbers.melt(id_vars="iteration", value_vars=list(CURVE_METRICS),
                          var_name="metric", value_name="value").dropna(subset=["value"])
    curves["iteration"] = curves["iteration"].astype(int)
    curves.insert(0, "run", str(run_dir))
    return {**row, **flat}, curves, list(flat), metrics.dropped


def collect(paths: list[Path]) -> Collection:
    rows, curves, broken, keys, notes = [], [], {}, {}, {}
    for run_dir in find_run_dirs(paths):
        try:
            row, run_curves, config_keys, dropped = read_run(run_dir)
        except BrokenRun as e:
            broken[str(run_dir)] = str(e)
            continue
        rows.append(row)
        curves.append(run_curves)
        keys.update(dict.fromkeys(config_keys))
        if dropped:
            notes[str(run_dir)] = f"{dropped} damaged line(s) of {METRICS_FILE} left out"
    runs = pd.DataFrame(rows)
    all_curves = (pd.concat(curves, ignore_index=True) if curves
                  else pd.DataFrame(columns=["run", "iteration", "metric", "value"]))
    return Collection(runs, all_curves, broken, list(keys), notes)
