"""Run folders -> pandas frames: one row per run, and the curves in long form.

Reads only the files of the run-folder contract (.hydra/config.yaml,
summary.json, metrics.csv), older config values read as today's (resnet_cifar.config.upgrade);
never imports the training code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from resnet_cifar.config import upgrade

CURVE_METRICS = ("lr", "train_loss", "train_error", "test_loss", "test_error", "val_error")
FINAL_COLUMNS = ("test_error", "test_loss", "train_error", "train_loss", "val_error")
FLOATS = "%.10g"  # how the report's CSV files write floats: 21.8, not the 21.799999999999997 of 100 - 78.2
DATA_SIZES = ("train_images", "val_images", "test_images")  # in summary.json since the report says its data


class BrokenRun(Exception):
    """A run folder with a missing, truncated or unreadable file."""


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per run: "run", "status", final values, flattened config
    curves: pd.DataFrame  # long form: run, iteration, metric, value
    broken: dict[str, str] = field(default_factory=dict)  # run folder -> what is wrong with it
    config_columns: list[str] = field(default_factory=list)


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every folder below `paths` that Hydra made a run of (it holds .hydra/config.yaml)."""
    found = set()
    for path in paths:
        if (path / ".hydra").is_dir():
            found.add(path)
        found.update(p.parent for p in path.rglob(".hydra") if p.is_dir())
    return sorted(found)


def flatten_config(config: dict) -> dict:
    """Dotted keys; lists become their text so that runs can be grouped by them."""
    flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def _read(path: Path, parse):
    if not path.is_file():
        raise BrokenRun(f"{path.name} is missing")
    try:
        return parse(path)
    except Exception as e:
        raise BrokenRun(f"{path.name} is unreadable ({type(e).__name__}: {e})") from e


def _metrics(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    needed = ["iteration", "train_error", "test_error"]
    if any(c not in frame for c in needed):
        raise ValueError(f"columns {list(frame.columns)} lack one of {needed}")
    if frame[needed].isna().any().any():
        raise ValueError("a row is cut off")
    return frame


def _mapping(path: Path, load) -> dict:
    """A file that must hold a mapping (a YAML or JSON object); anything else is a BrokenRun."""
    content = _read(path, load)
    if not isinstance(content, dict):
        raise BrokenRun(f"{path.name} holds {type(content).__name__ if content is not None else 'nothing'}, "
                        "not the mapping the run folder contract says")
    return content


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame, list[str]]:
    """(row, curves, config keys) of one run folder, or BrokenRun."""
    config = upgrade(_mapping(run_dir / ".hydra" / "config.yaml", lambda p: OmegaConf.to_container(OmegaConf.load(p))))
    summary = _mapping(run_dir / "summary.json", lambda p: json.loads(p.read_text()))
    flat = flatten_config(config)
    metrics_path = run_dir / "metrics.csv"
    if metrics_path.exists() or summary.get("status") == "completed":
        metrics = _read(metrics_path, _metrics)
    else:  # started, no evaluation yet
        metrics = pd.DataFrame(columns=["iteration", *CURVE_METRICS])
    row = {"run": str(run_dir), "status": summary.get("status", "unknown"),
           "iteration": summary.get("iteration"), "params": summary.get("params"),
           "wall_time_s": summary.get("wall_time_s"), "error": summary.get("error"),
           **{key: summary.get(key) for key in DATA_SIZES},
           "commit": (summary.get("source") or {}).get("commit")}  # the project's code, when run from a checkout
    last = metrics.iloc[-1] if len(metrics) else {}
    for column in FINAL_COLUMNS:  # the end of training (or the latest evaluation of a running run)
        value = summary.get(column) if row["status"] == "completed" else None
        row[column] = value if value is not None else last.get(column)
    if row["test_error"] is not None:
        row["test_accuracy"] = 100.0 - row["test_error"]
    curves = metrics.melt(id_vars="iteration", value_vars=[m for m in CURVE_METRICS if m in metrics],
                          var_name="metric", value_name="value").dropna(subset=["value"])
    curves.insert(0, "run", str(run_dir))
    return {**row, **flat}, curves, list(flat)


def collect(paths: list[Path]) -> Collection:
    rows, curves, broken, keys = [], [], {}, {}
    for run_dir in find_run_dirs(paths):
        try:
            row, run_curves, config_keys = load_run(run_dir)
        except BrokenRun as e:
            broken[str(run_dir)] = str(e)
            continue
        rows.append(row)
        curves.append(run_curves)
        keys.update(dict.fromkeys(config_keys))
    runs = pd.DataFrame(rows)
    all_curves = (pd.concat(curves, ignore_index=True) if curves
                  else pd.DataFrame(columns=["run", "iteration", "metric", "value"]))
    return Collection(runs, all_curves, broken, list(keys))
