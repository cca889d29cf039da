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


class Pipeline(Enum):
    device = "device"  # the whole split on the device, a batch's crops and flips in one gather (data.py)
    torchvision = "torchvision"  # PIL images, torchvision's transforms, a DataLoader (torchvision_pipeline.py)


class Augment(Enum):
    random = "random"  # a new crop and flip every time an image is used (the paper)
    static = "static"  # one crop and flip per image, drawn once from the seed (the seed README's first loader)
    none = "none"


PIPELINES = tuple(p.value for p in Pipeline)
AUGMENTS = tuple(a.value for a in Augment)


class Logger(Enum):
    csv = "csv"  # metrics.csv only
    tensorboard = "tensorboard"  # and TensorBoard scalars beside it (live.py)


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
# Keys that older versions wrote into run folders and nothing reads any more: upgrade() leaves them out, so
# a run folder that has them still resumes, loads and reports.
RETIRED_KEYS = ("optimizer.name",)
# How a run is carried out or watched, not what it trains (its numbers do not depend on them): never part
# of a job's folder name (conf/config.yaml's exclude_keys), not compared when a run folder resumes, not a
# factor of the report.
NOT_THE_EXPERIMENT = ("data.workers", "logger.name")
# Values that older versions wrote and that mean one of today's: read as today's wherever a config is
# read (a run folder resumed or compared, the report), and accepted on the command line.
LEGACY_VALUES = {("data", "augment"): {"True": Augment.random.value, "False": Augment.none.value,
                                       "true": Augment.random.value, "false": Augment.none.value}}


# Keys added since run folders were first written, with the value that does what runs did before them.
ADDED_KEYS = {("data", "pipeline"): Pipeline.device.value, ("data", "workers"): None,
              ("logger", "name"): Logger.csv.value}


def upgrade(config: dict) -> dict:
    """A plain config (as summary.json or .hydra/config.yaml hold it) with older values read as today's, the
    keys added since filled in as runs were before them, and retired keys left out."""
    for retired in RETIRED_KEYS:
        section, key = retired.split(".")
        part = config.get(section)
        if isinstance(part, dict) and key in part:
            config = {**config, section: {k: v for k, v in part.items() if k != key}}
    for (section, key), values in LEGACY_VALUES.items():
        part = config.get(section)
        if isinstance(part, dict) and str(part.get(key)) in values:
            config = {**config, section: {**part, key: values[str(part[key])]}}
    for (section, key), value in ADDED_KEYS.items():
        part = config.get(section, {})
        if isinstance(part, dict) and key not in part:
            config = {**config, section: {**part, key: value}}
    return config


@dataclass
class DataConfig:
    name: Dataset = MISSING
    root: str = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    # pipeline and augment are checked by validate() against PIPELINES and AUGMENTS (text, not an Enum: the
    # older true/false must still compose, see LEGACY_VALUES)
    pipeline: str = MISSING
    augment: str = MISSING
    workers: Optional[int] = MISSING  # DataLoader workers of data.pipeline=torchvision; None: from the cores
    val_size: int = MISSING


@dataclass
class LoggerConfig:
    name: Logger = MISSING


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)
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


def uses_cuda_graph(cfg: BaseConfig, on_gpu: bool, processes: int) -> bool:
    """trainer.cuda_graph=null (the default) captures the step wherever that is possible and the
    result is the same arithmetic: one process on a GPU fed by the device pipeline, no torch.compile mode
    that captures itself."""
    t = cfg.trainer
    if t.cuda_graph is not None:
        return t.cuda_graph
    return on_gpu and processes == 1 and cfg.data.pipeline == Pipeline.device.value and \
        not (t.compile and t.compile_mode in COMPILE_MODES_WITH_CUDA_GRAPHS)


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
    _require(d.pipeline in PIPELINES, f"data.pipeline={d.pipeline} is not allowed: it must be one of "
             f"{', '.join(PIPELINES)}")
    _require(d.augment in AUGMENTS, f"data.augment={d.augment} is not allowed: it must be one of "
             f"{', '.join(AUGMENTS)} (true and false, from older configs, mean random and none)")
    _require(d.workers is None or d.workers >= 0,
             f"data.workers={d.workers} is not allowed: it must be >= 0 (0: images are prepared in the training "
             "process), or null for one per core left to each process")
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
        _require(d.pipeline == Pipeline.device.value, "trainer.cuda_graph=true is not allowed with "
                 "data.pipeline=torchvision: CUDA graphs are kept to the device pipeline, where the whole step "
                 "runs on the GPU (with a DataLoader the time goes into preparing images, which a graph cannot "
                 "shorten); use trainer.cuda_graph=false (or null)")
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
