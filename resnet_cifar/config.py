"""The typed config schema (single source of keys, types and allowed values).

Values live in the YAML tree under conf/; this module only says what may be
there. Hydra merges the YAML into ``BaseConfig``, so an unknown key, a wrong
type or a value outside an Enum fails at composition, before any work.
``validate`` adds the checks a type cannot express (positive rates,
increasing milestones...).

Five groups are plug-ins (PLUGIN_GROUPS): arch, normalization, augment, optimizer
and logger. Each option is a YAML file that names a callable by ``_target_`` and
gives it the file's other keys; those nodes are open mappings here, and what
their keys mean is the callable's business, checked when it is imported
(plugins.py), before anything runs. ``name`` is the option's name (the YAML
file's, filled in by ``with_plugin_names``): what folder names, the report's
table and its figures show.

One job: the schema and its checks. Reading older configs as today's is upgrade.py's; the config a run records
(plug-ins named) run_spec.py's; registering the schema and the resolvers with Hydra hydra_setup.py's, where
Hydra is started.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError

PLUGIN_GROUPS = ("arch", "normalization", "augment", "optimizer", "logger")
TARGET_KEY = "_target_"
NAME_KEY = "name"
RESERVED_KEYS = (TARGET_KEY, NAME_KEY)  # never passed to a plug-in's callable


class Shortcut(Enum):
    A = "A"  # identity; zero-padded, strided identity where dimensions grow (the paper's CIFAR choice)
    B = "B"  # 1x1 projection where dimensions grow, identity elsewhere
    C = "C"  # projection on every block


class Dataset(Enum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"


class Pipeline(Enum):
    device = "device"  # the whole split on the device, a batch's crops and flips in one gather (data/device_loader.py)
    torchvision = "torchvision"  # PIL images, torchvision's transforms, a DataLoader (data/torchvision_loader.py)


PIPELINES = tuple(p.value for p in Pipeline)


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast: convolutions and the linear layer in bfloat16; BN statistics, weights and loss in fp32


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# The kinds of keys that are not what a run trains, one definition each (a key stands for everything under it):
# - where the data comes from: never names a sweep job's folder, a run folder resumes whatever it says;
DATA_SOURCE_KEYS = ("data.root", "data.download")
# - how a run is carried out or watched (its numbers do not depend on them): with DATA_SOURCE_KEYS, never part
#   of a job's folder name (conf/config.yaml's exclude_keys: tests/test_config.py ties that list to this one),
#   not compared when a run folder resumes, not a factor of the report;
NOT_THE_EXPERIMENT = (*DATA_SOURCE_KEYS, "data.workers", "logger", "trainer.device", "trainer.max_parameters",
                      "trainer.threads", "question")
# - how a run computes (the same arithmetic, or within rounding): part of a job's folder name and compared on
#   resume, but never a factor of the report;
EXECUTION_DETAILS = ("trainer.eval_batch_size", "trainer.eval_every", "trainer.checkpoint_every",
                     "trainer.channels_last", "trainer.cuda_graph", "trainer.compile", "trainer.compile_mode")
# - which draw of the randomness a run is: its seeds;
SEED_KEYS = ("seed", "seeds")
# and so what the report never makes a factor of its table;
NOT_FACTORS = (*SEED_KEYS, *NOT_THE_EXPERIMENT, *EXECUTION_DETAILS)
# - which data set a job reads, and from where (a sweep fetches each once, before its jobs start).
DATA_KEYS = ("data", "data.name", *DATA_SOURCE_KEYS)
# A run that resumes from a checkpoint does so where it started: the checkpoint holds that device's random
# state (a CUDA generator's is not a CPU generator's), so a completed run is found on any device, an unfinished
# one only on its own.
RESUMED_ON_THE_SAME = ("trainer.device",)
MAX_DATA_WORKERS = 256  # DataLoader workers: more is a typo (each holds the training images); a run caps at its cores


def is_under(key: str, prefixes: tuple[str, ...] | list[str] | set[str]) -> bool:
    """Whether a dotted key is one of `prefixes` or lies under one of them (logger.experiment under logger)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@dataclass
class DataConfig:
    name: Dataset = MISSING
    root: str = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    pipeline: str = MISSING  # checked by validate() against PIPELINES
    workers: Optional[int] = MISSING  # DataLoader workers of data.pipeline=torchvision; None: from the cores
    val_size: int = MISSING


@dataclass
class WarmupConfig:
    """The paper's warm-up for ResNet-110/1202: a low lr until training error drops."""

    min_depth: int = MISSING  # nets at least this deep warm up (the paper: 110 and 1202)
    max_iters: int = MISSING  # cap on the warm-up's length
    lr: float = MISSING
    until_train_error: float = MISSING  # percent, running over the last `window` iterations
    window: int = MISSING


