"""What a multirun will do and what it did, read from its job folders, and its jobs checked before any runs.

Hydra cannot resume a multirun; we make relaunching one safe instead: each
job's folder is named by its overrides, a completed job is skipped and an
interrupted one resumes (job.run_job, training_run.train_run). These callbacks
refuse a grid with a job that cannot run (CheckJobs: every job's config and
plug-ins, before anything is created), tell the user at the start what is done
and what is new, and at the end list the jobs that did not complete and make
the command exit non-zero.

Hydra has no public API for two things done here (the grid its basic sweeper
expands a command line into, and the folder name it gives a job: the account
must name the very folders the jobs will use); hydra_internals.py adapts them.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import DATA_KEYS, BaseConfig, Dataset, typed, validate
from .run_spec import composed_run_config
from .contract import CHECKPOINT_FILE, SUMMARY_FILE, Status, read_summary, says_finished
from .data.fetch import fetch_if_missing
from .errors import EXIT_BAD_INPUT, DataError, RunFolderError, UserError
from .hydra_internals import BASIC_SWEEPER, expand_grid, overrides_dirname
from .checks import check_plugins
from .plugins import ConfigSource
from .run_folder import config_changes

log = logging.getLogger(__name__)


def job_overrides(cfg: DictConfig) -> list[list[str]]:
    """The grid a basic-sweeper multirun expands to: preset params, then the command line."""
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    return expand_grid(params + list(cfg.hydra.overrides.task))


def job_dirs(cfg: DictConfig) -> list[Path]:
    """Each job's run folder, named exactly as Hydra will name it."""
    naming = cfg.hydra.job.config.override_dirname
    dirs = []
    for num, overrides in enumerate(job_overrides(cfg)):
        job = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
        with open_dict(job):
            job.hydra.job.num = num
            job.hydra.job.override_dirname = overrides_dirname(overrides, list(naming.exclude_keys), naming.item_sep,
                                                               naming.kv_sep)
        dirs.append(Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir))
    return dirs


def basic_sweeper(cfg: DictConfig) -> bool:
    """Whether the grid is Hydra's basic sweeper's, which job_overrides can expand (another sweeper draws its own)."""
    return cfg.hydra.sweeper._target_ == BASIC_SWEEPER


def optimizing_sweeper(cfg: DictConfig) -> bool:
    """Whether the sweeper optimizes what the jobs return (hydra/sweeper=optuna): the final val_error."""
    return str(cfg.hydra.sweeper._target_).endswith("OptunaSweeper")


CHECKED_VALUES = 64  # a whole-number range or interval of at most this many values is checked value by value


