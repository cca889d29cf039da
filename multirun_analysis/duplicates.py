"""A seed counts once: completed run folders of the same experiment and seed are one observation.

The same sweep reported twice, or a relaunch into another folder, would otherwise turn one run into n = 2
and an interval out of nothing. What makes two runs the same is every config key that defines the
experiment (config.NOT_FACTORS aside: where and how it ran) and the seeds.
"""
from __future__ import annotations

import pandas as pd

from resnet_cifar.config import SEED_KEYS, is_under

from .collect import finished

# Two results of one config and seed closer than this (points of error) are the same result.
SAME_RESULT = 1e-6


def identity_columns(runs: pd.DataFrame, config_columns: list[str], not_experiment: tuple[str, ...]) -> list[str]:
    """The columns that say which experiment and seed a run is (its seeds of each source among them)."""
    return [c for c in config_columns if c in runs and (is_under(c, SEED_KEYS) or not is_under(c, not_experiment))]


def count_once(runs: pd.DataFrame, identity: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(the runs with each completed (config, seed) once: the first folder in name order, lines naming the
    folders left out as duplicates and warning where their results differ)."""
    completed = runs[finished(runs)].sort_values("run")
    if "seed" in completed:  # a run without a recorded seed cannot be told from another: never merged
        completed = completed[completed["seed"].notna()]
    if completed.empty or not identity:
        return runs, []
    keys = pd.util.hash_pandas_object(completed[identity].astype(str), index=False)
    lines, dropped = [], []
    for _, group in completed.groupby(keys, sort=False):
        if len(group) < 2:
            continue
        kept, others = group.iloc[0], group.iloc[1:]
        dropped.extend(others.index)
        errors = group["test_error"].astype(float)
        differ = errors.max() - errors.min() > SAME_RESULT
        what = (f"warning: their results differ (test error {', '.join(f'{e:.2f}' for e in errors)}); "
                f"the first is counted" if differ else "the same result")
        lines.append(f"counted once (same config and seed {kept.get('seed')}): {kept['run']}; duplicates left "
                     f"out: {', '.join(others['run'])}; {what}")
    return runs.drop(index=dropped), lines