@dataclass
class ScheduleConfig:
    """The lr schedule of the run, for any optimizer: its base lr (optimizer.lr) times gamma at each
    milestone, and the paper's warm-up of deep nets before that."""

    milestones: List[int] = MISSING  # iterations at which lr is multiplied by gamma (they come with the budget)
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
    max_parameters: int = MISSING  # a net with more is refused before it is built whole (models.parameter_budget)
    threads: Optional[int] = MISSING  # CPU threads per process; None: its share of the cores free at the start


@dataclass
class SeedsConfig:
    """A seed of its own for each source of a run's randomness (null: `seed`'s), so that a sweep over one source
    with the others held measures the spread that source alone makes (the report's "where the spread comes
    from"). A run with any of them set draws the data order and the augmentation from generators of their
    own; with none set, `seed` sets everything exactly as it always has."""

    init: Optional[int] = MISSING  # the net's initial weights
    order: Optional[int] = MISSING  # the order of the training images, epoch after epoch
    augment: Optional[int] = MISSING  # the crops and flips


SEED_SOURCES = ("init", "order", "augment")


@dataclass(frozen=True)
class RunSeeds:
    """The seed of each source of a run's randomness, and whether they were split (seeds.* set)."""

    init: int
    order: int
    augment: int
    split: bool

    @classmethod
    def single(cls, seed: int) -> RunSeeds:
        """Every source from one seed (`seed` alone, as runs always had it)."""
        return cls(seed, seed, seed, split=False)

    @classmethod
    def of(cls, cfg: BaseConfig) -> RunSeeds:
        own = {source: getattr(cfg.seeds, source) for source in SEED_SOURCES}
        return cls(**{source: cfg.seed if value is None else value for source, value in own.items()},
                   split=any(value is not None for value in own.values()))


@dataclass
class QuestionConfig:
    """What a sweep was made to answer (multirun_analysis/question.py): its confirmatory comparisons, which the
    report tests as one family; every other comparison is exploratory. Not part of the experiment."""

    compare: List[str] = MISSING  # factors whose pairs are compared at every setting of the others (arch, ...)
    trend: List[str] = MISSING  # ordered factors tested as one trend within every setting of the others (depth)


@dataclass
class BaseConfig:
    arch: Dict[str, Any] = field(default_factory=dict)  # plug-in: the model (called with depth, num_classes)
    depth: int = MISSING  # what depths a model accepts is the model's rule (6n+2 for the paper's nets)
    shortcut: Shortcut = MISSING  # for models that take a `shortcut` argument
    data: DataConfig = field(default_factory=DataConfig)
    normalization: Dict[str, Any] = field(default_factory=dict)  # plug-in: fitted on the training split
    augment: Dict[str, Any] = field(default_factory=dict)  # plug-in: what the training images become, or none
    optimizer: Dict[str, Any] = field(default_factory=dict)  # plug-in: a torch.optim class and its keys
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Dict[str, Any] = field(default_factory=dict)  # plug-in: a live tracker beside metrics.csv, or none
    seed: int = MISSING
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    question: QuestionConfig = field(default_factory=QuestionConfig)


