"""Every pair of values of every factor that varies, everything else held equal: comparisons.csv and .md.

A factor is depth, the net, or any config key the table has as a factor (shortcut, normalization,
data.pipeline, ...). For a pair (a, b) in one setting of the other factors: the difference of mean test
error (a - b, points) with its 95% interval, a permutation test's p-value (paired by seed where both sides
ran the same seeds), Holm's adjustment over all the comparisons made, the chance that one run of a beats
one of b, and a verdict in words that claims no more than the adjusted p-value shows.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import pandas as pd

from .collect import ARCH, FLOATS, in_order
from .escape import inline
from .stats import ALPHA, compare, holm, seeds_to_detect, smallest_permutation_p
from resnet_cifar.filesystem import write_frame

COLUMNS = ["factor", "a", "b", "held", "n_a", "n_b", "paired", "diff", "ci_low", "ci_high", "ci_method", "p_value",
           "p_holm", "prob_a_better", "seeds_needed", "verdict"]


def label(key: str) -> str:
    return "arch" if key == ARCH else key


def _held_text(held: dict) -> str:
    return ", ".join(f"{label(k)}={v}" for k, v in held.items())


def _seeds_text(n_a: int, n_b: int) -> str:
    return f"{n_a} seed{'s' if n_a != 1 else ''} each" if n_a == n_b else f"{n_a} and {n_b} seeds"


def _pairs(done: pd.DataFrame, keys: list[str]):
    """(factor, a, b, held values, errors of a, errors of b, seeds of a, seeds of b) for every pair."""
    for factor in keys:
        values = in_order(done[factor])
        if len(values) < 2:
            continue
        others = [k for k in keys if k != factor]
        groups = done.groupby(others, dropna=False, sort=True) if others else [((), done)]
        for held_values, group in groups:
            held = dict(zip(others, held_values if isinstance(held_values, tuple) else (held_values,)))
            sides = {value: side.sort_values("seed") for value, side in group.groupby(factor, sort=False)}
            for a, b in itertools.combinations(in_order(sides), 2):
                yield factor, a, b, held, sides[a], sides[b]


def compare_all(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The comparisons of completed runs (each seed once) over `keys` (the table's row keys and factors)."""
    done = runs[runs["status"] == "completed"]
    rows = []
    for factor, a, b, held, side_a, side_b in _pairs(done, keys):
        errors_a, errors_b = side_a["test_error"].to_numpy(float), side_b["test_error"].to_numpy(float)
        seeds_a, seeds_b = side_a["seed"].tolist(), side_b["seed"].tolist()
        paired = len(seeds_a) >= 2 and seeds_a == seeds_b and len(set(seeds_a)) == len(seeds_a)
        found = compare(errors_a, errors_b, paired)
        rows.append({"factor": label(factor), "a": a, "b": b, "held": _held_text(held), "n_a": len(errors_a),
                     "n_b": len(errors_b), "paired": paired, "diff": found.diff, "ci_low": found.interval.low,
                     "ci_high": found.interval.high, "ci_method": found.interval.method, "p_value": found.p_value,
                     "prob_a_better": found.prob_a_better, "_a": errors_a, "_b": errors_b,
                     "cells": [tuple(str(v) for v in side[keys].iloc[0]) for side in (side_a, side_b)]})
    table = pd.DataFrame(rows, columns=[*COLUMNS, "_a", "_b", "cells"])
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    tests = int(table["p_value"].notna().sum())
    table["seeds_needed"] = [math.nan if shown(r) else seeds_to_detect(r["_a"], r["_b"], r["paired"], tests)
                             for _, r in table.iterrows()]
    table["verdict"] = [verdict(r, tests) for _, r in table.iterrows()]
    return table[[*COLUMNS, "cells"]]  # cells: the table keys of a and of b, for the seeds to add


def shown(row) -> bool:
    return not pd.isna(row["p_holm"]) and row["p_holm"] < ALPHA


def setting_name(factor: str, value) -> str:
    """A value as a verdict names it: a net by its name (resnet), anything else with its key (depth=20)."""
    return str(value) if factor == "arch" else f"{factor}={value}"


