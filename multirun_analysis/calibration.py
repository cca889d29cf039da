"""The report's statistics run over synthetic sweeps with a known truth: how often they claim a difference
that is not there, how often they find one that is, how often their intervals hold the truth, and whether
the seeds they plan deliver the power they promise. Each rate comes with its 95% Clopper-Pearson interval.

    python bench/calibrate_stats.py [--draws 2000]     # the README's numbers (minutes)

tests/test_statistics.py runs the same designs with fewer draws and asserts the rates within binomial
tolerance. Every sweep goes through comparisons.compare_all, the code the report runs (its family, Holm,
trends), not a copy of it.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import stats
from .collect import ARCH
from .comparisons import CONFIRMATORY, compare_all, shown
from .question import Question

LOGNORMAL_SIGMA = 0.5  # skewed errors (skewness 1.75): an occasional bad seed, as plain nets have
LOGNORMAL_MEAN = math.exp(LOGNORMAL_SIGMA ** 2 / 2)
FIG6 = Question(compare=(ARCH,), trend=("depth",), declared=True)  # the fig6 preset's question
NETS = Question(compare=(ARCH,), declared=True)


@dataclass(frozen=True)
class Rate:
    hits: int
    draws: int

    @property
    def share(self) -> float:
        return self.hits / self.draws

    @property
    def interval(self) -> tuple[float, float]:
        found = scipy_stats.binomtest(self.hits, self.draws).proportion_ci(confidence_level=0.95, method="exact")
        return found.low, found.high

    def text(self) -> str:
        low, high = self.interval
        return f"{100 * self.share:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({self.hits}/{self.draws})"


def sweep(cells: dict[tuple[str, int], Callable[[np.random.Generator, int], np.ndarray]], seeds: dict,
          rng: np.random.Generator) -> pd.DataFrame:
    """A report's runs frame: for each (net, depth) cell, its seeds' test errors as `cells` draws them."""
    rows = []
    for (net, depth), draw in cells.items():
        cell_seeds = seeds[(net, depth)] if isinstance(seeds, dict) else seeds
        for seed, error in zip(cell_seeds, draw(rng, len(cell_seeds))):
            rows.append({"run": f"{net}-{depth}-{seed}", "status": "completed", "finished": True, ARCH: net, "depth": depth,
                         "seed": seed, "test_error": float(error)})
    return pd.DataFrame(rows)


def claims(runs: pd.DataFrame, question: Question, looks: int = 1) -> pd.DataFrame:
    table = compare_all(runs, ["depth", ARCH], question, looks, plan=False)
    return table[table["family"] == CONFIRMATORY]


def any_claim(runs: pd.DataFrame, question: Question, looks: int = 1) -> bool:
    return bool(claims(runs, question, looks).apply(lambda r: shown(r, stats.ALPHA / looks), axis=1).any())


# -- the designs ---------------------------------------------------------------------------------------------------

def paired_grid(n: int, means: dict | None = None, sd: float = 1.0, seed_sd: float = 1.0,
                noise: str = "normal") -> Callable[[np.random.Generator], pd.DataFrame]:
    """Figure 6's grid (plain and ResNet at depths 20 and 56), n paired seeds: a seed shifts every cell alike
    (its initialisation and batch order), plus each run's own noise: normal, skewed (lognormal, its mean
    removed) in every cell, or skewed in the plain cells only ("plain skewed": an occasional bad seed of the
    plain nets alone, so that the paired differences are skewed too, which skew in both arms is not)."""
    means = means or {("plain", 20): 30.0, ("resnet", 20): 30.0, ("plain", 56): 30.0, ("resnet", 56): 30.0}

    def draw(rng: np.random.Generator) -> pd.DataFrame:
        shared = rng.normal(0, seed_sd, n)
        rows = {}
        for cell, mean in means.items():
            skewed = noise == "lognormal" or (noise == "plain skewed" and cell[0] == "plain")
            own = (rng.lognormal(0, LOGNORMAL_SIGMA, n) - LOGNORMAL_MEAN) * sd if skewed else rng.normal(0, sd, n)
            rows[cell] = (lambda values: lambda _rng, _n: values)(mean + shared + own)
        return sweep(rows, list(range(n)), rng)
    return draw


def unequal_spread(rng: np.random.Generator) -> pd.DataFrame:
    """The audit's design: 3 seeds at sd 3 against 12 at sd 0.3, equal true means, different seeds."""
    return sweep({("plain", 56): lambda r, k: r.normal(30, 3, k), ("resnet", 56): lambda r, k: r.normal(30, 0.3, k)},
                 {("plain", 56): list(range(3)), ("resnet", 56): list(range(100, 112))}, rng)


