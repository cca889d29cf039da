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
from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from . import config as schema
from .distributed import World, init_process_group, world_from_env
from .job import run_job
from .errors import EXIT_BAD_INPUT, Diverged, RunFolderError, UserError
from .run_folder import LOCK_FILE, SUMMARY_FILE, ConfigMismatch, RunFolder, RunSpec
from .signals import Interrupted

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
EXIT_CTRL_C = 128 + signal.SIGINT


def restore_hydra_files(run_dir: Path, summary: dict) -> None:
    """Hydra overwrote .hydra/ with the refused config; put the run's own config back."""
    hydra_dir = run_dir / ".hydra"
    OmegaConf.save(OmegaConf.create(summary["config"]), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(summary.get("overrides", [])), hydra_dir / "overrides.yaml")


HYDRA_FILES = (".hydra", "train.log")  # what Hydra writes into a run folder before the task runs


def discard_unstarted_run_folder(run_dir: Path) -> None:
    """Bad input must leave no trace: remove what Hydra and the lock made in a folder where no run
    started (no summary.json), and the folders above it that this leaves empty (up to the cwd)."""
    if (run_dir / SUMMARY_FILE).exists():
        return
    for name in HYDRA_FILES:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    cwd = Path.cwd().resolve()
    folder = run_dir.resolve()
    while folder != cwd and cwd in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One run. In a sweep a failed job is recorded and logged and the sweep goes on
    (the sweep's callback fails the command at the end); alone it exits non-zero."""
    hydra_cfg = HydraConfig.get()
    folder = RunFolder(Path(hydra_cfg.runtime.output_dir))
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    overrides = list(hydra_cfg.overrides.task)
    world = world_from_env()
    exit_code = 0
    try:
        with folder.held() if world.is_main else nullcontext():
            try:
                spec = RunSpec(OmegaConf.to_object(cfg), config, overrides)
                schema.validate(spec.cfg)
                run_job(spec, folder, world)
            except ConfigMismatch as e:  # the folder belongs to another run: touch nothing
                if world.is_main:
                    restore_hydra_files(folder.path, e.summary)
                raise
            except Exception as e:
                # alone, bad input leaves the folder as it was; in a sweep, and for a dead worker, what the
                # run could not record itself is recorded here
                if world.is_main and (in_sweep or isinstance(e, ChildFailedError)) and not folder.started:
                    folder.record_failure(e, config, overrides)
                raise
    except UserError as e:
        log.error("error: %s", e)
        exit_code = EXIT_BAD_INPUT
        if not in_sweep and world.is_main and not isinstance(e, RunFolderError):
            discard_unstarted_run_folder(folder.path)
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
    except Diverged as e:  # run.train has recorded it
        log.error("diverged: %s", e)
        exit_code = EXIT_DIVERGED
    except ChildFailedError as e:
        log.error("a worker of this job failed, so the job was stopped:\n%s", e)
        exit_code = 1
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