def verdict(row, tests: int, quote: Callable[[object], str] = str) -> str:
    """What the comparison shows, in words, never more than the adjusted p-value does; it names both
    settings, so that a verdict read alone (the README's list) says which pair it is about. `quote` writes
    the recorded values it names (escape.inline for Markdown)."""
    held = f" at {quote(row['held'])}" if row["held"] else ""
    a, b = quote(setting_name(row["factor"], row["a"])), quote(setting_name(row["factor"], row["b"]))
    seeds = _seeds_text(row["n_a"], row["n_b"]) + (", paired by seed" if row["paired"] else "")
    if min(row["n_a"], row["n_b"]) < 2:
        return (f"cannot say whether {a} or {b} is better{held}: {_seeds_text(row['n_a'], row['n_b'])} "
                f"({a} − {b} = {row['diff']:+.2f} points, but no spread seen on a side)")
    if shown(row):
        better, worse = (a, b) if row["diff"] < 0 else (b, a)
        # the interval of how much better: of b - a where a is the better one
        low, high = (-row["ci_high"], -row["ci_low"]) if row["diff"] < 0 else (row["ci_low"], row["ci_high"])
        interval = "(no interval)" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"
        caveat = "; the interval includes no difference" if not pd.isna(low) and low <= 0 else ""
        return (f"{better} better than {worse}{held} by {abs(row['diff']):.2f} points {interval} "
                f"(p = {row['p_holm']:.2g} after Holm, {seeds}{caveat})")
    interval = ("no interval" if pd.isna(row["ci_low"])
                else f"{a} − {b}: {row['ci_low']:+.2f} to {row['ci_high']:+.2f} points")
    text = f"no difference shown between {a} and {b}{held} with {seeds} ({interval})"
    if not pd.isna(row["ci_low"]) and (row["ci_low"] > 0 or row["ci_high"] < 0):
        text += (f"; the interval excludes 0, but the permutation test does not show the difference "
                 f"(p = {row['p_holm']:.2g} after Holm over {tests} tests)")
    floor = smallest_permutation_p(row["n_a"], row["n_b"], row["paired"])
    if floor >= ALPHA:
        text += f"; with these seeds a permutation test cannot reach p < {ALPHA:g} (its smallest p is {floor:.2g})"
    elif floor * tests >= ALPHA:
        text += (f"; with these seeds a permutation test reaches p < {ALPHA:g} after Holm over {tests} tests only if "
                 "the others' p-values are smaller")
    return text


def markdown_verdicts(table: pd.DataFrame) -> list[str]:
    """Each comparison's verdict as Markdown (its recorded values escaped)."""
    tests = int(table["p_value"].notna().sum())
    return [verdict(r, tests, inline) for _, r in table.iterrows()]


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    """comparisons.md: how many comparisons, how they were made, then one row each."""
    tests = int(table["p_value"].notna().sum())
    head = (f"{len(table)} comparisons, {tests} of them tested (2 seeds or more a side): every pair of values of "
            "each factor that varies, everything else held equal. diff = mean test error of a − b (points; "
            "negative: a better), its 95% interval (paired: Student's t of the per-seed differences; unpaired: "
            "Welch's t; a BCa bootstrap from 30 seeds a side); p: two-sided permutation test of the difference "
            "of means (scipy.stats.permutation_test; paired by seed where both sides ran the same seeds, "
            f"exact up to 9999 permutations), p (Holm): adjusted for the {tests} tests made together; a "
            f"difference is shown where p (Holm) < {ALPHA:g}. P(a better): the chance that one run of a has "
            "the lower error than one run of b. seeds needed: seeds a side for an 80% chance of showing the "
            f"observed difference at {ALPHA:g} after correcting for {tests} tests, at the spread seen.\n\n")
    header = ["factor", "a", "b", "held", "n a", "n b", "paired", "diff [95% CI]", "p", "p (Holm)", "P(a better)",
              "seeds needed", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (_, r), said in zip(table.iterrows(), markdown_verdicts(table)):
        interval = "" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        cells = [inline(r.factor), inline(r.a), inline(r.b), inline(r.held), str(r.n_a), str(r.n_b),
                 "yes" if r.paired else "no",
                 f"{r['diff']:+.2f}{interval}", _p(r.p_value), _p(r.p_holm), f"{r.prob_a_better:.2f}",
                 "" if pd.isna(r.seeds_needed) else ("∞" if np.isinf(r.seeds_needed) else str(int(r.seeds_needed))),
                 said]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n\n" + inline(caption) + "\n"


def _p(value) -> str:
    return "" if pd.isna(value) else f"{value:.3g}"


def to_csv(table: pd.DataFrame, path) -> None:
    write_frame(table[COLUMNS], path, index=False, float_format=FLOATS)