def skewed_unpaired(n: int) -> Callable[[np.random.Generator], pd.DataFrame]:
    """n seeds of plain-56 with skewed errors against n other seeds of ResNet-56 with normal ones, equal true
    means (Welch's test of small unpaired samples, one of them skewed)."""
    def draw(rng: np.random.Generator) -> pd.DataFrame:
        return sweep({("plain", 56): lambda r, k: 30.0 + (r.lognormal(0, LOGNORMAL_SIGMA, k) - LOGNORMAL_MEAN) * 2,
                      ("resnet", 56): lambda r, k: r.normal(30.0, 1.0, k)},
                     {("plain", 56): list(range(n)), ("resnet", 56): list(range(100, 100 + n))}, rng)
    return draw


def skewed_against_tight(n: int, sigma: float) -> Callable[[np.random.Generator], pd.DataFrame]:
    """Figure 6's grid, n paired seeds, no true difference: plain's own noise heavily skewed (lognormal of
    `sigma`, its mean removed, times 3: a bad seed now and then far out, as ResNet-56's seeds at the quick
    budget) against ResNet's tight and normal (sd 0.3). The paired differences are skewed: the t-test's weak
    side, which a few seeds cannot protect (docs/guide/analysis.md)."""
    centre = math.exp(sigma ** 2 / 2)

    def draw(rng: np.random.Generator) -> pd.DataFrame:
        shared = rng.normal(0, 1.0, n)
        cells = {}
        for net, depth in (("plain", 20), ("resnet", 20), ("plain", 56), ("resnet", 56)):
            own = (rng.lognormal(0, sigma, n) - centre) * 3.0 if net == "plain" else rng.normal(0, 0.3, n)
            cells[(net, depth)] = (lambda values: lambda _rng, _n: values)(30.0 + shared + own)
        return sweep(cells, list(range(n)), rng)
    return draw


def null_rate(design: Callable, question: Question, draws: int, seed: int, looks: int = 1) -> Rate:
    rng = np.random.default_rng(seed)
    return Rate(sum(any_claim(design(rng), question, looks) for _ in range(draws)), draws)


