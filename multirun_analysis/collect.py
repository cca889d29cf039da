"""Run folders -> pandas frames: one row per run, and the curves in long form.

Reads a run folder only through the run-folder contract (resnet_cifar.contract, torch-free, the code the
training side reads it with): the run's config from summary.json (as `evaluate` and `load_run` read it),
older config values read as today's (resnet_cifar.config.upgrade), metrics.csv a line at a time (a damaged
line is dropped and counted, never the whole run). Never imports the training code.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from resnet_cifar.config import NAME_KEY
from resnet_cifar.upgrade import upgrade
from resnet_cifar.contract import (
    DATA_SIZES,
    FINAL_METRICS,
    HYDRA_FOLDER,
    METRIC_COLUMNS,
    METRICS_FILE,
    PERCENTAGES,
    SUMMARY_FILE,
    Status,
    UnreadableFile,
    read_metrics,
    read_summary,
    recorded_config,
    says_finished,
    valid_metric,
)

DEFAULT_DIRS = ("multirun", "outputs")  # where Hydra puts sweeps and single runs
CURVE_METRICS = ("lr", "train_loss", "train_error", "test_loss", "test_error", "val_error")
FLOATS = "%.10g"  # how the report's CSV files write floats: 21.8, not the 21.799999999999997 of 100 - 78.2
ARCH = f"arch.{NAME_KEY}"  # the net's name (its arch option): a row of the table, a panel of Figure 6


WHOLE_NUMBERS = ("depth", "seed")  # config keys the table and figures sort and group as numbers


def _is_number(value: object, whole: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return float(value).is_integer() if whole else True


class BrokenRun(Exception):
    """A run folder with a missing, truncated or unreadable file."""


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per run: "run", "status", final values, flattened config
    curves: pd.DataFrame  # long form: run, iteration, metric, value
    broken: dict[str, str] = field(default_factory=dict)  # run folder -> what is wrong with it
    config_columns: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # run folder -> what was dropped from it


def _is_run_dir(names: Iterable[str]) -> bool:
    return SUMMARY_FILE in names or HYDRA_FOLDER in names


def find_run_dirs(paths: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """(every folder below `paths` that a run was made in: it holds summary.json or Hydra's .hydra/; the
    symbolic links to folders below them, each with why it is left out). A link is never followed below a
    folder given: the report reads what lies in the sweep, not what a link there points to (give the folder
    it points to if that is meant)."""
    found, links = set(), {}
    for path in paths:
        for folder, subfolders, files in os.walk(path):  # never into a link (followlinks=False)
            here = Path(folder)
            if _is_run_dir([*subfolders, *files]):
                found.add(here)
            for name in subfolders:
                link = here / name
                if link.is_symlink() and name != HYDRA_FOLDER and link.is_dir():
                    what = "a run folder" if _is_run_dir(os.listdir(link)) else "a folder"
                    links[str(link)] = (f"a symbolic link (to {os.readlink(link)}), not {what} of {path}: left "
                                        "out, with any runs below it; give the folder it points to if you mean it")
    return sorted(found), links


def flatten_config(config: dict) -> dict:
    """Dotted keys; lists become their text so that runs can be grouped by them."""
    flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def damaged_value(record: dict, source: str) -> str | None:
    """Why a final metric or the iteration a run recorded cannot be one (NaN, infinity, an error outside
    [0, 100], a negative loss: contract.valid_metric), or None; a missing value (a blank in runs.csv) is
    not damage."""
    for key in (*FINAL_METRICS, "iteration"):
        value = record.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value) and source == RUNS_FILE):
            continue
        if not (_is_number(value, whole=key == "iteration") and valid_metric(key, value)):
            what = "a finite number in [0, 100]" if key in PERCENTAGES else "a finite number >= 0"
            return f"{source} says {key}: {str(value)[:40]!r}, not {what}: left out as damaged"
    return None


def _count(value: object) -> bool:
    return _is_number(value, whole=True) and math.isfinite(value) and value >= 0


def _is_text(value: object) -> bool:
    return isinstance(value, str)


UNKNOWN_STATUS = "unknown"  # a summary.json that names no status
STATUSES = (*(s.value for s in Status), UNKNOWN_STATUS)
# the other fields of a run's record the report reads: (the test, what it must be); a blank is fine
FIELD_TYPES = {"status": (lambda v: isinstance(v, str) and v in STATUSES, f"one of {', '.join(STATUSES)}"),
               "params": (_count, "a whole number >= 0"),
               "wall_time_s": (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
               **{key: (_count, "a whole number >= 0") for key in DATA_SIZES},
               "error": (_is_text, "text"),
               "source": (lambda v: isinstance(v, dict) and (v.get("commit") is None or _is_text(v["commit"])),
                          "a mapping of commit (text) and dirty")}


NUMBER_FIELDS = ("params", "wall_time_s", *DATA_SIZES)


def _as_number(text: str) -> float | str:
    """A runs.csv cell of a column pandas read as text: its number, or the text itself (then damage)."""
    try:
        return float(text)
    except ValueError:
        return text


def mistyped_field(record: dict, source: str) -> str | None:
    """Why a field the report reads is not what it can be (a received folder's summary.json with
    `"params": "abc"` or `"status": ["x"]` aborted the whole report with a traceback), or None."""
    for key, (valid, what) in FIELD_TYPES.items():
        value = record.get(key)
        if value is None or (source == RUNS_FILE and (key == "error" or isinstance(value, float) and math.isnan(value))):
            continue  # runs.csv: a blank is NaN, and pandas reads an all-digit error text as a number
        if not valid(value):
            return f"{source} says {key}: {str(value)[:40]!r}, not {what}: left out as damaged"
    return None


def completed_but_not_finished(record: dict, max_iters: object, source: str) -> str | None:
    """Why a run that says completed is not counted (contract.says_finished, the one rule training resumes
    by: a final test error in [0, 100] at trainer.max_iters), or None."""
    if record.get("status") != Status.completed or says_finished(record, max_iters):
        return None
    error = record.get("test_error")
    error = None if isinstance(error, float) and math.isnan(error) else error
    return (f"{source} says completed, but with test_error={error} at iteration {record.get('iteration')} of "
            f"{max_iters}: not believed, left out (the run's own command resumes it)")


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, list[str], int]:
    """(row, curves, config keys, damaged metrics lines dropped) of one run folder, or BrokenRun."""
    try:
        summary = read_summary(run_dir)
        if summary is None:
            raise BrokenRun(f"{SUMMARY_FILE} is missing")
        config = recorded_config(summary, run_dir)
    except UnreadableFile as e:
        raise BrokenRun(str(e).replace(str(run_dir / SUMMARY_FILE), SUMMARY_FILE)) from e
    except Exception as e:  # a config too damaged to read as today's
        raise BrokenRun(f"{SUMMARY_FILE} holds a config that cannot be read ({type(e).__name__}: {e})") from e
    for key in WHOLE_NUMBERS:
        if key in config and not _is_number(config[key], whole=True):
            raise BrokenRun(f"{SUMMARY_FILE} says {key}: {str(config[key])[:40]!r}, not a whole number")
    try:  # JSON's \ud800 reads as a lone surrogate, which no file can hold: runs.csv failed to be written
        json.dumps(summary, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BrokenRun(f"{SUMMARY_FILE} holds text that is not Unicode (a lone surrogate such as \\ud800): left "
                        "out as damaged") from None
    damage = damaged_value(summary, SUMMARY_FILE) or mistyped_field(summary, SUMMARY_FILE)
    if damage:
        raise BrokenRun(damage)
    flat = flatten_config(config)
    status = summary.get("status", UNKNOWN_STATUS)
    doubt = completed_but_not_finished(summary, flat.get("trainer.max_iters"), SUMMARY_FILE)
    if doubt:
        raise BrokenRun(doubt)
    metrics_path = run_dir / METRICS_FILE
    if status == Status.completed and not metrics_path.exists():
        raise BrokenRun(f"{METRICS_FILE} is missing")
    try:
        metrics = read_metrics(metrics_path)
    except UnreadableFile as e:
        raise BrokenRun(str(e).replace(str(metrics_path), METRICS_FILE)) from None
    numbers = pd.DataFrame(metrics.numbers(), columns=list(METRIC_COLUMNS))
    if status == Status.completed and numbers.empty:
        raise BrokenRun(f"{METRICS_FILE} holds no whole row")
    row = {"run": str(run_dir), "status": status,
           "finished": says_finished(summary, flat.get("trainer.max_iters")),  # the contract's one rule
           "iteration": summary.get("iteration"), "params": summary.get("params"),
           "wall_time_s": summary.get("wall_time_s"), "error": summary.get("error"),
           **{key: summary.get(key) for key in DATA_SIZES},
           "commit": (summary.get("source") or {}).get("commit"),  # the project's code, when run from a checkout
           # the command line's overrides as JSON text: what a command adding seeds to this run's cell repeats
           "overrides": json.dumps(summary["overrides"]) if isinstance(summary.get("overrides"), list) else None}
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


RUNS_FILE, CURVES_FILE = "runs.csv", "curves.csv"  # what a report writes, and reads back (read_report)
# runs.csv columns that are not config keys: read_run's row
ROW_COLUMNS = ("run", "status", "finished", "iteration", "params", "wall_time_s", "error", *DATA_SIZES, "commit",
               "overrides", *FINAL_METRICS, "test_accuracy")


def _unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def _cell_value(value):
    """A runs.csv cell as the config held it: NaN as null, a list's text as the list."""
    if isinstance(value, float) and pd.isna(value):
        return None
    if isinstance(value, str) and value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_report(path: Path) -> Collection:
    """An earlier report's runs.csv (and curves.csv beside it) as the runs it was made from: the statistics
    of today over runs whose folders are gone (committed results, another machine's runs). Each row's config
    is read as today's (config.upgrade), like a run folder's."""
    try:
        table = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as e:
        raise BrokenRun(f"{path.name} cannot be read ({e})") from e
    if "run" not in table or "status" not in table:
        raise BrokenRun(f"{path.name} is not a report's runs.csv (no run and status columns)")
    config_columns = [c for c in table.columns if c not in ROW_COLUMNS]
    rows, keys, left_out = [], {}, {}
    for record in table.to_dict("records"):
        for key in (*FINAL_METRICS, "iteration", *NUMBER_FIELDS):  # a column with a word in it is read as text
            if isinstance(record.get(key), str):
                record[key] = _as_number(record[key])
        problem = damaged_value(record, RUNS_FILE) or mistyped_field(record, RUNS_FILE) or completed_but_not_finished(
            record, record.get("trainer.max_iters"), RUNS_FILE)
        if problem:
            left_out[f"{record['run']} (in {path})"] = problem
            continue
        config = _unflatten({k: _cell_value(record[k]) for k in config_columns})
        flat = flatten_config(upgrade(config))
        finished = says_finished(record, flat.get("trainer.max_iters"))  # decided again: runs.csv is data
        rows.append({**{k: record.get(k) for k in ROW_COLUMNS if k in record}, **flat, "finished": finished})
        keys.update(dict.fromkeys(flat))
    curves_path = path.parent / CURVES_FILE
    curves = (pd.read_csv(curves_path) if curves_path.is_file()
              else pd.DataFrame(columns=["run", "iteration", "metric", "value"]))
    kept = [row["run"] for row in rows]
    return Collection(pd.DataFrame(rows), curves[curves["run"].isin(kept)], left_out, list(keys), {})


