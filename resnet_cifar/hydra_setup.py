"""Hydra set up for this project, where Hydra is started (the training command; anything that composes conf/):
the typed schema stored under its own name (conf/config.yaml extends it from its defaults list) and the
resolvers conf/ uses. Nothing is registered on import: `register()` does it, once.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from functools import cache
from typing import Iterator

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .config import BaseConfig, Device

CONFIG_MODULE = "resnet_cifar.conf"

SCHEMA_NAME = "base_config"


def gpus_per_job(device: Device | str, nproc_per_node: int) -> int | None:
    """GPUs a cluster job of this run asks for (conf/hydra/launcher/slurm.yaml): one per process, and
    none at all for trainer.device=cpu, so that a CPU job fits a CPU partition."""
    return None if getattr(device, "value", device) == Device.cpu.value else nproc_per_node



JOB_NAME_BYTES = 200  # file systems allow 255 bytes a name; room to spare for tools that add a suffix


def job_folder_name(override_dirname: str) -> str:
    """A sweep job's folder name (conf/config.yaml hydra.sweep.subdir): its overrides as Hydra writes them
    (arch=plain,depth=20), or, when that is longer than JOB_NAME_BYTES, a readable prefix of them and a
    hash of all of them: unique, under the file system's limit, and the same on every relaunch. The full
    overrides are in the folder's .hydra/overrides.yaml and summary.json. A value with a path separator
    (data.pipeline=x/../../elsewhere) never leaves the sweep folder: "%" and "/" are written %25 and %2F."""
    override_dirname = override_dirname.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if override_dirname in (".", ".."):
        override_dirname = override_dirname.replace(".", "%2E")
    encoded = override_dirname.encode()
    if len(encoded) <= JOB_NAME_BYTES:
        return override_dirname
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    prefix = encoded[:JOB_NAME_BYTES - len(digest) - 3].decode(errors="ignore")
    return f"{prefix}...{digest}"


@cache
def register() -> None:
    """The schema and the resolvers, registered with Hydra once per process."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=BaseConfig)
    OmegaConf.register_new_resolver("gpus_per_job", gpus_per_job, replace=True)
    OmegaConf.register_new_resolver("job_folder_name", job_folder_name, replace=True)


@contextmanager
def conf() -> Iterator[None]:
    """Hydra initialized on conf/ (as installed), for compose() outside the training command."""
    register()
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        yield


def compose_run(overrides: list[str] = ()) -> DictConfig:
    """The config `python -m resnet_cifar.train OVERRIDES` composes, with Hydra's node."""
    with conf():
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
