"""Configs written by older versions, read as today's: wherever a recorded config is read (a run folder resumed
or compared, the report, a loaded run). Today's command line takes today's keys only (train.py refuses the old
data.augment=true in one line; the report's add-seeds command writes it as augment=random).

Torch-free and Hydra-free: the run-folder contract reads recorded configs through here.
"""
from __future__ import annotations

import re
from importlib import resources

from omegaconf import OmegaConf

from .config import NAME_KEY, PLUGIN_GROUPS, TARGET_KEY, Pipeline
from .errors import ConfigError

# Before augmentation was a plug-in it was data.augment: random, static or none (and before that true or
# false): read as today's augment option of that name wherever a recorded config is read.
LEGACY_AUGMENT = {"True": "random", "False": "none", "true": "random", "false": "none", "random": "random",
                  "static": "static", "none": "none"}
# Keys added since run folders were first written, with the value that does what runs did before them (a
# callable: read when needed, from conf/).
ADDED_KEYS = {("data", "pipeline"): Pipeline.device.value, ("data", "workers"): None,
              ("trainer", "max_parameters"): lambda: default_max_parameters(),
              ("question", "compare"): lambda: [], ("question", "trend"): lambda: [],
              ("seeds", "init"): None, ("seeds", "order"): None, ("seeds", "augment"): None,
              ("trainer", "threads"): None}
# Before plug-ins, the schedule's keys lived in `optimizer`, and `logger` might be missing (it was added later).
SCHEDULE_KEYS = ("milestones", "gamma", "warmup")
OLDEST_PLUGIN_CHOICES = {"optimizer": "sgd", "logger": "csv", "augment": "random"}  # before they could choose


def builtin_option(group: str, name: str) -> dict:
    """A built-in option of a plug-in group as its YAML in conf/ holds it (with its name)."""
    path = resources.files("resnet_cifar.conf") / group / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)) or not path.is_file():
        raise ConfigError(f"{group}={name} is not a built-in option (a run folder from an older version names it)")
    return {**OmegaConf.to_container(OmegaConf.create(path.read_text())), NAME_KEY: name}


def _upgrade_plugin(config: dict, group: str) -> dict:
    """A plug-in node of an older run folder as today's YAML gives it: `arch: resnet` was a name, and
    normalization and logger were `{name: ...}`; what the node held besides keeps its value."""
    node = config.get(group, {NAME_KEY: OLDEST_PLUGIN_CHOICES.get(group)})
    if isinstance(node, str):
        node = {NAME_KEY: node}
    if not isinstance(node, dict) or TARGET_KEY in node:
        return config
    name = node.get(NAME_KEY) or OLDEST_PLUGIN_CHOICES.get(group)
    if group == "optimizer":  # its schedule keys moved to `schedule`
        schedule = {k: node[k] for k in SCHEDULE_KEYS if k in node}
        node = {k: v for k, v in node.items() if k not in SCHEDULE_KEYS}
        config = {**config, "schedule": {**schedule, **config.get("schedule", {})}}
    return {**config, group: {**builtin_option(group, name), **node, NAME_KEY: name}}


def read_legacy_values(config: dict) -> dict:
    """Values that older versions wrote read as today's: data.augment (true, random, static...) is the
    augment plug-in of that name."""
    data = config.get("data")
    if isinstance(data, dict) and "augment" in data:
        name = LEGACY_AUGMENT.get(str(data["augment"]), str(data["augment"]))
        config = {**config, "data": {k: v for k, v in data.items() if k != "augment"},
                  "augment": config.get("augment") or {NAME_KEY: name}}
    return config


def upgrade(config: dict) -> dict:
    """A config a run folder recorded (summary.json) as today's code reads it: older values read as today's,
    the keys added since filled in as runs were before them, plug-in nodes of versions before plug-ins as
    today's YAML gives them. Only for recorded configs: a node of today without `_target_` is an error of its
    YAML (plugins.py says so), never a built-in."""
    config = read_legacy_values(config)
    for group in PLUGIN_GROUPS:
        config = _upgrade_plugin(config, group)
    for (section, key), value in ADDED_KEYS.items():
        part = config.get(section, {})
        if isinstance(part, dict) and key not in part:
            config = {**config, section: {**part, key: value() if callable(value) else value}}
    return config


def default_max_parameters() -> int:
    """trainer.max_parameters as conf/ sets it: the limit a loaded run is built under unless its loader is given
    another (never the limit a received folder recorded)."""
    path = resources.files("resnet_cifar.conf") / "trainer" / "default.yaml"
    return int(OmegaConf.create(path.read_text())["max_parameters"])


