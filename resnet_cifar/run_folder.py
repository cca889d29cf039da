"""The run folder's files (the contract in ARCHITECTURE.md), written so a crash never leaves a half file."""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import faults
from .config import DATA_SOURCE_KEYS
from .errors import Diverged, RunFolderError

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
LOCK_FILE = ".lock"
METRIC_COLUMNS = (
    "iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
    "val_error", "elapsed_s", "images_per_s",
)


class Status:
    running = "running"
    completed = "completed"
    failed = "failed"
    diverged = "diverged"
    interrupted = "interrupted"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failed(path: Path, error: Exception) -> RunFolderError:
    reason = getattr(error, "strerror", None) or error
    return RunFolderError(f"could not write {path} ({reason}); the files written before are "
                          "intact: free space or fix the folder, then run the same command again to resume")


def replace_atomically(path: Path, write) -> None:
    """Call write(temp_path), then rename over `path`: readers see the old or the new file, never half.

    A failed write (full disk, unwritable folder) leaves `path` as it was.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        kill_during = faults.count_write(path.name)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if kill_during:
            faults.kill()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise write_failed(path, e) from e


def write_json(path: Path, data: dict) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} is unreadable ({e}); move the run folder aside or delete the file") from e


def record_failure(run_dir: Path, error: Exception, config: dict, overrides: list[str]) -> None:
    """Record in summary.json how a run ended on an exception, keeping what it already says."""
    summary = read_summary(run_dir) or {"config": config, "overrides": overrides}
    status = Status.diverged if isinstance(error, Diverged) else Status.failed
    summary.update(status=status, error=f"{type(error).__name__}: {error}")
    write_json(run_dir / SUMMARY_FILE, summary)


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process, so that two processes never write into one folder.

    The lock is released by the kernel when the process dies, however it dies.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunFolderError(f"{run_dir} is in use by another process ({f.read().strip() or 'unknown'}); "
                                 "wait for it to finish or use another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


def _diff(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix[:-1], old, new)]


class ConfigMismatch(RunFolderError):
    """The run folder was started with another config; `summary` holds the original."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def check_same_config(summary: dict, config: dict, run_dir: Path) -> None:
    """Refuse to continue a run folder with a config other than the one it was started with.

    Where the data comes from (DATA_SOURCE_KEYS) is not part of the experiment: a run resumes
    from a moved data folder, and runs started when data.download defaulted to false resume now.
    """
    changes = [f"{key}: {old!r} -> {new!r}" for key, old, new in _diff(summary.get("config"), config)
               if key not in DATA_SOURCE_KEYS]
    if changes:
        raise ConfigMismatch(
            f"{run_dir} holds a run made with another config ({'; '.join(changes)}); "
            "start the new config in a new folder, or repeat the original command to resume",
            summary,
        )


class MetricsLog:
    """metrics.csv: one row per evaluation, appended and flushed to disk at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, row: dict) -> None:
        """Append one row; a row cut short by a crash is dropped by `keep_until` on resume."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS)
        if not self.path.exists():
            writer.writeheader()
        writer.writerow(row)
        try:
            kill_during = faults.count_write(self.path.name)
            with open(self.path, "a", newline="") as f:
                if kill_during:
                    f.write(text.getvalue()[:len(text.getvalue()) // 2])
                    f.flush()
                    faults.kill()
                f.write(text.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_failed(self.path, e) from e

    def last_row(self) -> dict:
        """The last evaluation, as numbers (empty if there is none)."""
        if not self.path.exists():
            return {}
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {k: float(v) if v else None for k, v in rows[-1].items()} if rows else {}

    def keep_until(self, iteration: int) -> None:
        """On resume: drop rows after the checkpoint's iteration (they will be written again) and a
        last row that a crash cut short (no line end)."""
        if not self.path.exists():
            return
        text = self.path.read_text()
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("iteration", "").isdigit()
                and int(r["iteration"]) <= iteration and None not in r.values()]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        replace_atomically(self.path, write)
