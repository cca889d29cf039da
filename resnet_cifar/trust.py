"""Which code a run folder may make this process import: a run folder is data, never code.

A run records its config in summary.json, and loading the run back (`load_run`, `evaluate`, torch.hub's
`from_run`, the report's Figure 7) builds its net and its normalization from the callables that config
names by `_target_`. A folder received from someone else could name any callable (`os.system`), so before
anything is imported the recorded text is compared with what the person running the command trusts:

- this package's own plug-ins, the `_target_`s of the options in conf/ (`resnet_cifar.models.resnet.
  cifar_resnet`, `resnet_cifar.data.normalization.PerPixelMean`, ...), load from any folder;
- any other target only if its module is trusted: `--trust-code MODULE` (evaluate, the report, Figure 7),
  `trust_code=["MODULE"]` (load_run, from_run), or a line `MODULE` in the per-user allow-list
  (`$XDG_CONFIG_HOME/resnet_cifar/trusted_code`, by default `~/.config/resnet_cifar/trusted_code`).

MODULE trusts itself and everything below it (`my_nets` trusts `my_nets.WideResNet` and `my_nets.wide.X`,
not `my_nets_other`). The rule `torch.load(weights_only=True)` follows for the weights, applied to the config.
Training is not concerned: the config a training command composes is the one its user typed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from omegaconf import OmegaConf

from . import filesystem
from .config import PLUGIN_GROUPS, TARGET_KEY
from .contract import SUMMARY_FILE
from .errors import ConfigError, UserError

LOADED_GROUPS = ("arch", "normalization")  # the plug-ins a loaded run builds (never its optimizer or tracker)
ALLOW_LIST_NAME = "trusted_code"
TRUST_OPTION = "--trust-code"
MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class UntrustedCode(UserError):
    """A run folder names code outside the package that nobody said to trust."""


@cache
def builtin_targets(group: str) -> frozenset[str]:
    """The `_target_` of every option conf/ ships in one plug-in group: the package's own plug-ins of that
    group (a tracker's class is not a normalization, even if both are the package's)."""
    found = set()
    for option in resources.files("resnet_cifar.conf").joinpath(group).iterdir():
        if option.name.endswith(".yaml"):
            target = OmegaConf.create(option.read_text()).get(TARGET_KEY)
            if isinstance(target, str):
                found.add(target)
    return frozenset(found)


def allow_list_path() -> Path:
    """The per-user allow-list: one trusted module per line, `#` starts a comment."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "resnet_cifar" / ALLOW_LIST_NAME


def checked_modules(modules: Iterable[str], where: str) -> tuple[str, ...]:
    """Module paths as given (`my_nets`, `lab.models`), each a dotted path of identifiers."""
    modules = tuple(modules)
    for module in modules:
        if not isinstance(module, str) or not MODULE_PATH.fullmatch(module):
            raise ConfigError(f"{where}: {module!r} is not a module path (a dotted name such as my_nets or "
                              "lab.models): a module trusts itself and every module and name below it")
    return modules


def user_allow_list() -> tuple[str, ...]:
    """The modules of the per-user allow-list (none if there is no such file)."""
    path = allow_list_path()
    if not os.path.lexists(path):
        return ()
    try:
        text = filesystem.read_text(path, limit=2**20)
    except OSError as e:
        raise ConfigError(f"the allow-list {path} cannot be read ({e.strerror})") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return checked_modules([line for line in lines if line], f"the allow-list {path}")


def _under(target: str, module: str) -> bool:
    return target == module or target.startswith(module + ".")


@dataclass(frozen=True)
class CodeTrust:
    """What this process may import of what a run folder names: the package's plug-ins and `modules`."""

    modules: tuple[str, ...] = ()

    @classmethod
    def of(cls, trust_code: Iterable[str] | str | None = None) -> CodeTrust:
        """The modules given (a keyword or --trust-code) and those of the user's allow-list."""
        given = (trust_code,) if isinstance(trust_code, str) else tuple(trust_code or ())
        return cls(checked_modules(given, f"{TRUST_OPTION} / trust_code") + user_allow_list())

    def allows(self, group: str, target: object) -> bool:
        """Decided on the text alone: nothing is imported to decide."""
        return isinstance(target, str) and (target in builtin_targets(group)
                                            or any(_under(target, m) for m in self.modules))

    def defined_where_trusted(self, group: str, target: str, found: object) -> bool:
        """Once imported: the object a trusted module's path led to is defined in a trusted module, not one it
        imported (my_nets.os.system leads to posix.system)."""
        if target in builtin_targets(group):
            return True
        module = getattr(found, "__module__", None) or ""
        return any(_under(module, m) for m in self.modules)


def add_loading_options(parser) -> None:
    """What a command that loads runs (evaluate, the report, Figure 7) lets a run folder make it do:
    --trust-code MODULE (repeatable: import code it names from there) and --max-parameters N (build a net of
    at most N parameters and buffers; a received folder's own trainer.max_parameters is never used)."""
    parser.add_argument(TRUST_OPTION, action="append", default=[], metavar="MODULE", dest="trust_code",
                        help="import a net or normalization that a run folder names from MODULE (and below it); "
                             "without it only this package's plug-ins and the modules listed in your allow-list "
                             f"($XDG_CONFIG_HOME or ~/.config)/resnet_cifar/{ALLOW_LIST_NAME} are imported from "
                             "what a run folder names")
    parser.add_argument("--max-parameters", type=int, metavar="N",
                        help="refuse to build a net of more than N parameters and buffers (default: "
                             "trainer.max_parameters of conf/, whatever the run folder says)")


def advice(target: object) -> str:
    """How to trust the module a refused target lies in."""
    module = str(target).rpartition(".")[0] or str(target)
    if not MODULE_PATH.fullmatch(module):
        return "it is not a module path, so it cannot be trusted"
    return (f"if you trust that code, pass {TRUST_OPTION} {module} (load_run or from_run: trust_code=[\"{module}\"]) "
            f"or add the line {module} to {allow_list_path()}")


def check_recorded_code(config: dict, run_dir: Path, trust: CodeTrust) -> None:
    """Refuse, in one line naming the folder, the key and the target, a recorded config whose net or
    normalization names a callable that is neither the package's nor trusted; before anything is imported."""
    for group in LOADED_GROUPS:
        node = config.get(group)
        target = node.get(TARGET_KEY) if isinstance(node, dict) else None
        if not trust.allows(group, target):
            shown = target if isinstance(target, str) and MODULE_PATH.fullmatch(target) else repr(target)
            raise UntrustedCode(f"{Path(run_dir) / SUMMARY_FILE} names {group}.{TARGET_KEY}: {shown[:200]}, which is "
                                f"not one of this package's {group} plug-ins; a run folder is data, so nothing it "
                                f"names is imported unless you trust it: {advice(target)}")
