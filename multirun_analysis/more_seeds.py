"""The command that adds seeds to a cell of the table: its runs' own overrides (or, for runs that recorded
none, the config keys in which they differ from conf/'s default), the missing seeds, the sweep folder its runs
lie in (a relaunched sweep skips the jobs it has and runs only the new ones)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_cifar.config import NAME_KEY, PLUGIN_GROUPS, TARGET_KEY
from resnet_cifar.contract import SWEEP_RECORD
from resnet_cifar.upgrade import LEGACY_AUGMENT

from .escape import shell_word
from .table import same_value

TRAIN = "python -m resnet_cifar.train -m"


def new_seeds(have: list[int], total: int) -> list[int]:
    """The smallest seeds not yet run, so that there are `total`."""
    taken, wanted = set(have), total - len(have)
    below = [s for s in range(max(taken, default=-1) + 1) if s not in taken][:max(wanted, 0)]
    start = max(taken, default=-1) + 1
    return below + list(range(start, start + wanted - len(below)))


def seed_sweep(seeds: list[int]) -> str:
    """Hydra's sweep of these seeds: a range where they follow each other and are many, else a list."""
    if len(seeds) > 5 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"range({seeds[0]},{seeds[-1] + 1})"
    return ",".join(map(str, seeds))


def _override(key: str, value) -> str:
    """key=value as the command line takes it; a plug-in's name is its group's option (arch=plain)."""
    group, _, rest = key.partition(".")
    if rest == NAME_KEY and group in PLUGIN_GROUPS:
        key = group
    return f"{key}={value}"


def _text(value) -> str:
    """A config value as the command line writes it: 1564 (not 1564.0), false, [782,1173]."""
    if isinstance(value, (bool, np.bool_)):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace(", ", ",") if str(value).startswith("[") else str(value)


def overrides_from_config(run: pd.Series, recipe: dict, keys: list[str]) -> list[str]:
    """For a run that recorded no command line (a folder from before overrides were kept, an earlier report's
    runs.csv without them): its `keys`, then every config key in which it differs from conf/'s default, so
    that the command trains what it trained (budget=quick's 1564 iterations, not the paper's 64k). A plug-in's
    own keys come with its option; keys conf/ does not have are left out."""
    words = [_override(k, _text(run[k])) for k in keys if k in run and not pd.isna(run[k])]
    for key, default in recipe.items():
        group, _, rest = key.partition(".")
        if key in keys or key == "seed" or rest == TARGET_KEY or key not in run or pd.isna(run[key]) \
                or same_value(run[key], default):
            continue
        own_key_of_another_option = (group in PLUGIN_GROUPS and rest != NAME_KEY
                                     and not same_value(run.get(f"{group}.{NAME_KEY}"), recipe.get(f"{group}.{NAME_KEY}")))
        if not own_key_of_another_option:
            words.append(_override(key, _text(run[key])))
    return words


def repeatable(override: object) -> bool:
    """Whether a recorded override may be printed in a command for the user to run: a run folder is data, and
    one from someone else could have recorded code (`normalization._target_=os.system`), Hydra's own settings
    (`hydra.run.dir=...`, a --config-dir) or anything that is not KEY=VALUE."""
    if not isinstance(override, str) or "=" not in override or override.startswith("-"):
        return False
    key = override.split("=", 1)[0].lstrip("+~")
    return bool(key) and not key.startswith("hydra") and TARGET_KEY not in key.split(".")


def todays_override(override: str) -> str:
    """A recorded override as today's command line takes it: data.augment=true (before augmentation was a
    plug-in) is augment=random."""
    key, _, value = override.partition("=")
    if key.lstrip("+~") == "data.augment" and value in LEGACY_AUGMENT:
        return f"augment={LEGACY_AUGMENT[value]}"
    return override


def cell_overrides(cell: pd.Series, keys: list[str], derived: list[str] | None = None) -> tuple[list[str], bool]:
    """(the overrides that made the cell's runs, without their seed; whether they are the runs' own): the
    recorded overrides of its first run when every one may be repeated (repeatable), else those `derived` from
    its config, else its factor values only."""
    recorded = cell.get("overrides")
    words = json.loads(recorded) if isinstance(recorded, str) else None
    if isinstance(words, list) and all(repeatable(o) for o in words):
        return [todays_override(o) for o in words if o.split("=", 1)[0].lstrip("+~") != "seed"], True
    if derived is not None:
        return derived, True
    return [_override(k, cell[k]) for k in keys if k in cell and not pd.isna(cell[k])], False


def add_seeds_command(cell: pd.Series, keys: list[str], total: float, derived: list[str] | None = None) -> str | None:
    """The sweep that brings the cell to `total` seeds (None if it has them or the number is unknown)."""
    if pd.isna(total) or math.isinf(total) or total <= cell["n"]:
        return None
    seeds = new_seeds([int(s) for s in cell["seeds"]], int(total))
    overrides, own = cell_overrides(cell, keys, derived)
    parents = {Path(run).parent for run in cell["runs"]}
    sweep = parents.pop() if len(parents) == 1 else None
    where = [f"hydra.sweep.dir={sweep}"] if sweep is not None and (sweep / SWEEP_RECORD).is_file() else []
    words = [*overrides, f"seed={seed_sweep(seeds)}", *where]
    command = f"{TRAIN} {' '.join(shell_word(str(w)) for w in words)}"
    return command if own else f"{command}  # with the other settings your runs of this cell used"
