"""python -m resnet_cifar.train [overrides]: one Hydra-configured training run, or a -m sweep of them.

Examples:
    python -m resnet_cifar.train                                # ResNet-20, the paper's recipe
    python -m resnet_cifar.train depth=56 arch=plain budget=quick
    python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet
    python -m resnet_cifar.train -m +experiment=table6 hydra.sweep.dir=multirun/table6
    python -m resnet_cifar.train depth=110 trainer.nproc_per_node=2     # DDP, workers started here
    torchrun --nproc_per_node=2 -m resnet_cifar.train depth=110        # DDP, workers started by torchrun
"""
from __future__ import annotations

import logging
import shutil
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
import torch.distributed as dist
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import DictConfig
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from . import config as schema
from . import preflight
from .distributed import World, check_world, init_process_group, world_from_env
from .errors import EXIT_BAD_INPUT, Diverged, RunFolderError, UserError
from .job import run_job
from .run_folder import HYDRA_FOLDER, LOCK_FILE, LOG_FILE, SUMMARY_FILE, RunFolder, RunSpec
from .signals import Interrupted

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
EXIT_CTRL_C = 128 + signal.SIGINT


def discard_unstarted_run_folder(folder: RunFolder) -> None:
    """Bad input must leave no trace: remove what this process made in a folder where no run started
    (no summary.json), and the folders that Hydra created for it and that this leaves empty."""
    run_dir = folder.path
    if (run_dir / SUMMARY_FILE).exists():
        return
    for name in (HYDRA_FOLDER, LOG_FILE, LOCK_FILE):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for created in preflight.folders_created_for_the_run():  # deepest first
        if created.is_dir() and not any(created.iterdir()):
            created.rmdir()


def run_held(cfg: DictConfig, folder: RunFolder, world: World) -> None:
    """The job in a folder this process holds (the first process) or shares (torchrun's others): its
    .hydra/ and train.log are written only once the run is known to be this folder's own."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    spec = RunSpec.from_hydra(cfg, overrides)
    try:
        schema.validate(spec.cfg)
    except UserError as e:
        if in_sweep and world.is_main and not (folder.path / SUMMARY_FILE).exists():  # a new job: the sweep lists it
            folder.write_hydra_files(cfg, overrides, hydra_cfg)
            with folder.log_to_file():
                folder.record_failure(e, spec.config, overrides)
                log.error("%s", problem(e))
        raise
    for warning in schema.warnings(spec.cfg):
        log.warning("%s", warning)
    if world.distributed:
        check_world(world, spec.cfg.trainer.nproc_per_node, spec.cfg.trainer.nnodes)
    if folder.completed(spec):  # refuses another run's folder before anything is written into it
        return
    if not world.is_main:
        run_job(spec, folder, world)
        return
    folder.write_hydra_files(cfg, overrides, hydra_cfg)
    with folder.log_to_file():
        try:
            run_job(spec, folder, world)
        except Exception as e:
            # in a sweep, and for a dead worker, what the run could not record itself is recorded here
            if (in_sweep or isinstance(e, ChildFailedError)) and not folder.started:
                folder.record_failure(e, spec.config, overrides)
            log.error("%s", problem(e))  # into train.log too, with the prefix
            raise


def problem(error: BaseException) -> str:
    """The one line the command prints for an error it expects."""
    if isinstance(error, UserError):
        return f"error: {error}"
    if isinstance(error, Diverged):
        return f"diverged: {error}"
    if isinstance(error, ChildFailedError):
        return f"a worker of this job failed, so the job was stopped:\n{error}"
    return f"job failed: {type(error).__name__}: {error}"


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One run. In a sweep a failed job is recorded and logged and the sweep goes on (the sweep's
    callback fails the command at the end); alone it exits non-zero. Errors the user can fix are one
    bare line on the console."""
    hydra_cfg = HydraConfig.get()
    folder = RunFolder(Path(hydra_cfg.runtime.output_dir))
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    world = world_from_env()
    exit_code = 0
    try:
        with folder.held() if world.is_main else nullcontext():
            run_held(cfg, folder, world)
    except (UserError, Diverged, ChildFailedError) as e:
        print(problem(e), file=sys.stderr)
        exit_code = EXIT_DIVERGED if isinstance(e, Diverged) else 1 if isinstance(e, ChildFailedError) else EXIT_BAD_INPUT
        if isinstance(e, UserError) and not in_sweep and world.is_main and not isinstance(e, RunFolderError):
            discard_unstarted_run_folder(folder)
    except Interrupted as e:  # run.train has saved a checkpoint, recorded and logged it; a sweep ends here too
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        log.warning("stopped at once by a second Ctrl-C; the last checkpoint is kept: run the same "
                    "command again to resume from it")
        sys.exit(EXIT_CTRL_C)
    except SignalException as e:  # the workers of this job were stopped by the signal and saved
        log.warning("stopped by %s; the workers saved a checkpoint: run the same command again to resume",
                    signal.Signals(e.sigval).name)
        sys.exit(128 + e.sigval)
    except Exception:
        if not in_sweep:
            raise
        log.exception("job failed (recorded in %s/summary.json)", folder.path)
    if exit_code and not in_sweep:
        sys.exit(exit_code)


def torchrun_arguments(args: list[str], world: World) -> list[str]:
    """Under torchrun every process runs Hydra: give them the first one's run folder and the
    process counts torchrun chose, and let only the first write .hydra/ and train.log."""
    if any(a in ("-m", "--multirun") for a in args):
        sys.exit("error: a sweep cannot run under torchrun; run `python -m resnet_cifar.train -m ... "
                 "trainer.nproc_per_node=N` and each job starts its own N processes")
    init_process_group(world)
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in args):
        chosen: list[str | None] = [None]
        if world.is_main:
            try:  # resolve the configured folder pattern (${now:...}) once, here
                setup_globals()
                with initialize_config_module(version_base="1.3", config_module="resnet_cifar.conf"):
                    cfg = compose("config", [a for a in args if not a.startswith("-")], return_hydra_config=True)
                chosen = [str(cfg.hydra.run.dir)]
            except Exception:
                pass  # Hydra will report the bad command line itself, below
        dist.broadcast_object_list(chosen, src=0)
        if chosen[0] is not None:
            extra.append(f"hydra.run.dir={chosen[0]}")
        elif not world.is_main:
            sys.exit(EXIT_BAD_INPUT)
    for key, value in (("trainer.nproc_per_node", world.local_world_size),
                       ("trainer.nnodes", world.world_size // world.local_world_size)):
        if not any(a.startswith(f"{key}=") for a in args):
            extra.append(f"{key}={value}")
    if not world.is_main:
        extra += ["hydra.output_subdir=null", "hydra.job_logging.root.level=WARNING",
                  "hydra.job_logging.root.handlers=[console]"]
    return args + extra


def cli() -> None:
    world = world_from_env()
    if world.distributed:  # started by torchrun
        sys.argv[1:] = torchrun_arguments(sys.argv[1:], world)
    try:
        main()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli()
