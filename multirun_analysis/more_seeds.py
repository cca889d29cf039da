"""The command that adds seeds to a cell of the table: its runs' own overrides, the missing seeds, the sweep
folder its runs lie in (a relaunched sweep skips the jobs it has and runs only the new ones)."""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pandas as pd

from resnet_cifar.config import NAME_KEY, PLUGIN_GROUPS

from .collect import ARCH

TRAIN = "python -m resnet_cifar.train -m"
SWEEP_RECORD = "multirun.yaml"  # Hydra writes it into every sweep folder


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


def cell_overrides(cell: pd.Series, keys: list[str]) -> tuple[list[str], bool]:
    """(the overrides that made the cell's runs, without their seed; whether they are the runs' own):
    the recorded overrides of its first run, else the cell's factor values only."""
    recorded = cell.get("overrides")
    if isinstance(recorded, str):
        return [o for o in json.loads(recorded) if o.split("=", 1)[0].lstrip("+~") != "seed"], True
    return [_override(k, cell[k]) for k in keys if k in cell and not pd.isna(cell[k])], False


def add_seeds_command(cell: pd.Series, keys: list[str], total: float) -> str | None:
    """The sweep that brings the cell to `total` seeds (None if it has them or the number is unknown)."""
    if pd.isna(total) or math.isinf(total) or total <= cell["n"]:
        return None
    seeds = new_seeds([int(s) for s in cell["seeds"]], int(total))
    overrides, own = cell_overrides(cell, keys)
    parents = {Path(run).parent for run in cell["runs"]}
    sweep = parents.pop() if len(parents) == 1 else None
    where = [f"hydra.sweep.dir={sweep}"] if sweep is not None and (sweep / SWEEP_RECORD).is_file() else []
    words = [*overrides, f"seed={seed_sweep(seeds)}", *where]
    command = f"{TRAIN} {' '.join(shlex.quote(w) for w in words)}"
    return command if own else f"{command}  # with the settings your runs of {ARCH}={cell.get(ARCH)} used"
