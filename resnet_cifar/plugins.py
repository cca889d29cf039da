"""Plug-ins: the callables that arch, normalization, augment, optimizer and logger name by `_target_`, found and
called.

One seam for the built-ins and a user's own (a YAML in their --config-dir, a module on their PYTHONPATH):
the target is imported, the node's keys are checked against the callable's signature, and every failure is
one line naming the option, its YAML file and the key. What each kind of plug-in must be is its owner's
business (models, data/normalization.py, step.py, trackers); checks.py checks them all before a run.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import NAME_KEY, RESERVED_KEYS, TARGET_KEY, BaseConfig
from .errors import ConfigError, UserError


class PluginError(ConfigError):
    """A plug-in that cannot be used as its YAML says."""


@dataclass(frozen=True)
class ConfigSource:
    """Where Hydra looked for config files (its runtime.config_sources): to name a plug-in's YAML file."""

    schema: str  # file, pkg, structured
    path: str

    @classmethod
    def from_hydra(cls, sources: Iterable[Any]) -> tuple[ConfigSource, ...]:
        return tuple(cls(str(s["schema"]), str(s["path"])) for s in sources)


def current_sources() -> tuple[ConfigSource, ...]:
    """The search path of the Hydra job this process runs (empty outside one: a DDP worker, the tests)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ()
    return ConfigSource.from_hydra(HydraConfig.get().runtime.config_sources)


def option_file(group: str, name: str, sources: Iterable[ConfigSource]) -> str | None:
    """The YAML file that defines option `name` of `group`, as the user would find it (None if unknown)."""
    for source in sources:
        if source.schema == "file":
            path = Path(source.path) / group / f"{name}.yaml"
            if path.is_file():
                return str(path)
        elif source.schema == "pkg":
            try:
                path = resources.files(source.path) / group / f"{name}.yaml"
            except ModuleNotFoundError:
                continue
            if path.is_file():
                return f"conf/{group}/{name}.yaml" if source.path == "resnet_cifar.conf" else f"{source.path}/{group}/{name}.yaml"
    return None


def import_target(path: str) -> Any:
    """The object a dotted path names (my_nets.WideResNet, torch.optim.SGD), importing its module.

    Hydra's own locator logs an error before raising; this one only raises, so that the command prints the
    one line check_plugins makes of it. A module that exists but fails to import raises its own error.
    """
    parts = path.split(".")
    if not all(parts):
        raise ImportError(f"'{path}' is not a dotted path")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # no module of this name: the rest of the path is an attribute
            raise
        for attribute in parts[i:]:
            if not hasattr(found, attribute):
                raise AttributeError(f"{'.'.join(parts[:i])} has no attribute {attribute}")
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(f"No module named '{parts[0]}'", name=parts[0])


@dataclass(frozen=True)
class Plugin:
    """One plug-in node of a run's config: the option `name` of `group`, its `_target_` and its keys."""

    group: str
    node: dict
    sources: tuple[ConfigSource, ...] = ()
    trust: Any = None  # trust.CodeTrust for a config a run folder recorded; None: the user's own composed config

    @classmethod
    def of(cls, cfg: BaseConfig, group: str, sources: Iterable[ConfigSource] = (), trust: Any = None) -> Plugin:
        return cls(group, dict(getattr(cfg, group)), tuple(sources), trust)

    @property
    def name(self) -> str:
        return str(self.node.get(NAME_KEY))

    @property
    def target(self) -> str | None:
        return self.node.get(TARGET_KEY)

    @property
    def makes_nothing(self) -> bool:
        """`_target_: null`, said explicitly (logger=csv: no tracker); a YAML without `_target_` is an error."""
        return TARGET_KEY in self.node and self.node[TARGET_KEY] is None

    @property
    def keys(self) -> dict:
        """What the callable gets from the YAML: everything but `_target_` and `name`."""
        return {k: v for k, v in self.node.items() if k not in RESERVED_KEYS}

    @property
    def where(self) -> str:
        """`arch=wide (my_conf/arch/wide.yaml)`: how an error names the option."""
        file = option_file(self.group, self.name, self.sources)
        return f"{self.group}={self.name}" + (f" ({file})" if file else "")

    def fail(self, what: str) -> PluginError:
        return PluginError(f"{self.where}: {what}")

    def locate(self) -> Callable:
        """The callable `_target_` names, imported. For a recorded config (`trust` given) only what is trusted
        (trust.py), decided on the text before anything is imported, and then only an object defined there."""
        if not isinstance(self.target, str) or not self.target:
            raise self.fail(f"it names no callable: the YAML needs {TARGET_KEY}: with a dotted path (e.g. "
                            f"{TARGET_KEY}: my_package.MyClass), found {TARGET_KEY}={self.target!r}")
        if self.trust is not None and not self.trust.allows(self.group, self.target):
            raise self.fail(f"{TARGET_KEY}: {self.target} is not trusted (a run folder is data)")
        try:
            found = import_target(self.target)
        except Exception as e:
            raise self.fail(f"{TARGET_KEY}: {self.target} cannot be imported ({type(e).__name__}: {e}); "
                            "is its module on PYTHONPATH (run from the folder that holds it)?") from None
        if self.trust is not None and not self.trust.defined_where_trusted(self.group, self.target, found):
            raise self.fail(f"{TARGET_KEY}: {self.target} leads to {getattr(found, '__module__', '?')}."
                            f"{getattr(found, '__qualname__', '?')}, which a trusted module only imported: it is not "
                            "trusted (trust its own module if you mean it)")
        if not callable(found):
            raise self.fail(f"{TARGET_KEY}: {self.target} is a {type(found).__name__}, not a class or function")
        return found

    def check_keys(self, factory: Callable, given: dict, positional: tuple = ()) -> None:
        """Refuse keys the callable does not take, and keys it needs that nobody gives, before it is called."""
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return  # a callable without a signature to read (a builtin): its call will say
        try:
            signature.bind(*positional, **given)
        except TypeError as e:
            accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
            unknown = [k for k in given if k not in signature.parameters]
            if unknown and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
                key = unknown[0]
                origin = f"key {key}" if key in self.keys else f"{key} (given by the framework)"
                raise self.fail(f"{origin} is not accepted by {self.target} (it takes {', '.join(accepted)})") \
                    from None
            raise self.fail(f"{self.target} cannot be called with {sorted(given)}: {e}") from None

    def call(self, factory: Callable, *args: Any, **given: Any) -> Any:
        """factory(*args, **given): a refusal from the callable becomes one line naming the option."""
        try:
            return factory(*args, **given)
        except UserError as e:
            raise self.fail(str(e)) from None
        except Exception as e:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in given.items())
            raise self.fail(f"{self.target}({shown}) failed: {type(e).__name__}: {e}") from None

    def arguments(self, runtime: dict) -> dict:
        """The run's arguments and the YAML's keys, which may not name the same argument: a YAML (or a
        +GROUP.KEY override) never silently replaces what the run gives."""
        clash = [key for key in self.keys if key in runtime]
        if clash:
            key = clash[0]
            raise self.fail(f"key {key} is the run's to give ({key}={_short(runtime[key])}), not {self.group}'s: "
                            f"remove {self.group}.{key}")
        return {**runtime, **self.keys}

    def prepare(self, *args: Any, optional: dict | None = None, replacing: dict | None = None,
                **runtime: Any) -> tuple[Callable, dict]:
        """(the callable, what it will be given) once imported and its keys checked: the run's `runtime`
        arguments, those of `optional` it takes (a net's shortcut), and the YAML's keys, of which `replacing`
        replaces some (the lr tensor of SGD's captured step); `args` go before them."""
        factory = self.locate()
        runtime = {**runtime, **{k: v for k, v in (optional or {}).items() if takes(factory, k)}}
        given = {**self.arguments(runtime), **(replacing or {})}
        self.check_keys(factory, given, args)
        return factory, given

    def build(self, *args: Any, optional: dict | None = None, replacing: dict | None = None, **runtime: Any) -> Any:
        """The plug-in made: prepared, then called."""
        factory, given = self.prepare(*args, optional=optional, replacing=replacing, **runtime)
        return self.call(factory, *args, **given)


def _short(value: Any, limit: int = 60) -> str:
    """A value as an error line shows it (a run's whole config is not spelt out)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def takes(factory: Callable, parameter: str) -> bool:
    """Whether a callable takes a keyword argument of this name (a model's `shortcut`)."""
    try:
        return parameter in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