def typed(config: dict) -> BaseConfig:
    """A plain run config as the typed schema (what the code reads); a key the schema does not have, or a value
    of the wrong type, is one line naming it (with the key meant, where one is close)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BaseConfig), config))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        if isinstance(e, ConfigKeyError) and key:
            parent = key.rpartition(".")[0]
            known = [str(k) for k in _schema_keys(parent)]
            close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1)
            prefix = f"{parent}." if parent else ""
            hint = f": did you mean {prefix}{close[0]}?" if close else f"; {parent or 'the config'} has " \
                f"{', '.join(known)}"
            raise ConfigError(f"{key} is not a config key{hint} (a '+' adds a key that the schema lacks: "
                              "drop it to set an existing one)") from None
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{key or 'the config'} is not allowed: {message}") from None


def _schema_keys(parent: str) -> list[str]:
    node = OmegaConf.structured(BaseConfig)
    for part in filter(None, parent.split(".")):
        node = node.get(part) if isinstance(node, DictConfig) else None
    return list(node.keys()) if isinstance(node, DictConfig) else []


def warnings(cfg: BaseConfig) -> list[str]:
    """What is allowed but probably not meant: one line each, for the log."""
    late = [m for m in cfg.schedule.milestones if m >= cfg.trainer.max_iters]
    if late:
        n = cfg.trainer.max_iters
        return [f"schedule.milestones {late} lie at or past trainer.max_iters={n}: the lr is not divided there "
                "(milestones come with the budget and do not follow trainer.max_iters; to divide it at 50% and 75% "
                f"of this run: schedule.milestones=[{max(1, n // 2)},{max(2, 3 * n // 4)}])"]
    return []


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_optimizer_keys(cfg: BaseConfig) -> None:
    """The keys of the optimizer node the run itself reads or that the paper sets (whether the callable takes
    them is plugins.py's to check, naming its YAML)."""
    o = cfg.optimizer
    lr = o.get("lr")
    _require(_is_number(lr) and lr > 0, f"optimizer.lr={lr} is not allowed: it must be a number > 0 (the "
             "schedule's base lr)")
    if "momentum" in o:  # the keys of SGD that the paper sets, wherever an optimizer has them
        _require(_is_number(o["momentum"]) and 0 <= o["momentum"] < 1,
                 f"optimizer.momentum={o['momentum']} is not allowed: it must be in [0, 1)")
    if "weight_decay" in o:
        _require(_is_number(o["weight_decay"]) and o["weight_decay"] >= 0,
                 f"optimizer.weight_decay={o['weight_decay']} is not allowed: it must be >= 0")


def validate(cfg: BaseConfig) -> None:
    """Checks that types cannot express; raises ConfigError naming the value and the rule. What a plug-in
    accepts (the depths of a model among them) is checked by plugins.check_plugins."""
    _require(0 <= cfg.seed < 2**63, f"seed={cfg.seed} is not allowed: it must lie in 0 .. 2**63-1")
    for source in SEED_SOURCES:
        value = getattr(cfg.seeds, source)
        _require(value is None or 0 <= value < 2**63, f"seeds.{source}={value} is not allowed: it must lie in "
                 "0 .. 2**63-1, or be null (the run's seed)")
    _validate_optimizer_keys(cfg)
    d, s, w, t = cfg.data, cfg.schedule, cfg.schedule.warmup, cfg.trainer
    _require(d.batch_size > 0, f"data.batch_size={d.batch_size} is not allowed: it must be > 0")
    _require(d.val_size >= 0, f"data.val_size={d.val_size} is not allowed: it must be >= 0")
    _require(d.pipeline in PIPELINES, f"data.pipeline={d.pipeline} is not allowed: it must be one of "
             f"{', '.join(PIPELINES)}")
    _require(d.workers is None or 0 <= d.workers <= MAX_DATA_WORKERS,
             f"data.workers={d.workers} is not allowed: it must be in 0 .. {MAX_DATA_WORKERS} (0: images are "
             "prepared in the training process; a run starts at most one per core), or null for one per core "
             "left to each process")
    _require(0 < s.gamma <= 1, f"schedule.gamma={s.gamma} is not allowed: it must be in (0, 1]")
    for name in ("max_iters", "eval_every", "checkpoint_every", "eval_batch_size", "nproc_per_node", "nnodes",
                 "max_parameters"):
        value = getattr(t, name)
        _require(value > 0, f"trainer.{name}={value} is not allowed: it must be > 0")
    _require(t.threads is None or t.threads > 0, f"trainer.threads={t.threads} is not allowed: it must be > 0, or "
             "null (the cores free when the run starts)")
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
    m = list(s.milestones)
    _require(
        all(a < b for a, b in zip([0] + m, m)),
        f"schedule.milestones={m} is not allowed: they must be positive and strictly increasing",
    )
    _require(w.min_depth >= 0, f"schedule.warmup.min_depth={w.min_depth} is not allowed: it must be >= 0")
    _require(w.max_iters > 0, f"schedule.warmup.max_iters={w.max_iters} is not allowed: it must be > 0")
    _require(w.lr > 0, f"schedule.warmup.lr={w.lr} is not allowed: it must be > 0")
    _require(
        0 < w.until_train_error <= 100,
        f"schedule.warmup.until_train_error={w.until_train_error} is not allowed: it is a percentage in (0, 100]",
    )
    _require(w.window > 0, f"schedule.warmup.window={w.window} is not allowed: it must be > 0")
    base_lr = cfg.optimizer["lr"]
    _require(cfg.depth < w.min_depth or w.lr <= base_lr,
             f"schedule.warmup.lr={w.lr} is not allowed with optimizer.lr={base_lr}: a depth-{cfg.depth} net warms up "
             f"(schedule.warmup.min_depth={w.min_depth}) at a lower lr than its base; set schedule.warmup.lr to at most "
             f"{base_lr}, or schedule.warmup.min_depth above {cfg.depth}")
