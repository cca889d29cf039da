"""What a run is: its config as composed and recorded (each plug-in named by its option), typed, with the
command-line overrides that made it. The form summary.json keeps, RunFolder compares and DDP workers rebuild.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from .config import NAME_KEY, PLUGIN_GROUPS, BaseConfig, typed
from .errors import ConfigError

def with_plugin_names(config: dict, choices: Mapping[str, Any]) -> dict:
    """The composed config with each plug-in node's `name`: the option chosen in its group (Hydra's
    runtime choices), unless the YAML sets one itself."""
    for group in PLUGIN_GROUPS:
        node = config.get(group)
        if isinstance(node, dict) and not node.get(NAME_KEY):
            name = choices.get(group)
            if not name:
                raise ConfigError(f"{group} has no name: choose it as {group}=NAME (a file {group}/NAME.yaml in "
                                  f"conf/ or in your --config-dir), or set {group}.name")
            config = {**config, group: {**node, NAME_KEY: name}}
    return config


def named_run_config(plain: dict, choices: Mapping[str, Any]) -> dict:
    """A freshly composed config (plain, resolved) as a run records it: each plug-in named by the option chosen
    in its group."""
    return with_plugin_names(plain, choices)


def composed_run_config(composed: Any) -> dict:
    """A config composed with Hydra's node (compose(..., return_hydra_config=True)) as a run records it:
    named_run_config of it without the `hydra` node (for code outside a Hydra job: the sweep's checks, the
    benchmark, the report's recipe)."""
    plain = OmegaConf.to_container(composed, resolve=False)
    choices = plain.pop("hydra")["runtime"]["choices"]
    return named_run_config(OmegaConf.to_container(OmegaConf.create(plain), resolve=True, enum_to_str=True), choices)


@dataclass(frozen=True)
class RunSpec:
    """What a run is: `config`, its typed config (what the code reads), `recorded`, the same as the plain dict
    summary.json keeps, and the command-line overrides that made it."""

    config: BaseConfig
    recorded: dict
    overrides: list[str]

    @classmethod
    def from_hydra(cls, cfg: DictConfig, overrides: list[str], choices: Mapping[str, object]) -> RunSpec:
        """The run Hydra composed, each plug-in named by the option chosen in its group (Hydra's runtime
        choices; named_run_config)."""
        return cls.from_dict(named_run_config(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), choices),
                             overrides)

    @classmethod
    def from_dict(cls, recorded: dict, overrides: list[str]) -> RunSpec:
        """Rebuilt in a DDP worker, which has no Hydra, from what the job's process passed it."""
        return cls(typed(recorded), recorded, list(overrides))
