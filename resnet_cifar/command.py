"""What one invocation of the training command does with its run (train.main is Hydra's task function):
hold the folder, check the config and its plug-ins, train or skip, and turn the outcome into an exit
status and, for a sweeper that optimizes, the run's final validation error.
"""
from __future__ import annotations

import logging
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from . import config as schema
from . import preflight
from .checks import check_plugins
from .contract import SUMMARY_FILE, read_summary
from .distributed import World, check_world, start_processes_as_anywhere, world_from_env
from .errors import EXIT_BAD_INPUT, Diverged, FileProblem, RunFolderError, UserError
from .job import run_job
from .plugins import current_sources
from .provenance import resume_command
from .run_folder import RunFolder
from .run_spec import RunSpec, named_run_config
from .signals import Interrupted
from .sweep_stop import ignore_stop_signals, in_a_worker, job_may_start, runs_jobs_in_workers

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
EXIT_CTRL_C = 128 + signal.SIGINT
OBJECTIVE = "val_error"  # what a run returns to a sweeper that optimizes (hydra/sweeper=optuna): never the test set


def problem(error: BaseException) -> str:
    """The one line the command prints for an error it expects."""
    if isinstance(error, UserError):
        return f"error: {error}"
    if isinstance(error, Diverged):
        return f"diverged: {error}"
    if isinstance(error, ChildFailedError):
        return f"a worker of this job failed, so the job was stopped:\n{error}"
    return f"job failed: {type(error).__name__}: {error}"


def checked_spec(cfg: DictConfig, run_dir: Path) -> RunSpec:
    """The run Hydra composed, validated, and its plug-ins checked, before anything is written."""
    hydra_cfg = HydraConfig.get()
    spec = RunSpec.from_hydra(cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices)
    schema.validate(spec.config)
    check_plugins(spec.config, current_sources(), run_dir)
    return spec


def run_held(cfg: DictConfig, folder: RunFolder, world: World, wait_note: str | None = None) -> float | None:
    """The job in a folder this process holds (the first process) or shares (torchrun's others): its
    .hydra/ and train.log are written only once the run is known to be this folder's own. Returns the final
    validation error (None without a held-out split)."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        spec = checked_spec(cfg, folder.path)
    except UserError as e:
        if in_sweep and world.is_main and not (folder.path / SUMMARY_FILE).exists():  # a new job: the sweep lists it
            config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            try:
                config = named_run_config(config, hydra_cfg.runtime.choices)
            except UserError:
                pass  # the config as composed: what made it unusable may be its names
            folder.write_hydra_files(config, overrides, hydra_cfg)
            with folder.log_to_file() as into_log:
                folder.record_failure(e, config, overrides)
                into_log(problem(e))  # the console gets it once, from run_command
        raise
    if world.distributed:
        check_world(world, spec.config.trainer.nproc_per_node, spec.config.trainer.nnodes)
    if folder.completed(spec):  # refuses another run's folder before anything is written into it
        return folder.summary.get(OBJECTIVE)
    if not world.is_main:
        run_job(spec, folder, world)
        return None
    folder.write_hydra_files(spec.recorded, overrides, hydra_cfg)
    with folder.log_to_file() as into_log:
        for warning in schema.warnings(spec.config):  # once a job is to run, into train.log too
            log.warning("%s", warning)
        if wait_note:  # what OpenMP's threads do while they wait, and why
            log.info("%s", wait_note)
        try:
            run_job(spec, folder, world)
        except Exception as e:
            # in a sweep, and for a dead worker, what the run could not record itself is recorded here
            if (in_sweep or isinstance(e, ChildFailedError)) and not folder.started:
                folder.record_failure(e, spec.recorded, overrides)
            if isinstance(e, (UserError, Diverged, ChildFailedError)):
                into_log(problem(e))  # the console gets it once, from run_command
            else:
                log.error("%s", problem(e))  # run_command logs the traceback in a sweep, raises it alone
            raise
    return (read_summary(folder.path) or {}).get(OBJECTIVE)  # written by this process or by its DDP workers


def resume_hint(hydra_cfg: DictConfig, folder: RunFolder, world: World) -> str:
    """The exact command that resumes this run (a sweep: the sweep, which resumes its stopped job)."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return resume_command("hydra.sweep.dir", str(Path(hydra_cfg.sweep.dir).absolute()))
    return resume_command("hydra.run.dir", str(folder.path.absolute()), torchrun=world.distributed)


def run_command(cfg: DictConfig, wait_note: str | None = None) -> float | None:
    """One run. In a sweep a failed job is recorded and logged and the sweep goes on (the sweep's
    callback fails the command at the end); alone it exits non-zero. Errors the user can fix are one
    bare line on the console. `wait_note`: how OpenMP waits were set when the command started (train.log)."""
    hydra_cfg = HydraConfig.get()
    folder = RunFolder(Path(hydra_cfg.runtime.output_dir))
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    start_processes_as_anywhere()  # a job in a launcher's worker (joblib's loky) starts its own processes
    if in_sweep and runs_jobs_in_workers(hydra_cfg.launcher) and in_a_worker():  # the sweep says when to stop
        ignore_stop_signals()
        if not job_may_start(Path(hydra_cfg.sweep.dir)):
            log.warning("the sweep is stopping: %s was not started (relaunching the sweep starts it)", folder.path)
            return None
    world = world_from_env()
    exit_code = 0
    try:
        with folder.held() if world.is_main else nullcontext():
            return run_held(cfg, folder, world, wait_note)
    except (UserError, Diverged, ChildFailedError) as e:
        print(problem(e), file=sys.stderr)
        if isinstance(e, FileProblem) and world.is_main and folder.checkpoint_path.exists():
            log.warning("once the folder can be written, to resume from its last checkpoint: %s",
                        resume_hint(hydra_cfg, folder, world))
        exit_code = EXIT_DIVERGED if isinstance(e, Diverged) else 1 if isinstance(e, ChildFailedError) else EXIT_BAD_INPUT
        if isinstance(e, UserError) and not in_sweep and world.is_main and not isinstance(e, RunFolderError):
            folder.discard_unstarted(preflight.folders_created_for_the_run(hydra_cfg.runtime))
    except Interrupted as e:  # train_run has saved a checkpoint, recorded and logged it; a sweep ends here too
        log.warning("to resume: %s", resume_hint(hydra_cfg, folder, world))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        log.warning("stopped at once by a second Ctrl-C; the last checkpoint is kept; to resume from it: %s",
                    resume_hint(hydra_cfg, folder, world))
        sys.exit(EXIT_CTRL_C)
    except SignalException as e:  # the workers of this job were stopped by the signal and saved
        log.warning("stopped by %s; the workers saved a checkpoint; to resume: %s", signal.Signals(e.sigval).name,
                    resume_hint(hydra_cfg, folder, world))
        sys.exit(128 + e.sigval)
    except Exception:
        if not in_sweep:
            raise
        log.exception("job failed (recorded in %s/summary.json)", folder.path)
    if exit_code and not in_sweep:
        sys.exit(exit_code)
    return None