def _candidates(sweep: Any) -> list:
    """The values of a swept parameter a check must try (a search draws from all of them): every choice, every
    value of a whole-number range or interval (depth=range(8,21) holds depths a net refuses between its ends;
    only the ends and the middle where there are more than CHECKED_VALUES), a real interval's two ends."""
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    if isinstance(sweep, (RangeSweep, IntervalSweep)):
        start, stop = sweep.start, (sweep.stop if isinstance(sweep, RangeSweep) else sweep.end)
        step = (sweep.step or 1) if isinstance(sweep, RangeSweep) else 1
        whole = all(isinstance(v, int) for v in (start, stop, step))  # int(interval(...)), range(...)
        if not whole or "log" in (sweep.tags or set()) and isinstance(sweep, IntervalSweep):
            return [start, stop] if isinstance(sweep, IntervalSweep) else [start]
        last = int(stop) if isinstance(sweep, IntervalSweep) else int(stop) - 1  # an interval holds its end
        values = list(range(int(start), last + 1, int(step)))
        if len(values) > CHECKED_VALUES:
            values = [values[0], values[len(values) // 2], values[-1]]
        return values
    return [sweep]


def search_space_jobs(cfg: DictConfig) -> list[list[str]]:
    """Jobs that a sweeper drawing its own (hydra/sweeper=optuna) could run, for checking them before it
    starts: its search space is hydra.sweeper.params (a preset's too) and the command line's sweeps, so every
    swept parameter is tried at each of its candidate values (the others at their first), beside the fixed
    overrides. A value of the space that no job could run (data.val_size=0 in a preset) is found here."""
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(cfg.hydra.overrides.task))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = [(o.get_key_element(), _candidates(o.value())) for o in parsed if o.is_sweep_override()]
    swept = [(key, values) for key, values in swept if values]
    first = [f"{key}={values[0]}" for key, values in swept]
    jobs = [fixed + first]
    for i, (key, values) in enumerate(swept):
        jobs += [fixed + first[:i] + [f"{key}={value}"] + first[i + 1:] for value in values[1:]]
    return jobs


def job_run_config(config_name: str, overrides: list[str]) -> dict:
    """A job's run config as the job will record it: composed, plug-ins named by their options."""
    return composed_run_config(compose(config_name=config_name, overrides=overrides, return_hydra_config=True))


def job_config(config_name: str, overrides: list[str]) -> BaseConfig:
    """A job's run config as the job will see it: job_run_config, typed."""
    return typed(job_run_config(config_name, overrides))


def swept_part(overrides: list[str], grid: list[list[str]]) -> str:
    """A job named by the overrides that tell it from the other jobs of its grid (all of them if it is alone)."""
    varying = [o for o in overrides if any(o not in other for other in grid)]
    return ",".join(varying or overrides)


def one_line(error: Exception) -> str:
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def refuse(message: str) -> None:
    """One line on the console and exit 2: Hydra ignores exceptions raised in callbacks."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


class CheckJobs(Callback):
    """Before any job runs (and before Hydra makes a folder), every job of the grid is composed and checked
    as the job itself will check it: its config (config.validate) and its plug-ins (plugins.check_plugins:
    the model built and run on a batch...). One job that cannot run refuses the sweep in one line, naming the
    job, so that a grid is never half-run because of a typo. A sweeper that draws its own jobs
    (hydra/sweeper=optuna) gets the settings every trial shares checked, and must optimize a validation
    error: tuning on the test set is refused."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        config_name = kwargs["config_name"]
        sources = ConfigSource.from_hydra(config.hydra.runtime.config_sources)
        grid = job_overrides(config) if basic_sweeper(config) else search_space_jobs(config)
        if optimizing_sweeper(config):
            self.quiet_optuna()
        # where a job's tracker files it (MLflow's default experiment: the sweep's folder)
        in_sweep = Path(str(config.hydra.sweep.dir)) / "job"
        checked: dict[str, str | None] = {}  # a config's text (the seed aside) -> its error
        failures = []
        for overrides in grid:
            try:
                cfg = job_config(config_name, overrides)
            except Exception as e:  # a value the schema refuses at composition, a plug-in without a name
                failures.append((overrides, one_line(e)))
                continue
            key = json.dumps({**OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True), "seed": None},
                             sort_keys=True, default=str)
            if key not in checked:
                try:
                    validate(cfg)
                    check_plugins(cfg, sources, in_sweep)
                    checked[key] = None
                except Exception as e:  # a UserError says itself; anything else, its type too
                    checked[key] = one_line(e)
            if checked[key]:
                failures.append((overrides, checked[key]))
            elif optimizing_sweeper(config):
                self._check_objective(config, cfg)
        if failures:
            overrides, message = failures[0]
            others = f" (and {len(failures) - 1} more of the {len(grid)} jobs)" if len(failures) > 1 else ""
            job = f"job {swept_part(overrides, grid)}" if basic_sweeper(config) else \
                f"a trial of the search space ({swept_part(overrides, grid) or 'every trial'})"
            refuse(f"the sweep would run a job that cannot run, so none was started: {job}{others}: {message}")

    @staticmethod
    def quiet_optuna() -> None:
        """Optuna's own coloured console handler printed ANSI codes beside Hydra's lines: its records go
        through the command's logging instead (plain text)."""
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()

    @staticmethod
    def _check_objective(config: DictConfig, cfg: BaseConfig) -> None:
        direction = OmegaConf.to_container(config.hydra.sweeper).get("direction", "minimize")
        if str(direction).split(".")[-1] != "minimize":
            refuse(f"hydra.sweeper.direction={direction} is not allowed: the jobs return their final val_error, "
                   "which a search minimizes; leave direction=minimize")
        if cfg.data.val_size <= 0:
            refuse(f"hydra/sweeper=optuna with data.val_size={cfg.data.val_size} is not allowed: it minimizes the "
                   "final val_error, and without held-out images it would tune on the test set; set "
                   "data.val_size=5000 (the paper's 45k/5k split)")


