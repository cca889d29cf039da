"""Where the spread comes from: runs whose seeds were split by source (seeds.init, seeds.order, seeds.augment;
+experiment=spread) give the sd of test error each source makes on its own, with its interval, beside the sd
of runs that draw every source from one seed. spread.csv, and a section of table.md.

For one source, the runs of a cell are grouped by the seeds of the other two; within a group only that source
changes, so the pooled within-group sd is the spread it makes (with the interactions it takes part in), and
its chi-square interval assumes normal errors (stats.pooled_sd). Bouthillier et al. (2021) measured these
sources on CIFAR-10 the same way: one source varied, the others held.
"""
from __future__ import annotations

import math

import pandas as pd

from resnet_cifar.config import SEED_SOURCES
from resnet_cifar.filesystem import write_frame

from .collect import FLOATS, finished
from .escape import inline
from .question import label
from .stats import pooled_sd

SPREAD_FILE = "spread.csv"
ALL_SOURCES = "all (seed)"  # runs that draw every source from their one seed
COLUMNS = ["source", "runs", "groups", "sd", "ci_low", "ci_high", "share_of_all"]


def seeds_columns() -> list[str]:
    return [f"seeds.{source}" for source in SEED_SOURCES]


def split_by_source(runs: pd.DataFrame) -> bool:
    """Whether any run set a seed of its own for a source."""
    return any(c in runs and runs[c].notna().any() for c in seeds_columns())


def effective_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's seed of each source: seeds.SOURCE where it set one, else its seed."""
    return pd.DataFrame({source: runs[f"seeds.{source}"].fillna(runs["seed"]) if f"seeds.{source}" in runs
                         else runs["seed"] for source in SEED_SOURCES}, index=runs.index)


def decompose(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell: the sd each source makes alone (where some runs vary it with the others held), and the sd of
    the runs that vary every source at once (seed alone), with 95% intervals and each source's share of the
    latter's variance."""
    done = runs[finished(runs)]
    rows = []
    for values, cell in (done.groupby(keys, dropna=False, sort=True) if keys else [((), done)]):
        values = values if isinstance(values, tuple) else (values,)
        setting = dict(zip(keys, values))
        own = cell[[c for c in seeds_columns() if c in cell]].notna().any(axis=1) if split_by_source(cell) else \
            pd.Series(False, index=cell.index)
        split, single = cell[own], cell[~own]
        found = {}
        if len(split):
            seeds = effective_seeds(split)
            for source in SEED_SOURCES:
                others = [s for s in SEED_SOURCES if s != source]
                groups = [split.loc[group.index, "test_error"].to_numpy(float)
                          for _, group in seeds.groupby(others) if group[source].nunique() >= 2]
                found[source] = (pooled_sd(groups), sum(len(g) for g in groups))
        found[ALL_SOURCES] = (pooled_sd([single["test_error"].to_numpy(float)]), len(single))
        everything = found[ALL_SOURCES][0]
        for source, (spread, count) in found.items():
            if spread is None:
                continue
            share = (spread.sd ** 2 / everything.sd ** 2 if everything is not None and everything.sd > 0
                     and source != ALL_SOURCES else math.nan)
            rows.append({**setting, "source": source, "runs": count, "groups": spread.groups, "sd": spread.sd,
                         "ci_low": spread.interval.low, "ci_high": spread.interval.high, "share_of_all": share})
    return pd.DataFrame(rows, columns=[*keys, *COLUMNS])


def spread_markdown(frame: pd.DataFrame, keys: list[str]) -> str:
    """The section of table.md: one row per cell and source."""
    header = [*(label(k) for k in keys), "source of randomness", "runs", "groups", "sd of test error (points)",
              "95% CI", "share of all sources' variance"]
    lines = ["| " + " | ".join(map(inline, header)) + " |", "|" + "---|" * len(header)]
    for _, r in frame.iterrows():
        share = "" if pd.isna(r.share_of_all) else f"{100 * r.share_of_all:.0f}%"
        lines.append("| " + " | ".join([*(inline(r[k]) for k in keys), r.source, str(r.runs), str(r.groups),
                                        f"{r.sd:.2f}", f"[{r.ci_low:.2f}, {r.ci_high:.2f}]", share]) + " |")
    return ("\nWhere the spread comes from (spread.csv): the sd of test error that each source of randomness "
            "makes with the others held (runs grouped by the other sources' seeds; seeds.init, seeds.order, "
            "seeds.augment), beside runs that draw every source from one seed; 95% chi-square intervals (normal "
            "errors). Sources that interact do not add up to all of them.\n\n" + "\n".join(lines) + "\n")


def write_spread_csv(frame: pd.DataFrame, keys: list[str], path) -> None:
    write_frame(frame.rename(columns={k: label(k) for k in keys}), path, index=False, float_format=FLOATS)
