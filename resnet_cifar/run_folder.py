"""The run folder's one owner (docs/guide/training.md "The run folder", docs/design/run-folder.md; its files and how they are read: contract.py).

`RunFolder` is the only writer of a run's files: it holds the folder for one
process at a time, then writes .hydra/ and train.log, reads and records
summary.json, appends metrics.csv, saves checkpoint.pt, normalization.pt and
model.pt. A process that is refused the folder (in use, or another run's)
writes nothing into it. Every file is replaced atomically or appended row by
row, so that a crash never leaves half a file.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_checkpoint
from .config import NOT_THE_EXPERIMENT, RESUMED_ON_THE_SAME, is_under
from .run_spec import RunSpec
from .console import LOG_FORMAT
from .contract import (
    CHECKPOINT_FILE, HYDRA_FOLDER, LOCK_FILE, LOG_FILE, METRIC_COLUMNS, METRICS_FILE, MODEL_FILE, NORMALIZATION_FILE,
    SUMMARY_FILE, TRACKER_RUN_ID, Status, leftover_config, read_metrics, read_summary, recorded_config, says_finished,
)
from . import filesystem
from .errors import Diverged, FileProblem, RunFolderError, UserError

log = logging.getLogger(__name__)


def _diff(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix[:-1], old, new)]


def config_changes(summary: dict, config: dict, resumes: bool | None = None) -> list[str]:
    """How `config` differs from the run a folder's summary records ('key: old -> new'), leaving aside where
    the data comes from and how the run is carried out or watched (NOT_THE_EXPERIMENT);
    the earlier config is read as today's (config.upgrade). A run that is to resume from its checkpoint must
    do so on the device it started on (RESUMED_ON_THE_SAME): the checkpoint holds that device's random state
    (`resumes`: whether it will, by default unless the summary says completed)."""
    earlier = recorded_config(summary, Path(".")) if isinstance(summary.get("config"), dict) else summary.get("config")
    ignored = list(NOT_THE_EXPERIMENT)
    if summary.get("status") != Status.completed if resumes is None else resumes:
        ignored = [k for k in ignored if k not in RESUMED_ON_THE_SAME]
    return [f"{key}: {old!r} -> {new!r}" for key, old, new in _diff(earlier, config) if not is_under(key, ignored)]


class ConfigMismatch(RunFolderError):
    """The run folder was started with another config; `summary` holds the original."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


class MetricsLog:
    """metrics.csv: one row per evaluation, appended and flushed to disk at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, row: dict) -> None:
        """Append one row; a row cut short by a crash is dropped by `keep_until` on resume."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS)
        if not os.path.lexists(self.path):
            writer.writeheader()
        writer.writerow(row)
        filesystem.append_text(self.path, text.getvalue())

    def rows(self) -> list[dict]:
        """The file's whole rows (contract.read_metrics: a damaged line is dropped, and counted in the log)."""
        metrics = read_metrics(self.path)
        if metrics.dropped:
            log.warning("%s: %d damaged line(s) dropped", self.path, metrics.dropped)
        return metrics.rows

    def last_row(self) -> dict:
        """The last evaluation, as numbers (empty if there is none)."""
        rows = self.rows()
        return {k: float(v) if v else None for k, v in rows[-1].items()} if rows else {}

    def keep_until(self, iteration: int) -> None:
        """On resume: keep the whole rows up to the checkpoint's iteration (those after it will be written
        again), in order, and drop damaged lines."""
        if not self.path.exists():
            return
        rows = [r for r in self.rows() if int(r["iteration"]) <= iteration]

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        filesystem.write_text(self.path, text.getvalue(), single_writer=True)


_warned_no_locking = False


def _warn_no_locking(path: Path, reason: str) -> None:
    global _warned_no_locking
    if not _warned_no_locking:
        log.warning("%s is on a file system that cannot lock (%s): nothing keeps a second process out of this "
                    "run folder; do not start the same run twice", path, reason)
        _warned_no_locking = True