class JobState(str, Enum):
    """Where a sweep job stands before the sweep runs it."""

    completed = "completed"
    resume = "resume"  # a checkpoint to continue from
    new = "new"
    unreadable = "unreadable"  # a damaged summary.json: the job will fail, saying why
    another_config = "another config"  # the folder holds a run of another config: the job will be refused


def job_summary(run_dir: Path) -> dict:
    """The job's summary.json, or a stand-in whose status says why there is none."""
    try:
        return read_summary(run_dir) or {"status": "not started"}
    except RunFolderError as e:
        return {"status": JobState.unreadable, "error": str(e)}


def job_state(run_dir: Path, config: dict | None = None) -> JobState:
    """As the job itself will find its folder (RunFolder.completed): a summary that says completed without its
    final test error or short of its max_iters is a job to resume; given the job's `config`, a folder that
    holds a run of another config is one the job will refuse."""
    summary = job_summary(run_dir)
    if summary["status"] == JobState.unreadable:
        return JobState.unreadable
    if refusal(summary, config):
        return JobState.another_config
    if says_finished(summary, summary.get("max_iters")):
        return JobState.completed
    return JobState.resume if (run_dir / CHECKPOINT_FILE).exists() else JobState.new


def _trial_line(folder: Path, summary: dict) -> str:
    """A trial of a search as its end lists it: its folder, status and error."""
    return f"  {folder}: {summary.get('status')}: {summary.get('error', '')}"


class SweepAccount(Callback):
    """Prints 'N done, M to resume, K new' before a multirun and the jobs that did not complete after it: a job
    refused because its folder holds a run of another config is one of them, whatever that run's status."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.configs: list[dict | None] = []
        self.trials_in: Path | None = None  # the sweep folder of a sweeper that draws its own jobs
        self.trials_planned: int | None = None  # its n_trials, where its study starts empty (no storage)
        self.trials_run: list[Path] = []  # this search's trials that ended in this process (the basic launcher)
        self.sweep_pid: int | None = None  # the process that started the search (on_multirun_start)
        self.ended = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not basic_sweeper(config):
            # its jobs are known once they ran: listed from their folders at the end, also when the sweeper
            # itself fails then (Optuna's "No trials are completed yet" when every trial failed or diverged)
            self.trials_in = Path(str(config.hydra.sweep.dir))
            # with a storage the study may hold completed trials of an earlier launch: Optuna then has a best
            if OmegaConf.select(config, "hydra.sweeper.storage", default=None) is None:
                self.trials_planned = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
            self.sweep_pid = os.getpid()
            atexit.register(self._list_failed_trials_if_not_ended)
            return
        self.dirs = job_dirs(config)
        shared = sorted({str(d) for d in self.dirs if self.dirs.count(d) > 1})
        if shared:  # they would skip or refuse each other, and one folder would hold one of their runs
            log.error("error: jobs of this sweep would share a run folder (%s): %s are not part of a job's "
                      "folder name, as they do not change the experiment; sweep them in separate commands, "
                      "each with its own hydra.sweep.dir", ", ".join(shared),
                      ", ".join(config.hydra.job.config.override_dirname.exclude_keys))
            sys.exit(EXIT_BAD_INPUT)
        self.configs = [_planned_config(kwargs.get("config_name"), overrides) if os.path.lexists(d) else None
                        for d, overrides in zip(self.dirs, job_overrides(config))]
        states = [job_state(d, c) for d, c in zip(self.dirs, self.configs)]
        unreadable, other = states.count(JobState.unreadable), states.count(JobState.another_config)
        log.info("sweep of %d jobs in %s: %d done, %d to resume, %d new%s%s", len(states), config.hydra.sweep.dir,
                 states.count(JobState.completed), states.count(JobState.resume), states.count(JobState.new),
                 f", {unreadable} with an unreadable summary.json (they will fail)" if unreadable else "",
                 f", {other} whose folder holds a run of another config (they will be refused)" if other else "")

    def _failed_trials(self) -> list[str]:
        """The trials of a drawing sweeper's folder that did not complete, with why."""
        folders = sorted(p for p in self.trials_in.iterdir() if os.path.lexists(p / SUMMARY_FILE)) \
            if self.trials_in is not None and self.trials_in.is_dir() else []
        summaries = {folder: job_summary(folder) for folder in folders}
        return [_trial_line(folder, s) for folder, s in summaries.items() if not says_finished(s, s.get("max_iters"))]

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """After a search's last trial, when not one of its trials completed: the trials with why, and exit
        status 1, before the sweeper asks for the best trial (Optuna's "No trials are completed yet" and its
        traceback). Only for a study that started empty (no storage) and trials that run in the sweep's own
        process (the basic launcher: a worker cannot end the sweep); this launch's trials, not earlier ones
        in the same folder."""
        if self.trials_in is None or not self.trials_planned or os.getpid() != self.sweep_pid:
            return
        self.trials_run.append(Path(str(config.hydra.runtime.output_dir)))
        if len(self.trials_run) < self.trials_planned:
            return
        summaries = {folder: job_summary(folder) for folder in self.trials_run}
        if any(says_finished(s, s.get("max_iters")) for s in summaries.values()):
            return
        self.ended = True
        log.error("not one trial of the search completed, so it has no best parameters; the trials:\n%s",
                  "\n".join(_trial_line(folder, s) for folder, s in summaries.items()))
        sys.exit(1)

    def _list_failed_trials_if_not_ended(self) -> None:
        if not self.ended:
            failed = self._failed_trials()
            if failed:
                log.error("the search stopped; these trials did not complete:\n%s", "\n".join(failed))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.ended = True
        if self.trials_in is not None:
            failed = self._failed_trials()
            if failed:
                log.error("%d trials did not complete (the search went on without them):\n%s", len(failed),
                          "\n".join(failed))
                sys.exit(1)
            return
        failed = []
        for run_dir, planned in zip(self.dirs, self.configs or [None] * len(self.dirs)):
            summary = job_summary(run_dir)
            changes = refusal(summary, planned)
            if changes:
                failed.append(f"  {run_dir}: refused: it holds a run made with another config ({'; '.join(changes)})")
            elif not says_finished(summary, summary.get("max_iters")):  # the contract's one rule
                failed.append(f"  {run_dir}: {summary.get('status')}: {summary.get('error', '')}")
        if failed:
            log.error("%d of %d jobs did not complete:\n%s", len(failed), len(self.dirs), "\n".join(failed))
            sys.exit(1)  # a callback cannot fail the command otherwise (Hydra turns exceptions into warnings)
        if self.dirs:
            log.info("all %d jobs completed", len(self.dirs))


