"""Refuse what cannot work before Hydra creates anything: an output folder that cannot be written,
and SLURM jobs the cluster would not run.

Hydra makes the run (or sweep) folder and its .hydra/ before the task runs,
and the submitit launcher submits before anything reports back; either
failure would otherwise end in a traceback. Hydra ignores exceptions raised
in callbacks, so these exit themselves.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from .contract import SWEEP_RECORD
from .errors import EXIT_BAD_INPUT
from .filesystem import unwritable_reason

CREATED_KEY = "resnet_cifar_created"  # in hydra.runtime: the folders Hydra will create for this (single) run


def folders_created_for_the_run(runtime: DictConfig) -> list[Path]:
    """The folders of hydra.run.dir that did not exist before Hydra made them, deepest first, as Preflight
    recorded them in Hydra's record of this run (hydra.runtime): what bad input must remove again, wherever
    the folder is (an absolute hydra.run.dir outside the working directory included)."""
    return [Path(folder) for folder in runtime.get(CREATED_KEY) or []]


class Preflight(Callback):
    def _check(self, key: str, folder: str) -> None:
        reason = unwritable_reason(Path(folder))
        if reason:
            print(f"error: {key}={folder} cannot be used: {reason}; choose another output folder "
                  f"(e.g. {key}=outputs/run1)", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params") or {}
        if params:  # a preset sweep (+experiment=fig6) run without -m would train one default job
            task = " ".join(config.hydra.overrides.task)
            print(f"error: this command sets a sweep ({', '.join(f'{k}={v}' for k, v in params.items())}) but "
                  f"runs a single job without -m; did you mean: python -m resnet_cifar.train -m {task}",
                  file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        self._check("hydra.run.dir", config.hydra.run.dir)
        folder, created = Path(config.hydra.run.dir).absolute(), []
        while not folder.exists():
            created.append(str(folder))
            folder = folder.parent
        with open_dict(config.hydra.runtime):  # handed to the job with the rest of Hydra's record of the run
            config.hydra.runtime[CREATED_KEY] = created

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
        record = Path(config.hydra.sweep.dir) / SWEEP_RECORD
        if os.path.lexists(record) and (record.is_symlink() or not record.is_file()):
            # the sweeper rewrites it with a plain open(): through a link, or blocked on a FIFO
            what = "a symbolic link" if record.is_symlink() else "not a regular file"
            print(f"error: hydra.sweep.dir={config.hydra.sweep.dir} cannot be used: {record} is {what}, and Hydra "
                  "writes the sweep's config there; move it aside", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


# hydra-submitit-launcher's fields that decide whether SLURM can run a job, and sbatch's option for each
SBATCH_OPTIONS = {
    "partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
    "exclude": "--exclude", "nodes": "--nodes", "tasks_per_node": "--ntasks-per-node",
    "cpus_per_task": "--cpus-per-task", "gpus_per_node": "--gpus-per-node", "gpus_per_task": "--gpus-per-task",
    "cpus_per_gpu": "--cpus-per-gpu", "gres": "--gres", "mem_per_cpu": "--mem-per-cpu",
    "mem_per_gpu": "--mem-per-gpu",
}


def sbatch_request(launcher: DictConfig) -> list[str]:
    """The resources a sweep's SLURM jobs ask for, as sbatch options (what the plugin will submit)."""
    options = [f"{flag}={launcher[key]}" for key, flag in SBATCH_OPTIONS.items() if launcher.get(key) is not None]
    if launcher.get("mem_gb") is not None:
        options.append(f"--mem={launcher.mem_gb}G")
    if launcher.get("timeout_min") is not None:
        options.append(f"--time={launcher.timeout_min}")
    extra = launcher.get("additional_parameters") or {}
    return options + [f"--{key.replace('_', '-')}={value}" for key, value in extra.items()]


def sbatch_refusal(options: list[str]) -> str | None:
    """Why SLURM would refuse a job with these options (None if it would take it): `sbatch --test-only`
    submits nothing. Without it, a request larger than any node ends in submitit's traceback, or waits in
    the queue for ever on a cluster that does not enforce partition limits."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH: hydra/launcher=slurm submits to a SLURM cluster from one of its login nodes"
    test = subprocess.run(["sbatch", "--test-only", *options, "--output=/dev/null", "--wrap=true"],
                          capture_output=True, text=True, timeout=60)
    if test.returncode == 0:
        return None
    return " ".join(line.removeprefix("sbatch: error: ").strip() for line in test.stderr.splitlines() if line.strip())


class SlurmPreflight(Callback):
    """Ask SLURM whether it would run the sweep's jobs before anything is submitted or written."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
            return
        options = sbatch_request(launcher)
        reason = sbatch_refusal(options)
        if reason:
            print(f"error: SLURM refuses the jobs of this sweep ({' '.join(options)}): {reason}. Ask for what "
                  "your partition offers: hydra.launcher.partition, cpus_per_task, mem_gb, gpus_per_node, "
                  "timeout_min (trainer.device=cpu asks for no GPU)", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
