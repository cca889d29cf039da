"""The comparisons of a report: the question the runs were made to answer, tested as one family, and every other
pair shown as exploratory. comparisons.csv and comparisons.md.

The family is the question (question.py): a sweep preset declares it (fig6: plain against ResNet at each
depth, and the trend with depth within each net), `report --question` or `--pair` too. Its comparisons are
confirmatory: t-tests (stats.compare, stats.linear_trend) with Holm's correction over them alone, at ALPHA /
looks. Every other pair of values of a factor that varies, everything else held equal, is exploratory: its
p-value uncorrected, its verdict labelled, never a claim. Without a declared question every pair of every
factor is the family (as before), which costs power for questions nobody asked; the file says so.

Runs that failed or diverged are an outcome: each side says how many of its seeds it lost, and a verdict whose
sides lost different numbers says it compares the survivors.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import pandas as pd

from resnet_cifar.config import SEED_KEYS, is_under
from resnet_cifar.contract import Status
from resnet_cifar.filesystem import write_frame

from .collect import FLOATS, finished, in_order
from .escape import inline
from .question import Question, label
from .table import lost_seeds
from .stats import (
    ALPHA,
    POWER,
    SEED_CAP,
    Spread,
    compare,
    detectable_effect,
    holm,
    linear_trend,
    seeds_for_effect,
    smallest_permutation_p,
)

CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
PAIR, TREND = "pair", "trend"
LOST = (Status.failed, Status.diverged)  # outcomes of a seed that count against its setting
COLUMNS = ["family", "kind", "factor", "a", "b", "held", "n_a", "n_b", "lost_a", "lost_b", "paired", "test", "diff",
           "ci_low", "ci_high", "p_value", "p_holm", "p_permutation", "shown", "share_a_better", "detectable",
           "seeds_needed", "verdict"]
DEFAULT_EFFECT = 0.5  # points of test error: the smallest difference worth planning seeds for (--effect)


def _held_text(held: dict) -> str:
    return ", ".join(f"{label(k)}={v}" for k, v in held.items())


def _seeds_text(n_a: int, n_b: int) -> str:
    return f"{n_a} seed{'s' if n_a != 1 else ''} each" if n_a == n_b else f"{n_a} and {n_b} seeds"


def _groups(frame: pd.DataFrame, others: list[str]):
    if not others:
        return [({}, frame)]
    return [(dict(zip(others, values if isinstance(values, tuple) else (values,))), group)
            for values, group in frame.groupby(others, dropna=False, sort=True)]


class Lost:
    """Seeds that failed or diverged, per cell (table.lost_seeds), looked up by a cell's settings or by part
    of them (a named pair's)."""

    def __init__(self, runs: pd.DataFrame, keys: list[str]) -> None:
        self.keys, self.counts = keys, lost_seeds(runs, keys)

    def __call__(self, setting: dict) -> int:
        wanted = [(i, str(setting[k])) for i, k in enumerate(self.keys) if k in setting]
        return sum(n for cell, n in self.counts.items() if all(cell[i] == v for i, v in wanted))


def pairs(done: pd.DataFrame, keys: list[str]):
    """(factor, a, b, held values, runs of a, runs of b) for every pair of values of every factor, in one
    setting of the others."""
    for factor in keys:
        if len(in_order(done[factor])) < 2:
            continue
        others = [k for k in keys if k != factor]
        for held, group in _groups(done, others):
            sides = {value: side.sort_values("seed") for value, side in group.groupby(factor, sort=False)}
            for a, b in itertools.combinations(in_order(sides), 2):
                yield factor, a, b, held, sides[a], sides[b]


def unmatched(done: pd.DataFrame, keys: list[str]) -> list[str]:
    """Values of a factor that never ran in the same setting of the others as another value of it (a net of
    depths 3n+1 beside one of 6n+2): said in the report instead of silently left uncompared."""
    lines = []
    for factor in keys:
        values = in_order(done[factor])
        if len(values) < 2:
            continue
        others = [k for k in keys if k != factor]
        met = {v: False for v in values}
        for _, group in _groups(done, others):
            present = set(group[factor])
            if len(present) > 1:
                for v in present:
                    met[v] = True
        alone = [v for v, ok in met.items() if not ok]
        if alone:
            settings = "; ".join(f"{label(factor)}={v}: " + ", ".join(
                sorted({_held_text(h) for h, g in _groups(done[done[factor] == v], others)})) for v in alone)
            lines.append(f"not compared: {label(factor)}={', '.join(map(str, alone))} never ran in a setting of the "
                         f"other factors that another {label(factor)} ran in ({settings}); name the pairs to compare "
                         f"with --pair 'KEY=VALUE,... vs KEY=VALUE,...' (e.g. at matched parameter count)")
    return lines


def _side_runs(done: pd.DataFrame, selector: dict) -> pd.DataFrame:
    side = done
    for key, value in selector.items():
        side = side[side[key].astype(str) == str(value)]
    return side.sort_values("seed")


def draws(side: pd.DataFrame) -> list[tuple]:
    """Which draw of the randomness each run is: its seed, and its seeds of each source where it split them
    (two runs pair only if every one agrees)."""
    columns = [c for c in side.columns if is_under(c, SEED_KEYS)]
    return [tuple(None if pd.isna(v) else v for v in row) for row in side[columns].itertuples(index=False)]


def _row(family: str, factor: str, a, b, held: dict, side_a: pd.DataFrame, side_b: pd.DataFrame, lost: tuple,
         keys: list[str]) -> dict:
    errors_a, errors_b = side_a["test_error"].to_numpy(float), side_b["test_error"].to_numpy(float)
    seeds_a, seeds_b = draws(side_a), draws(side_b)
    paired = len(seeds_a) >= 2 and seeds_a == seeds_b and len(set(seeds_a)) == len(seeds_a)
    found = compare(errors_a, errors_b, paired)
    return {"family": family, "kind": PAIR, "factor": label(factor), "a": a, "b": b, "held": _held_text(held),
            "n_a": len(errors_a), "n_b": len(errors_b), "lost_a": lost[0], "lost_b": lost[1], "paired": paired,
            "test": found.test, "diff": found.diff, "ci_low": found.interval.low, "ci_high": found.interval.high,
            "p_value": found.p_value, "p_permutation": found.p_permutation, "share_a_better": found.share_a_better,
            "_spread": found.spread,
            "cells": [tuple(str(v) for v in side[keys].iloc[0]) for side in (side_a, side_b)]}


def _trend_row(family: str, factor: str, held: dict, group: pd.DataFrame, lost_in: Lost) -> dict | None:
    levels = [(value, side["test_error"].to_numpy(float)) for value, side in group.groupby(factor, sort=True)]
    trend = linear_trend(levels)
    if trend is None:
        return None
    # the levels the slope was fitted to (2 seeds or more): its first and last, as they were recorded
    kept = [value for value, errors in levels if len(errors) >= 2]
    first = next(v for v in kept if float(v) == trend.first)
    last = next(v for v in kept if float(v) == trend.last)
    lost = tuple(lost_in({**held, factor: v}) for v in (first, last))
    return {"family": family, "kind": TREND, "factor": label(factor), "a": first, "b": last, "held": _held_text(held),
            "n_a": int((group[factor] == first).sum()), "n_b": int((group[factor] == last).sum()),
            "lost_a": lost[0], "lost_b": lost[1], "paired": False, "test": f"linear trend over {trend.levels} levels "
            f"({trend.interval.method})", "diff": trend.change, "ci_low": trend.interval.low * trend.span,
            "ci_high": trend.interval.high * trend.span, "p_value": trend.p_value, "p_permutation": math.nan,
            "share_a_better": math.nan, "slope": trend.slope, "_spread": None, "cells": []}


def compare_all(runs: pd.DataFrame, keys: list[str], question: Question, looks: int = 1,
                effect: float = DEFAULT_EFFECT, plan: bool = True) -> pd.DataFrame:
    """The report's comparisons of completed runs (each seed once) over `keys` (the table's row keys and
    factors): the question's as one confirmatory family (Holm at ALPHA / looks), every other pair exploratory;
    with `plan`, what each can detect and the seeds it needs (the calibration's simulations skip that)."""
    done = runs[finished(runs)]
    lost_in = Lost(runs, keys)
    rows = []
    trend_factors = [k for k in keys if k in question.trend]
    for factor, a, b, held, side_a, side_b in pairs(done, keys):
        family = CONFIRMATORY if question.asks(factor) else EXPLORATORY
        lost = tuple(lost_in({**held, factor: v}) for v in (a, b))
        rows.append(_row(family, factor, a, b, held, side_a, side_b, lost, keys))
    for factor in trend_factors:
        for held, group in _groups(done, [k for k in keys if k != factor]):
            row = _trend_row(CONFIRMATORY, factor, held, group, lost_in)
            if row:
                rows.append(row)
    for selector_a, selector_b in question.pairs:
        side_a, side_b = _side_runs(done, selector_a), _side_runs(done, selector_b)
        if len(side_a) and len(side_b):
            name_a = ",".join(f"{label(k)}={v}" for k, v in selector_a.items())
            name_b = ",".join(f"{label(k)}={v}" for k, v in selector_b.items())
            lost = (lost_in(selector_a), lost_in(selector_b))
            rows.append(_row(CONFIRMATORY, "pair named", name_a, name_b, {}, side_a, side_b, lost, keys))
    table = pd.DataFrame(rows, columns=[*COLUMNS, "slope", "_spread", "cells"])
    table["p_permutation"] = table["p_permutation"].astype(float)
    confirmatory = (table["family"] == CONFIRMATORY).to_numpy()
    table["p_holm"] = math.nan
    table["p_permutation_holm"] = math.nan
    if confirmatory.any():
        table.loc[confirmatory, "p_holm"] = holm(table.loc[confirmatory, "p_value"])
        # the check over the same family: a trend has no permutation test, its t-test's p stands in for it
        check = table.loc[confirmatory, "p_permutation"].fillna(table.loc[confirmatory, "p_value"])
        table.loc[confirmatory, "p_permutation_holm"] = holm(check)
        table.loc[confirmatory & (table["kind"] == TREND).to_numpy(), "p_permutation_holm"] = math.nan
    tests = int(table.loc[confirmatory, "p_value"].notna().sum())
    level = ALPHA / looks
    table["shown"] = [decide(r, level) for _, r in table.iterrows()]
    planning = level / max(tests, 1)  # Bonferroni's bound of Holm: what a plan can count on
    table["detectable"] = [detectable_effect(r["_spread"], r["n_a"], r["n_b"], planning if r["family"] ==
                                             CONFIRMATORY else ALPHA) if plan and r["kind"] == PAIR else math.nan
                           for _, r in table.iterrows()]
    table["seeds_needed"] = [seeds_for_effect(effect, r["_spread"], planning) if plan and r["kind"] == PAIR and
                             r["family"] == CONFIRMATORY and not r["shown"] else math.nan
                             for _, r in table.iterrows()]
    context = Context(tests, level, looks, effect)
    table["verdict"] = [verdict(r, context) for _, r in table.iterrows()]
    table.attrs["context"] = context
    table.attrs["declared"] = question.declared
    table.attrs["unmatched"] = lost_entirely(done, keys, question, lost_in) + unmatched(done, keys)
    return table


def lost_entirely(done: pd.DataFrame, keys: list[str], question: Question, lost_in: "Lost") -> list[str]:
    """Cells whose every seed failed or diverged: the worst outcome of a setting, said where its comparisons
    would have been (a plain-56 that diverged on every seed would otherwise leave the family smaller with no
    word, and the table without its row)."""
    finished_cells = {tuple(str(v) for v in values) for values in done[keys].itertuples(index=False)} \
        if all(k in done for k in keys) else set()
    lines = []
    for cell, count in sorted(lost_in.counts.items()):
        if cell in finished_cells:
            continue
        setting = dict(zip(keys, cell))
        name = ", ".join(f"{label(k)}={v}" for k, v in setting.items())

        def at(factor: str) -> str:
            held = ", ".join(f"{label(k)}={v}" for k, v in setting.items() if k != factor)
            return f" at {held}" if held else ""
        affected = [f"{label(f)}{at(f)}" for f in (question.compare if question.declared else keys) if f in keys]
        affected += [f"the trend with {label(f)}{at(f)}" for f in question.trend if f in keys]
        what = (f"the question's {'; '.join(affected)}: tested without it, or not at all where nothing was left"
                if affected else "it is in no comparison")
        lines.append(f"not compared: {name} lost all {count} of its seeds (failed or diverged); {what}")
    return lines


class Context:
    """What every verdict of one report shares: the family's size, its level, the looks, the effect planned for."""

    def __init__(self, tests: int, level: float, looks: int, effect: float) -> None:
        self.tests, self.level, self.looks, self.effect = tests, level, looks, effect

    @property
    def correction(self) -> str:
        looks = f" and {self.looks} looks" if self.looks > 1 else ""
        return f"after Holm over {self.tests} confirmatory test{'s' if self.tests != 1 else ''}{looks}"


def permutation_can_reach(row, tests: int, level: float) -> bool:
    """Whether the permutation test of these seeds could show a difference at the family's level at all
    (its smallest p, times the tests of the family); with 5 paired seeds it cannot (2 / 2^5 = 0.0625)."""
    return row["kind"] == PAIR and smallest_permutation_p(row["n_a"], row["n_b"], row["paired"]) * \
        max(tests, 1) < level


def decide(row, level: float) -> bool:
    """Whether a confirmatory difference is shown: its t-test below the family's level after Holm. The
    permutation test of the same statistic is a check reported beside it, not a second gate: as a gate, its
    coarse p-values (2 / 2^8 at 8 paired seeds, times the family) made the power fall when a seed was added
    (1 point at sd 1: 13.8% at 7 seeds, 8.8% at 8) and broke the plans' promise of 80%. The t-test alone keeps
    false claims at or under 5% with normal errors, skew in both arms or moderate skew in one, and unequal
    spreads; heavy skew in one arm against a tight other is its weak side (6-17%; the gate helped only from 8
    seeds on): calibration.py measures it, the verdict says when the permutation check does not confirm."""
    return row["family"] == CONFIRMATORY and not pd.isna(row["p_holm"]) and row["p_holm"] < level


def shown(row, level: float = ALPHA) -> bool:
    """What compare_all decided (decide); `level` is kept by callers that read rows of their own."""
    return bool(row.get("shown", False))


def setting_name(factor: str, value) -> str:
    """A value as a verdict names it: a net by its name (resnet), anything else with its key (depth=20)."""
    return str(value) if factor in ("arch", "pair named") else f"{factor}={value}"


def _lost_text(row, a: str, b: str) -> str:
    if not (row["lost_a"] or row["lost_b"]):
        return ""
    counts = (f"{a} lost {row['lost_a']} of {row['lost_a'] + row['n_a']} seeds and {b} {row['lost_b']} of "
              f"{row['lost_b'] + row['n_b']} (failed or diverged)")
    return f"; {counts}: " + ("compared among the runs that finished, which may not be alike"
                              if row["lost_a"] != row["lost_b"] else "compared among the runs that finished")


def _plan_text(row, context: Context) -> str:
    """What these seeds can detect, and what seeds the effect of interest needs (never from the observed
    difference: under no difference that planned hundreds of seeds)."""
    text = ""
    if not pd.isna(row["detectable"]):
        text += (f"; with these seeds a true difference below {row['detectable']:.2f} points would likely be missed "
                 f"({POWER:.0%} power at the family's level)")
    needed = row["seeds_needed"]
    if not pd.isna(needed):
        if needed > SEED_CAP:
            spread = row["_spread"].text() if row["_spread"] is not None else ""
            text += (f"; showing {context.effect:g} points would take {'more than 1,000,000' if math.isinf(needed) else int(needed)} "
                     f"seeds a side at this spread ({spread} points): not planned")
        elif needed > min(row["n_a"], row["n_b"]):
            text += f"; {int(needed)} seeds a side would show {context.effect:g} points with {POWER:.0%} power"
    return text


def verdict(row, context: Context, quote: Callable[[object], str] = str) -> str:
    """What the comparison shows, in words, never more than its family allows: a confirmatory difference is
    shown only below the family's level after Holm; an exploratory one is never a claim. It names both
    settings, so that a verdict read alone (the README's list) says which pair it is about. `quote` writes the
    recorded values it names (escape.inline for Markdown)."""
    held = f" at {quote(row['held'])}" if row["held"] else ""
    a, b = quote(setting_name(row["factor"], row["a"])), quote(setting_name(row["factor"], row["b"]))
    lost = _lost_text(row, a, b)
    if row["kind"] == TREND:
        return _trend_verdict(row, context, quote, held) + lost
    seeds = _seeds_text(row["n_a"], row["n_b"]) + (", paired by seed" if row["paired"] else "")
    if min(row["n_a"], row["n_b"]) < 2 or pd.isna(row["p_value"]):
        why = "no spread seen on a side" if min(row["n_a"], row["n_b"]) < 2 else row["test"].removeprefix("none: ")
        return (f"cannot say whether {a} or {b} is better{held}: {_seeds_text(row['n_a'], row['n_b'])} "
                f"({a} − {b} = {row['diff']:+.2f} points, but {why}){lost}")
    better, worse = (a, b) if row["diff"] < 0 else (b, a)
    low, high = (-row["ci_high"], -row["ci_low"]) if row["diff"] < 0 else (row["ci_low"], row["ci_high"])
    if row["family"] == EXPLORATORY:
        return (f"exploratory (not part of the question, not corrected: a lead, not a finding): {better} lower than "
                f"{worse}{held} by {abs(row['diff']):.2f} points [{low:.2f}, {high:.2f}] ({row['test']}, "
                f"p = {row['p_value']:.2g} uncorrected, {seeds}){lost}")
    if shown(row, context.level):
        check = ""
        if permutation_can_reach(row, context.tests, context.level):
            check = (f"; the permutation test agrees (p = {row['p_permutation_holm']:.2g})"
                     if row["p_permutation_holm"] < context.level else
                     f"; the permutation test of the same statistic, free of the normal assumption, does not "
                     f"confirm it (p = {row['p_permutation_holm']:.2g} {context.correction}): a claim of the t-test "
                     "alone")
        return (f"{better} better than {worse}{held} by {abs(row['diff']):.2f} points [{low:.2f}, {high:.2f}] "
                f"({row['test']}, p = {row['p_holm']:.2g} {context.correction}, {seeds}{check}){lost}")
    interval = f"{a} − {b}: {row['ci_low']:+.2f} to {row['ci_high']:+.2f} points"
    text = f"no difference shown between {a} and {b}{held} with {seeds} ({interval}, p = {row['p_holm']:.2g} " \
           f"{context.correction})"
    return text + _plan_text(row, context) + lost


def _trend_verdict(row, context: Context, quote, held: str) -> str:
    factor = quote(row["factor"])
    span = f"from {factor}={quote(row['a'])} to {factor}={quote(row['b'])}"
    interval = f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    unit = "layer" if row["factor"] == "depth" else f"unit of {factor}"
    slope = f"slope {row['slope']:+.3g} points per {unit}"
    if shown(row, context.level):
        way = "rises" if row["diff"] > 0 else "falls"
        return (f"test error {way} with {factor}{held}: {row['diff']:+.2f} points {span} {interval} ({slope}; "
                f"{row['test']}, p = {row['p_holm']:.2g} {context.correction})")
    return (f"no trend with {factor} shown{held}: {row['diff']:+.2f} points {span} {interval} ({slope}; "
            f"{row['test']}, p = {row['p_holm']:.2g} {context.correction})")


def markdown_verdicts(table: pd.DataFrame, family: str | None = None) -> list[str]:
    """Each comparison's verdict as Markdown (its recorded values escaped); only one family's if given."""
    context = table.attrs["context"]
    return [verdict(r, context, inline) for _, r in table.iterrows() if family is None or r["family"] == family]


def header(table: pd.DataFrame) -> str:
    """What comparisons.md says before its rows: the question, the family, how it was tested."""
    context = table.attrs["context"]
    confirmatory = int((table["family"] == CONFIRMATORY).sum())
    looks = (f" at {ALPHA:g} / {context.looks} looks = {context.level:.3g}" if context.looks > 1 else
             f" at {ALPHA:g}, for one look: reporting again after adding seeds, without --looks K, makes false "
             "claims more likely (measured: bench/calibrate_stats.py)")
    question = ("The question was declared (a sweep preset's `question`, or --question / --pair): its comparisons "
                "are confirmatory" if table.attrs["declared"] else
                "No question was declared, so every pair of every factor is confirmatory (each added factor costs "
                "power for questions nobody asked: declare one with a preset's `question`, --question or --pair)")
    text = (f"{len(table)} comparisons, {confirmatory} confirmatory ({context.tests} tested){looks}. {question}; "
            "the rest are exploratory: uncorrected, labelled, never a claim. A pair: diff = mean test error of a − b "
            "(points; negative: a better), its 95% interval and t-test (paired by seed where both sides ran the same "
            "seeds: Student's t of the per-seed differences; otherwise Welch's t, each side's own spread), p (Holm): "
            "adjusted over the confirmatory family; p (perm.): the permutation test of the same t statistic, a check "
            "free of the normal assumption. A trend: the change over an ordered factor's levels from the slope of a "
            "least-squares line through the cell means, tested as one Welch contrast. detectable (pairs only): the true "
            f"difference these seeds would show with {POWER:.0%} power at the family's level; seeds needed (pairs "
            f"only; a trend's power depends on every level's seeds): seeds a side to show {context.effect:g} points "
            f"(--effect) with {POWER:.0%} power (more than {SEED_CAP}: not "
            "planned). share a better: of the pairs of one run of a and one of b in this sample, the share where a "
            "has the lower error (a description of these runs, not an estimate). lost: seeds that failed or "
            "diverged.\n")
    for line in table.attrs["unmatched"]:
        text += f"\n{inline(line)}\n"
    return text + "\n"


def comparisons_markdown(table: pd.DataFrame, caption: str) -> str:
    """comparisons.md: the question and how it was tested, then one row each (confirmatory first)."""
    columns = ["family", "factor", "a", "b", "held", "n a (lost)", "n b (lost)", "test", "diff [95% CI]", "p",
               "p (Holm)", "p (perm.)", "share a better", "detectable", "seeds needed", "verdict"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    ordered = table.sort_values("family", kind="stable")
    for (_, r), said in zip(ordered.iterrows(), markdown_verdicts(ordered)):
        interval = "" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        cells = [r.family, inline(r.factor), inline(r.a), inline(r.b), inline(r.held), f"{r.n_a} ({r.lost_a})",
                 f"{r.n_b} ({r.lost_b})", inline(r.test), f"{r['diff']:+.2f}{interval}", _p(r.p_value), _p(r.p_holm),
                 _p(r.p_permutation), "" if pd.isna(r.share_a_better) else f"{r.share_a_better:.2f}",
                 "" if pd.isna(r.detectable) else f"{r.detectable:.2f}",
                 "" if pd.isna(r.seeds_needed) else ("∞" if np.isinf(r.seeds_needed) else str(int(r.seeds_needed))),
                 said]
        lines.append("| " + " | ".join(cells) + " |")
    return header(table) + "\n".join(lines) + "\n\n" + inline(caption) + "\n"


def _p(value) -> str:
    return "" if pd.isna(value) else f"{value:.3g}"


def write_comparisons_csv(table: pd.DataFrame, path) -> None:
    write_frame(table[[*COLUMNS, "slope", "p_permutation_holm"]], path, index=False, float_format=FLOATS)