def _planned_config(config_name: str | None, overrides: list[str]) -> dict | None:
    """job_run_config, or None if the job cannot be composed (CheckJobs refuses that before)."""
    try:
        return job_run_config(config_name, overrides)
    except Exception:  # noqa: BLE001 - CheckJobs has reported it
        return None


def refusal(summary: dict, planned: dict | None) -> list[str]:
    """Why the job of config `planned` will refuse (or refused) the run its folder's summary records: the
    config changes (RunFolder.previous's comparison); none without a recorded config or a plan."""
    return config_changes(summary, planned) if planned is not None and "config" in summary else []


class FetchDataFirst(Callback):
    """Before any job of a sweep starts, fetch each missing data set its jobs read, once, here.

    Otherwise every job would find the data missing at once: on one machine
    they would queue behind one download, and on a cluster each job would
    download on a compute node (often offline) instead of the machine the
    sweep was launched from. Completed jobs need no data.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not basic_sweeper(config):
            return  # another sweeper draws its grid as it goes: each job fetches what it lacks
        sources = {}  # one job's overrides for each distinct way the jobs name their data
        for run_dir, overrides in zip(job_dirs(config), job_overrides(config)):
            if job_state(run_dir) != JobState.completed:
                key = tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in DATA_KEYS)
                sources.setdefault(key, overrides)
        for overrides in sources.values():
            data = compose(config_name=kwargs["config_name"], overrides=overrides).data
            if data.download:
                try:
                    fetch_if_missing(Dataset(data.name), data.root)
                except DataError as e:
                    log.error("error: %s", e)
                    sys.exit(EXIT_BAD_INPUT)  # Hydra ignores exceptions raised in callbacks
