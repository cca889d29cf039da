"""`torchrun ... -m resnet_cifar.train`: every process runs Hydra, so before Hydra starts they agree on one
run folder and take the process counts torchrun chose (train.cli calls this first)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist
from hydra import compose, initialize_config_module
from hydra.core.utils import setup_globals

from .distributed import World, init_process_group
from .errors import EXIT_BAD_INPUT

CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
FLAGS_WITH_A_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                      "--experimental-rerun")  # Hydra's own; their value is not an override


def overrides_and_config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """The command line's overrides, and the folders --config-dir adds to Hydra's search path."""
    overrides, dirs = [], []
    it = iter(args)
    for arg in it:
        flag, has_value, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            dirs.append(value if has_value else next(it, ""))
        elif arg in FLAGS_WITH_A_VALUE:
            next(it, None)
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, dirs


def configured_run_dir(args: list[str]) -> str:
    """hydra.run.dir as the command line composes it (the user's --config-dir included), its ${now:...}
    resolved once."""
    overrides, dirs = overrides_and_config_dirs(args)
    if dirs:
        overrides.append(f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs)}]")
    setup_globals()
    with initialize_config_module(version_base="1.3", config_module="resnet_cifar.conf"):
        cfg = compose("config", overrides, return_hydra_config=True)
    return str(cfg.hydra.run.dir)


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
                chosen = [configured_run_dir(args)]
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