def sequential_rate(first: int, last: int, draws: int, seed: int, looks: int) -> Rate:
    """Seeds added one at a time from `first` to `last` under no difference, the report read after each:
    the share of sweeps with a claim at any look (`looks` declared to the report)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        full = paired_grid(last, {("plain", 56): 30.0, ("resnet", 56): 30.0})(rng)
        hits += any(any_claim(full[full["seed"] < n], NETS, looks) for n in range(first, last + 1))
    return Rate(hits, draws)


def power(n: int, effect: float, draws: int, seed: int, sd: float = 1.0) -> Rate:
    """Figure 6's question (4 confirmatory tests) with plain worse than ResNet by `effect` at both depths: the
    share of sweeps that show it at depth 56."""
    means = {("plain", 20): 30.0 + effect, ("resnet", 20): 30.0, ("plain", 56): 30.0 + effect, ("resnet", 56): 30.0}
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        found = claims(paired_grid(n, means, sd=sd)(rng), FIG6)
        row = found[(found["kind"] == "pair") & (found["held"] == "depth=56")].iloc[0]
        hits += shown(row) and row["diff"] > 0
    return Rate(hits, draws)


def planned_power(sd: float, effect: float, draws: int, seed: int) -> tuple[int, Rate]:
    """The seeds the report plans for Figure 6's question (a paired difference of `effect` points, each
    run's own noise at sd `sd`, so the per-seed differences at sd sqrt(2) * sd; the level split over the
    question's confirmatory family as the report counts it) and the power power() measures with them: the
    whole pipeline, Holm included."""
    family = len(claims(paired_grid(3)(np.random.default_rng(seed)), FIG6))
    n = int(stats.seeds_for_effect(effect, stats.Spread(True, sd_diff=math.sqrt(2) * sd), stats.ALPHA / family))
    return n, power(n, effect, draws, seed, sd=sd)


def detectable_power(n: int, sd: float, draws: int, seed: int) -> tuple[float, Rate]:
    """The true difference the report says n paired seeds would show with 80% power (Figure 6's question, each
    run's own noise at sd `sd`), and the power power() measures at it: the promise of "detectable", checked."""
    family = len(claims(paired_grid(3)(np.random.default_rng(seed)), FIG6))
    effect = stats.detectable_effect(stats.Spread(True, sd_diff=math.sqrt(2) * sd), n, n, stats.ALPHA / family)
    return effect, power(n, effect, draws, seed, sd=sd)


def coverage(n: int, draws: int, seed: int, skewed: bool = False) -> Rate:
    """The cell interval's coverage of the true mean (normal, or lognormal errors)."""
    rng = np.random.default_rng(seed)
    truth = 30.0 if not skewed else 30.0 + LOGNORMAL_MEAN
    hits = 0
    for _ in range(draws):
        x = rng.normal(30, 1.5, n) if not skewed else 30.0 + rng.lognormal(0, LOGNORMAL_SIGMA, n)
        found = stats.mean_interval(x)
        hits += found.low <= truth <= found.high
    return Rate(hits, draws)


def difference_coverage(draws: int, seed: int) -> Rate:
    """The unpaired difference interval's coverage under the audit's unequal spread (3 at sd 3, 12 at sd 0.3)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        found = stats.compare(rng.normal(31, 3, 3), rng.normal(30, 0.3, 12), paired=False)
        hits += found.interval.low <= 1.0 <= found.interval.high
    return Rate(hits, draws)


def equivalence_at_margin(draws: int, seed: int, margin: float = 0.3) -> Rate:
    """How often a cell whose true mean lies exactly at the margin from the paper is said to match it (5 seeds,
    sd 0.3): TOST's false "matches" rate, at most 5% by design."""
    rng = np.random.default_rng(seed)
    return Rate(sum(stats.equivalence(rng.normal(7.0 + margin, 0.3, 5), 7.0, margin).verdict == stats.MATCHES
                    for _ in range(draws)), draws)


def report_lines(draws: int):
    """Every rate, one line each, as it is measured (docs/guide/analysis.md quotes them)."""
    lines = _Lines()
    lines.append("family-wise false claims (no true difference; fig6's question: 4 confirmatory tests):")
    for name, design, question in (
            ("5 paired seeds, normal", paired_grid(5), FIG6), ("10 paired seeds, normal", paired_grid(10), FIG6),
            ("5 paired seeds, lognormal", paired_grid(5, noise="lognormal"), FIG6),
            ("5 paired seeds, plain's errors skewed, ResNet's normal", paired_grid(5, noise="plain skewed"), FIG6),
            ("8 paired seeds, plain's errors skewed, ResNet's normal", paired_grid(8, noise="plain skewed"), FIG6),
            ("4 against 4 other seeds, plain's errors skewed (sd 1.2), ResNet's normal", skewed_unpaired(4), NETS),
            ("unequal spread: 3 seeds at sd 3 vs 12 at sd 0.3", unequal_spread, NETS)):
        lines.append(f"  {name}: {null_rate(design, question, draws, 1).text()}")
    lines.append("  the t-test's weak side, heavy skew in one arm against a tight other (plain's lognormal x 3 vs sd 0.3):")
    for n, sigma in ((5, 0.5), (8, 0.5), (5, 1.0), (8, 1.0)):
        lines.append(f"    {n} paired seeds, lognormal sigma {sigma:g}: "
                     f"{null_rate(skewed_against_tight(n, sigma), FIG6, draws, 1).text()}")
    lines.append("looking again (seeds added one at a time from 6 to 13, no true difference):")
    lines.append(f"  without --looks: {sequential_rate(6, 13, draws // 2, 2, 1).text()}")
    lines.append(f"  --looks 8: {sequential_rate(6, 13, draws // 2, 2, 8).text()}")
    lines.append("power (fig6's question, plain worse than ResNet at sd 1):")
    for n, effect in ((5, 10.0), (5, 1.5), (10, 1.5), (7, 1.0), (8, 1.0)):
        lines.append(f"  {n} paired seeds, {effect:g} points: {power(n, effect, draws, 3).text()}")
    effect, rate = detectable_power(8, 1.0, draws, 8)
    lines.append(f"power at what the report calls detectable with 8 paired seeds ({effect:.2f} points, each run's "
                 f"own sd 1): {rate.text()}")
    lines.append("coverage of the 95% interval of a cell's mean:")
    for n in (3, 5, 10, 30):
        lines.append(f"  {n} seeds: normal {coverage(n, draws, 4).text()}, lognormal "
                     f"{coverage(n, draws, 4, skewed=True).text()}")
    lines.append(f"coverage of the unpaired difference's 95% interval (3 at sd 3 vs 12 at sd 0.3): "
                 f"{difference_coverage(draws, 5).text()}")
    n, rate = planned_power(1.0, 0.5, draws, 6)
    lines.append(f"power delivered at the planned seeds (0.5 points at depth 56, each run's own sd 1, Figure 6's "
                 f"question, the whole report): {n} seeds, {rate.text()}")
    lines.append(f"false 'matches' of a published number at the margin (0.3 points, 5 seeds): "
                 f"{equivalence_at_margin(draws, 7).text()}")
    return lines


class _Lines(list):
    """A list of lines that prints each as it is added (a calibration takes minutes)."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/calibrate_stats.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=2000, help="simulated sweeps per rate (default 2000)")
    args = parser.parse_args(argv)
    report_lines(args.draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