class RunFolder:
    """One run's folder: what it holds of earlier starts, and every write into it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.metrics = MetricsLog(self.path / METRICS_FILE)
        self.summary: dict | None = None  # as last read or recorded
        self.started = False  # whether this process recorded the run as running (and so records its end)
        self.made: list[Path] = []  # what this process created in the folder: all that bad input may remove

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    # -- holding it --------------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the folder for this process, so that two processes never write into one folder.

        The lock is on the folder itself, not on a file in it that a user could delete; the kernel
        releases it when the process dies, however it dies, and the processes it forks (DataLoader
        workers) do not keep it (filesystem.folder_held). `.lock` only says who holds it, written once the
        run is this process's own (write_hydra_files): a process refused the folder changes nothing in it.
        On a file system that cannot lock (NFS without its lock service, Lustre without flock) the run
        goes on, said once in the log.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with filesystem.folder_held(self.path, self._in_use) as cannot_lock:
            if cannot_lock:
                _warn_no_locking(self.path, cannot_lock)
            yield

    def _in_use(self) -> RunFolderError:
        try:
            holder = filesystem.read_text(self.path / LOCK_FILE, limit=4096, follow=False).strip()
        except (OSError, UserError):
            holder = ""
        return RunFolderError(f"{self.path} is in use by another process "
                              f"({' '.join(holder.split())[:200] or 'unknown'}); wait for it to finish or use another "
                              "folder")

    # -- what an earlier start left --------------------------------------------------------------
    def previous(self, spec: RunSpec) -> dict | None:
        """The summary an earlier start of this run left (None if none); refuses another config.

        Where the data comes from and how the run is carried out or watched
        (NOT_THE_EXPERIMENT) are not compared; the earlier config is read as today's (config.upgrade).
        """
        summary = read_summary(self.path)
        if summary:
            changes = config_changes(summary, spec.recorded)
            if changes:
                raise ConfigMismatch(
                    f"{self.path} holds a run made with another config ({'; '.join(changes)}); "
                    "start the new config in a new folder, or repeat the original command to resume", summary)
        self.summary = summary
        return summary

    def completed(self, spec: RunSpec) -> bool:
        """Whether this run is already completed here (said in the log); refuses another config. A summary
        that says completed without a final test error or before trainer.max_iters is not believed: the
        run goes on from its checkpoint, and says so."""
        summary = self.previous(spec)
        if not summary or summary.get("status") != Status.completed:
            return False
        error, iteration = summary.get("test_error"), summary.get("iteration")
        if not says_finished(summary, spec.config.trainer.max_iters):
            log.warning("%s says completed, but with test_error=%s at iteration %s of %d: resuming it from its "
                        "checkpoint instead", self.path / SUMMARY_FILE, error, iteration, spec.config.trainer.max_iters)
            return False
        log.info("%s is already completed (test error %.2f%%); nothing to do", self.path, error)
        return True

    def load_checkpoint(self) -> dict | None:
        """The training state saved last (None if there is none)."""
        return load_checkpoint(self.checkpoint_path) if self.checkpoint_path.exists() else None

    # -- writing ----------------------------------------------------------------------------------
    def start(self, spec: RunSpec, **facts) -> None:
        """Record the run as running, with the facts of this start (`started_at` among them); a resumed
        run keeps the time it first started and the id its tracker gave it."""
        earlier = read_summary(self.path) or {}
        self.summary = {**facts, "status": Status.running, "config": spec.recorded, "overrides": spec.overrides,
                        "started_at": earlier.get("started_at", facts["started_at"])}
        if isinstance(earlier.get(TRACKER_RUN_ID), str):
            self.summary[TRACKER_RUN_ID] = earlier[TRACKER_RUN_ID]
        self.started = True
        self._write_summary(self.summary)

    def _write_summary(self, summary: dict) -> None:
        self._write(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def record(self, **changes) -> None:
        """Update the summary this process started and write it."""
        assert self.summary is not None, "record() before start()"
        self.summary.update(changes)
        self._write_summary(self.summary)

    def record_failure(self, error: BaseException, config: dict, overrides: list[str]) -> None:
        """Record a failure that the run could not record itself: before it started (a sweep job with bad
        input gets a summary, so that the sweep can list it), or in a worker process that died. Keeps
        what summary.json already says."""
        summary = read_summary(self.path) or {"config": config, "overrides": overrides}
        status = Status.diverged if isinstance(error, Diverged) else Status.failed
        summary.update(status=status, error=f"{type(error).__name__}: {error}")
        self.summary = summary
        self._write_summary(summary)

    def _write(self, path: Path, write_text: str | None = None, save: object = None) -> None:
        """Replace one file of the folder atomically (text, or a torch.save of `save`), noting whether this
        process made it."""
        new = not os.path.lexists(path)
        if write_text is not None:  # single writer: the folder's holder
            filesystem.write_text(path, write_text, single_writer=True)
        else:
            filesystem.replace_atomically(path, lambda f: torch.save(save, f), single_writer=True)
        if new:
            self.made.append(path)

    def _check_leftovers_are_this_runs(self, config: dict) -> None:
        """A folder without summary.json may hold what an earlier start of this run left before it began
        (killed while its data loaded): its .hydra/config.yaml then records this config. Anything else under
        the names a run writes (a user's train.log, .hydra/, normalization.pt) is not this run's: refused
        before a byte is written, so that nothing of it is overwritten, appended to, or read as ours."""
        if os.path.lexists(self.path / SUMMARY_FILE):
            return  # a run of this project: previous() has compared its config
        present = [name for name in (LOG_FILE, HYDRA_FOLDER, METRICS_FILE, CHECKPOINT_FILE, MODEL_FILE,
                                     NORMALIZATION_FILE)  # a link among them: refused as a link, where written
                   if os.path.lexists(self.path / name) and not (self.path / name).is_symlink()]
        if not present:
            return
        recorded = leftover_config(self.path)
        # no checkpoint before summary.json: nothing to resume, the device may differ
        if recorded is not None and not config_changes({"config": recorded}, config, resumes=False):
            return
        raise RunFolderError(f"{self.path} holds {', '.join(present)} but no {SUMMARY_FILE}, and no record of this "
                             "run's config: it is not a run of this command (or one of another config); nothing "
                             "was written into it: choose an empty or new folder, or move those files aside")

    def write_hydra_files(self, config: dict, overrides: list[str], hydra: DictConfig | None) -> None:
        """.hydra/config.yaml (the run's config, plug-ins named), overrides.yaml and hydra.yaml, as Hydra
        writes them, and .lock (who holds the folder), once the run is this process's own (held, and its
        config checked against what the folder holds)."""
        self._check_leftovers_are_this_runs(config)
        self._write(self.path / LOCK_FILE, f"pid {os.getpid()} on {socket.gethostname()}\n")
        folder = self.path / HYDRA_FOLDER
        if not os.path.lexists(folder):
            folder.mkdir()
            self.made.append(folder)
        elif folder.is_symlink() or not folder.is_dir():
            raise FileProblem(f"{folder} is {'a symbolic link' if folder.is_symlink() else 'not a folder'}: a run "
                              "writes its config there, so it must be a folder of the run folder; move it aside")
        files = {"config.yaml": OmegaConf.create(config), "overrides.yaml": OmegaConf.create(list(overrides))}
        if hydra is not None:
            files["hydra.yaml"] = OmegaConf.create({"hydra": hydra})
        for name, content in files.items():
            self._write(folder / name, OmegaConf.to_yaml(content))

    @contextmanager
    def log_to_file(self) -> Iterator[Callable[[str], None]]:
        """Every log line of this process into train.log (prefixed) while the block runs; yields a function
        that writes an error line into train.log alone (for what the console gets once, from the command)."""
        path = self.path / LOG_FILE
        new = not os.path.lexists(path)
        handler = filesystem.AppendingLogHandler(path)
        if new:
            self.made.append(path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)

        def error_into_file_only(message: str) -> None:
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None))

        try:
            yield error_into_file_only
        finally:
            root.removeHandler(handler)
            handler.close()

    def discard_unstarted(self, created: list[Path]) -> None:
        """Bad input must leave no trace, and must not take what was there: remove what this process made in a
        folder where no run started (no summary.json), and the folders `created` for it (deepest first)
        that this leaves empty. Files that were there before are never removed."""
        if os.path.lexists(self.path / SUMMARY_FILE):
            return
        for path in reversed(self.made):
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
            except OSError:
                pass  # something else was put into a folder this process made: it stays
        self.made.clear()
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def append_metrics(self, row: dict) -> None:
        self.metrics.append(row)

    def save_checkpoint(self, state: dict) -> None:
        self._write(self.checkpoint_path, save=state)

    def save_model(self, state_dict: dict) -> None:
        self._write(self.path / MODEL_FILE, save=state_dict)

    @property
    def normalization_path(self) -> Path:
        return self.path / NORMALIZATION_FILE

    def save_normalization(self, state_dict: dict) -> None:
        """The input normalization as fitted on the run's training split: written once, when the run starts,
        so that resuming and evaluating use exactly these numbers (not a refit)."""
        self._write(self.normalization_path, save=state_dict)

    def load_normalization(self, advice: str | None = None) -> dict | None:
        """The fitted normalization the run saved (None for a folder from before it did); `advice`: what a
        refusal tells the user to do (by default, as for a checkpoint that cannot be resumed)."""
        path = self.normalization_path
        if not path.exists():
            return None
        return load_checkpoint(path) if advice is None else load_checkpoint(path, advice)
