"""The typed config schema (single source of keys, types and allowed values).

Values live in the YAML tree under conf/; this module only says what may be
there. Hydra merges the YAML into ``BaseConfig``, so an unknown key, a wrong
type or a value outside an Enum fails at composition, before any work.
``validate`` adds the checks a type cannot express (depth 6n+2, positive
rates, increasing milestones...).
"""
from __future__ import annotations

import hashlib

from dataclasses import dataclass, field
from typing import List, Optional
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .errors import ConfigError


class Arch(Enum):
    resnet = "resnet"
    plain = "plain"


class Shortcut(Enum):
    A = "A"  # identity; zero-padded, strided identity where dimensions grow (the paper's CIFAR choice)
    B = "B"  # 1x1 projection where dimensions grow, identity elsewhere
    C = "C"  # projection on every block


class Normalization(Enum):
    per_pixel_mean = "per_pixel_mean"  # the paper: subtract the mean image
    channel_stats = "channel_stats"  # per-channel mean/std
    imagenet = "imagenet"  # ImageNet mean/std (the seed README's original mistake)
    unit = "unit"  # x / 255
    raw = "raw"  # 0..255 as is


class Dataset(Enum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast: convolutions and the linear layer in bfloat16; BN statistics, weights and loss in fp32


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# Where the data comes from, not what the experiment is: these never name a sweep job's folder
# (conf/config.yaml's exclude_keys) and a run folder resumes whatever they say.
DATA_SOURCE_KEYS = ("data.root", "data.download")
# Keys that older versions wrote into run folders and nothing reads any more: a run folder that has
# them still resumes (run_folder.RunFolder.previous), and the report does not take them for a factor.
RETIRED_KEYS = ("optimizer.name",)


@dataclass
class DataConfig:
    name: Dataset = MISSING
    root: str = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    augment: bool = MISSING
    val_size: int = MISSING


@dataclass
class NormalizationConfig:
    name: Normalization = MISSING


@dataclass
class WarmupConfig:
    """The paper's warm-up for ResNet-110/1202: a low lr until training error drops."""

    min_depth: int = MISSING  # nets at least this deep warm up (the paper: 110 and 1202)
    max_iters: int = MISSING  # cap on the warm-up's length
    lr: float = MISSING
    until_train_error: float = MISSING  # percent, running over the last `window` iterations
    window: int = MISSING


@dataclass
class OptimizerConfig:
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    milestones: List[int] = MISSING  # iterations at which lr is multiplied by gamma
    gamma: float = MISSING
    warmup: WarmupConfig = field(default_factory=WarmupConfig)


# How data.batch_size is read with N processes: the total (each process takes batch/N, as the
# authors' Torch code split 128 over two GPUs), or each process's own (the total is N times larger).
BATCH_SEMANTICS = ("global", "per_process")  # "global" cannot be an Enum member name
# torch.compile's modes (hyphenated, so not Enum names); the two marked capture CUDA graphs themselves.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")


@dataclass
class TrainerConfig:
    device: Device = MISSING
    precision: Precision = MISSING
    nproc_per_node: int = MISSING
    nnodes: int = MISSING
    batch_semantics: str = MISSING
    sync_bn: bool = MISSING
    max_iters: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    eval_batch_size: int = MISSING
    channels_last: bool = MISSING
    cuda_graph: Optional[bool] = MISSING  # None: wherever it applies (see uses_cuda_graph)
    compile: bool = MISSING
    compile_mode: str = MISSING


@dataclass
class BaseConfig:
    arch: Arch = MISSING
    depth: int = MISSING
    shortcut: Shortcut = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = MISSING


SCHEMA_NAME = "base_config"


def gpus_per_job(device: Device | str, nproc_per_node: int) -> int | None:
    """GPUs a cluster job of this run asks for (conf/hydra/launcher/slurm.yaml): one per process, and
    none at all for trainer.device=cpu, so that a CPU job fits a CPU partition."""
    return None if getattr(device, "value", device) == Device.cpu.value else nproc_per_node


OmegaConf.register_new_resolver("gpus_per_job", gpus_per_job, replace=True)

JOB_NAME_BYTES = 200  # file systems allow 255 bytes a name; room to spare for tools that add a suffix


def job_folder_name(override_dirname: str) -> str:
    """A sweep job's folder name (conf/config.yaml hydra.sweep.subdir): its overrides as Hydra writes them
    (arch=plain,depth=20), or, when that is longer than JOB_NAME_BYTES, a readable prefix of them and a
    hash of all of them: unique, under the file system's limit, and the same on every relaunch. The full
    overrides are in the folder's .hydra/overrides.yaml and summary.json."""
    encoded = override_dirname.encode()
    if len(encoded) <= JOB_NAME_BYTES:
        return override_dirname
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    prefix = encoded[:JOB_NAME_BYTES - len(digest) - 3].decode(errors="ignore")
    return f"{prefix}...{digest}"


OmegaConf.register_new_resolver("job_folder_name", job_folder_name, replace=True)


# Stored under its own name; conf/config.yaml extends it explicitly from its defaults list.
ConfigStore.instance().store(name=SCHEMA_NAME, node=BaseConfig)


def uses_cuda_graph(t: TrainerConfig, on_gpu: bool, processes: int) -> bool:
    """trainer.cuda_graph=null (the default) captures the step wherever that is possible and the
    result is the same arithmetic: one process on a GPU, no torch.compile mode that captures itself."""
    if t.cuda_graph is not None:
        return t.cuda_graph
    return on_gpu and processes == 1 and not (t.compile and t.compile_mode in COMPILE_MODES_WITH_CUDA_GRAPHS)


def warnings(cfg: BaseConfig) -> list[str]:
    """What is allowed but probably not meant: one line each, for the log."""
    late = [m for m in cfg.optimizer.milestones if m >= cfg.trainer.max_iters]
    if late:
        return [f"optimizer.milestones {late} lie at or past trainer.max_iters={cfg.trainer.max_iters}: the lr is "
                "not divided there (a shortened run; budget=quick scales the milestones with the run)"]
    return []


def check_depth(depth: int) -> int:
    """Return n for a CIFAR depth 6n+2, or refuse it."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"depth={depth} is not allowed: depth must be 6n+2 with n >= 1 "
            f"(8, 14, 20, 26, 32, ...; the paper used 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: BaseConfig) -> None:
    """Checks that types cannot express; raises ConfigError naming the value and the rule."""
    check_depth(cfg.depth)
    _require(0 <= cfg.seed < 2**63, f"seed={cfg.seed} is not allowed: it must lie in 0 .. 2**63-1")
    _require(
        cfg.arch is Arch.resnet or cfg.shortcut is Shortcut.A,
        f"shortcut={cfg.shortcut.value} has no meaning for arch=plain (a plain net has no "
        "shortcuts); use arch=resnet, or keep the default shortcut=A with arch=plain",
    )
    d, o, w, t = cfg.data, cfg.optimizer, cfg.optimizer.warmup, cfg.trainer
    _require(d.batch_size > 0, f"data.batch_size={d.batch_size} is not allowed: it must be > 0")
    _require(d.val_size >= 0, f"data.val_size={d.val_size} is not allowed: it must be >= 0")
    _require(o.lr > 0, f"optimizer.lr={o.lr} is not allowed: it must be > 0")
    _require(0 <= o.momentum < 1, f"optimizer.momentum={o.momentum} is not allowed: it must be in [0, 1)")
    _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} is not allowed: it must be >= 0")
    _require(0 < o.gamma <= 1, f"optimizer.gamma={o.gamma} is not allowed: it must be in (0, 1]")
    for name in ("max_iters", "eval_every", "checkpoint_every", "eval_batch_size", "nproc_per_node", "nnodes"):
        value = getattr(t, name)
        _require(value > 0, f"trainer.{name}={value} is not allowed: it must be > 0")
    _require(t.batch_semantics in BATCH_SEMANTICS, f"trainer.batch_semantics={t.batch_semantics} is not allowed: "
             f"it must be one of {', '.join(BATCH_SEMANTICS)}")
    processes = t.nproc_per_node * t.nnodes
    _require(
        t.batch_semantics != "global" or d.batch_size % processes == 0,
        f"data.batch_size={d.batch_size} is not allowed with {processes} processes and "
        "trainer.batch_semantics=global: the global batch must divide by the number of processes",
    )
    _require(t.compile_mode in COMPILE_MODES, f"trainer.compile_mode={t.compile_mode} is not allowed: "
             f"it must be one of {', '.join(COMPILE_MODES)}")
    if t.cuda_graph is True:  # asked for explicitly: refused where it cannot apply
        _require(t.device is not Device.cpu, "trainer.cuda_graph=true is not allowed with trainer.device=cpu: "
                 "CUDA graphs need a GPU")
        _require(processes == 1, f"trainer.cuda_graph=true is not allowed with {processes} processes: "
                 "the captured step is single-process only (use trainer.cuda_graph=false for DDP)")
        _require(not t.compile or t.compile_mode not in COMPILE_MODES_WITH_CUDA_GRAPHS,
                 f"trainer.compile_mode={t.compile_mode} is not allowed with trainer.cuda_graph=true: that mode "
                 "captures CUDA graphs itself; use compile_mode=default or max-autotune-no-cudagraphs")
    m = list(o.milestones)
    _require(
        all(a < b for a, b in zip([0] + m, m)),
        f"optimizer.milestones={m} is not allowed: they must be positive and strictly increasing",
    )
    _require(w.min_depth >= 0, f"optimizer.warmup.min_depth={w.min_depth} is not allowed: it must be >= 0")
    _require(w.max_iters > 0, f"optimizer.warmup.max_iters={w.max_iters} is not allowed: it must be > 0")
    _require(w.lr > 0, f"optimizer.warmup.lr={w.lr} is not allowed: it must be > 0")
    _require(
        0 < w.until_train_error <= 100,
        f"optimizer.warmup.until_train_error={w.until_train_error} is not allowed: it is a percentage in (0, 100]",
    )
    _require(w.window > 0, f"optimizer.warmup.window={w.window} is not allowed: it must be > 0")