def collect(paths: list[Path]) -> Collection:
    """The runs under `paths`: run and sweep folders, and earlier reports' runs.csv files."""
    rows, curves, broken, keys, notes = [], [], {}, {}, {}
    for report_csv in [p for p in paths if p.is_file()]:
        try:
            earlier = read_report(report_csv)
        except BrokenRun as e:
            broken[str(report_csv)] = str(e)
            continue
        rows.extend(earlier.runs.to_dict("records"))
        curves.append(earlier.curves)
        broken.update(earlier.broken)
        keys.update(dict.fromkeys(earlier.config_columns))
    run_dirs, links = find_run_dirs([p for p in paths if not p.is_file()])
    broken.update(links)
    for run_dir in run_dirs:
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


def finished(runs: pd.DataFrame) -> pd.Series:
    """Which runs finished, by the contract's one rule (contract.says_finished, decided when they were read):
    what the table, the comparisons, the figures and Figure 7 count."""
    if "finished" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["finished"].fillna(False).astype(bool)


def order_key(value) -> tuple:
    """Numbers as numbers (20 before 100), then text: the order of legends, pairs and the table's rows."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def in_order(values) -> list:
    """Distinct values in order_key's order; what legends and pairs follow."""
    return sorted(pd.unique(pd.Series(list(values)).dropna()), key=order_key)
