"""What a multirun will do and what it did, read from its job folders.

Hydra cannot resume a multirun; we make relaunching one safe instead: each
job's folder is named by its overrides, a completed job is skipped and an
interrupted one resumes (engine.train). This callback tells the user so at
the start, and at the end lists the jobs that did not complete and makes the
command exit non-zero.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import get_overrides_dirname  # Hydra's own folder naming
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import RunFolderError
from .run_folder import CHECKPOINT_FILE, Status, read_summary

log = logging.getLogger(__name__)


def job_overrides(cfg: DictConfig) -> list[list[str]]:
    """The grid a basic-sweeper multirun expands to: preset params, then the command line."""
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create()
    return BasicSweeper.split_arguments(parser.parse_overrides(params + list(cfg.hydra.overrides.task)), None)[0]


def job_dirs(cfg: DictConfig) -> list[Path]:
    """Each job's run folder, named exactly as Hydra will name it."""
    naming = cfg.hydra.job.config.override_dirname
    parser = OverridesParser.create()
    dirs = []
    for num, overrides in enumerate(job_overrides(cfg)):
        job = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
        with open_dict(job):
            job.hydra.job.num = num
            job.hydra.job.override_dirname = get_overrides_dirname(
                parser.parse_overrides(overrides), list(naming.exclude_keys), naming.item_sep, naming.kv_sep)
        dirs.append(Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir))
    return dirs


def job_summary(run_dir: Path) -> dict:
    """The job's summary.json, or a stand-in whose status says why there is none."""
    try:
        return read_summary(run_dir) or {"status": "not started"}
    except RunFolderError as e:
        return {"status": "unreadable", "error": str(e)}


def job_state(run_dir: Path) -> str:
    """completed, resume (a checkpoint to continue from), new, or unreadable (a damaged summary.json)."""
    status = job_summary(run_dir)["status"]
    if status in (Status.completed, "unreadable"):
        return status
    return "resume" if (run_dir / CHECKPOINT_FILE).exists() else "new"


class SweepAccount(Callback):
    """Prints 'N done, M to resume, K new' before a multirun and the failures after it."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper._target_ != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
            return  # another sweeper draws its own grid
        self.dirs = job_dirs(config)
        states = [job_state(d) for d in self.dirs]
        unreadable = states.count("unreadable")
        log.info("sweep of %d jobs in %s: %d done, %d to resume, %d new%s", len(states), config.hydra.sweep.dir,
                 states.count(Status.completed), states.count("resume"), states.count("new"),
                 f", {unreadable} with an unreadable summary.json (they will fail)" if unreadable else "")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = []
        for run_dir in self.dirs:
            summary = job_summary(run_dir)
            if summary.get("status") != Status.completed:
                failed.append(f"  {run_dir}: {summary.get('status')}: {summary.get('error', '')}")
        if failed:
            log.error("%d of %d jobs did not complete:\n%s", len(failed), len(self.dirs), "\n".join(failed))
            sys.exit(1)  # a callback cannot fail the command otherwise (Hydra turns exceptions into warnings)
        if self.dirs:
            log.info("all %d jobs completed", len(self.dirs))
