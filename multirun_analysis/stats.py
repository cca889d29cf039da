"""The report's statistics: the interval of a cell's mean, the comparison of two settings, the trend of an
ordered factor, a published number matched or not, and the seeds a question needs. Numbers only (numpy and
scipy.stats); table.py and comparisons.py say what they mean.

Which test, and why (measured by bench/calibrate_stats.py, asserted by tests/test_statistics.py):
- Paired seeds (both settings ran the same seeds, which share initialisation and batch order): Student's t-test
  of the per-seed differences. An exact permutation test of 5 paired seeds cannot give p below 2/2^5 = 0.0625,
  whatever the difference (it never showed a 10-point gap); the t-test shows it at p ~ 1e-4.
- Unpaired: Welch's t-test, whose standard error takes each side's own spread, with its degrees of freedom
  bounded by the smaller side's n - 1 (Hsu): the permutation test of the raw difference of means assumes equal
  spreads, and 3 seeds at sd 3 against 12 at sd 0.3 made false claims in ~28% of null sweeps; Welch's own
  df 5.3%, the bounded one 4.8%.
- The permutation test of the same studentized statistic (Janssen 1997; Chung & Romano 2013: valid under
  unequal spreads) is the check free of the normal assumption, reported beside the t-test; a verdict says when
  it does not confirm a shown difference. Not a gate (comparisons.decide): its coarse p-values made power fall
  when a seed was added.
- Intervals of a mean: Student's t for every number of seeds (the BCa bootstrap undercovers: 72-87% at 3-5
  seeds, 93% at 30).
- Seeds are planned for a smallest effect of interest at POWER after the family's correction (the noncentral
  t), never from the difference observed (under no difference that planned hundreds of seeds); beyond
  SEED_CAP the plan is not printed as a command, and the report says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats

LEVEL = 0.95  # every interval of the report
ALPHA = 0.05  # the level a difference is said to be shown at (family-wise, after Holm's correction)
POWER = 0.8  # the chance of detecting the smallest effect of interest that seeds are planned for
RESAMPLES = 9999  # random permutations of the check; exact where there are fewer
SEED = 0  # the permutations are seeded: the same runs give the same report
SEED_CAP = 100  # a plan of more seeds a side than this is reported as why, not as a command
MAX_SEEDS = 1_000_000  # beyond this a number of seeds is infinite

T_METHOD, PAIRED_T, WELCH_T, NO_INTERVAL = "t", "paired t", "Welch t", "none"


@cache
def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided `level` quantile of Student's t (cached: the report asks for few dfs, many times)."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def finite(values) -> np.ndarray:
    """Test errors as floats; refuses what is not a finite number (a NaN must never become a claim)."""
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError(f"the statistics take finite numbers only, got {x[~np.isfinite(x)][:3].tolist()}")
    return x


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # T_METHOD, PAIRED_T, WELCH_T or "none: why"


def no_interval(why: str) -> Interval:
    return Interval(math.nan, math.nan, f"{NO_INTERVAL}: {why}")


def mean_interval(values) -> Interval:
    """The LEVEL t-interval of the mean of `values` (one per seed); none for one value or identical values,
    where nothing is known of the spread."""
    x = finite(values)
    n = len(x)
    if n < 2:
        return no_interval("1 seed" if n == 1 else "no runs")
    if np.ptp(x) == 0:
        return no_interval(f"all {n} values identical")
    half = t_quantile(n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Interval(x.mean() - half, x.mean() + half, T_METHOD)


def mean_intervals(samples: list) -> list[Interval]:
    return [mean_interval(values) for values in samples]


def smallest_n(enough, start: int = 2) -> float:
    """The smallest n >= start with enough(n), for enough monotone in n: doubling to a bracket, then bisection."""
    high = start
    while not enough(high):
        if high >= MAX_SEEDS:
            return math.inf
        high = min(2 * high, MAX_SEEDS)
    low = start if high == start else high // 2 + 1
    while low < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle + 1
    return float(high)


def seeds_for_precision(values, precision: float) -> float:
    """The fewest seeds whose t-interval's half-width would be at most `precision`, at the spread seen (NaN
    with fewer than 2 values: no spread seen)."""
    x = finite(values)
    if len(x) < 2:
        return math.nan
    s = x.std(ddof=1)
    if s == 0:
        return float(len(x))
    return smallest_n(lambda n: t_quantile(n - 1) * s / math.sqrt(n) <= precision)


# -- the spread a comparison has, and what it can detect --------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """What a comparison's standard error is made of: the sd of the per-seed differences (paired), or each
    side's sd (unpaired)."""

    paired: bool
    sd_diff: float = math.nan
    sd_a: float = math.nan
    sd_b: float = math.nan

    @classmethod
    def of(cls, a, b, paired: bool) -> Spread:
        a, b = finite(a), finite(b)
        if paired:
            return cls(True, sd_diff=float((a - b).std(ddof=1)) if len(a) > 1 else math.nan)
        return cls(False, sd_a=float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                   sd_b=float(b.std(ddof=1)) if len(b) > 1 else math.nan)

    @property
    def known(self) -> bool:
        return not (math.isnan(self.sd_diff) if self.paired else (math.isnan(self.sd_a) or math.isnan(self.sd_b)))

    def error_and_df(self, n_a: int, n_b: int) -> tuple[float, float]:
        """(standard error of the difference of means, its degrees of freedom) with these seeds a side."""
        if self.paired:
            return self.sd_diff / math.sqrt(n_a), n_a - 1.0
        va, vb = self.sd_a ** 2 / n_a, self.sd_b ** 2 / n_b
        if va + vb == 0:
            return 0.0, n_a + n_b - 2.0
        return math.sqrt(va + vb), bounded_welch_df(np.array([va, vb]), np.array([n_a, n_b]))

    def text(self) -> str:
        if self.paired:
            return f"sd of the per-seed differences {self.sd_diff:.2f}"
        return f"sd {self.sd_a:.2f} and {self.sd_b:.2f}"


def bounded_welch_df(parts: np.ndarray, counts: np.ndarray) -> float:
    """The degrees of freedom of a sum of variances of means (`parts`, each from `counts` values): Welch and
    Satterthwaite's, but never more than the smallest group's n - 1 (Hsu's bound). With few seeds on the side
    that spreads more, Welch's own df made 5.3% false claims (3 seeds at sd 3 against 12 at sd 0.3, 200,000
    simulated), the bound 4.8%; a trend's contrast (2 seeds at sd 3 beside 10 at sd 0.3) 7.8% without it."""
    parts, counts = np.asarray(parts, dtype=float), np.asarray(counts, dtype=float)
    denominator = float((parts ** 2 / (counts - 1)).sum())
    satterthwaite = float(parts.sum()) ** 2 / denominator if denominator else float(counts.sum() - len(counts))
    return min(satterthwaite, float(counts.min()) - 1.0)


def t_power(effect: float, error: float, df: float, alpha: float) -> float:
    """The chance that a two-sided t-test at `alpha` shows a true difference `effect` whose estimate has
    standard error `error` (noncentral t; scipy's NaN in the far tail read as 0)."""
    if error == 0:
        return 1.0 if effect != 0 else 0.0
    critical = t_quantile(df, 1 - alpha)
    ncp = effect / error
    return float(np.nan_to_num(stats.nct.sf(critical, df, ncp)) + np.nan_to_num(stats.nct.cdf(-critical, df, ncp)))


def seeds_for_effect(effect: float, spread: Spread, alpha: float) -> float:
    """Seeds a side (the same on both) for a POWER chance of showing a true difference of `effect` points at
    `alpha` (the family's corrected level), at the spread seen; NaN where no spread is known."""
    if not spread.known or effect <= 0:
        return math.nan
    return smallest_n(lambda n: t_power(effect, *spread.error_and_df(n, n), alpha) >= POWER)


def detectable_effect(spread: Spread, n_a: int, n_b: int, alpha: float) -> float:
    """The smallest true difference (points) these seeds show with a POWER chance at `alpha` (NaN where no
    spread is known or a side has one seed)."""
    if not spread.known or min(n_a, n_b) < 2:
        return math.nan
    error, df = spread.error_and_df(n_a, n_b)
    if error == 0:
        return 0.0
    low, high = 0.0, error
    while t_power(high, error, df, alpha) < POWER:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_power(middle, error, df, alpha) < POWER else (low, middle)
    return high


# -- comparisons ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    diff: float  # mean(a) - mean(b)
    interval: Interval
    p_value: float  # the t-test's (paired or Welch), two-sided; NaN where none can be made
    p_permutation: float  # the check: a permutation test of the same t statistic
    paired: bool
    test: str  # PAIRED_T, WELCH_T, or why none was made
    spread: Spread
    share_a_better: float  # of all pairs of one run of a and one of b in this sample, the share where a's error is lower


def _paired_t(x, y, axis=-1):
    d = x - y
    n = d.shape[axis]
    return d.mean(axis=axis) / (d.std(axis=axis, ddof=1) / math.sqrt(n))


def _welch_t(x, y, axis=-1):
    va = x.var(axis=axis, ddof=1) / x.shape[axis]
    vb = y.var(axis=axis, ddof=1) / y.shape[axis]
    return (x.mean(axis=axis) - y.mean(axis=axis)) / np.sqrt(va + vb)


def permutation_p(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    """Two-sided p of the studentized difference (sign flips of the paired t; relabelling of Welch's t):
    exact where the permutations are fewer than RESAMPLES."""
    kind, statistic = ("samples", _paired_t) if paired else ("independent", _welch_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.permutation_test((a, b), statistic, permutation_type=kind, vectorized=True,
                                        n_resamples=RESAMPLES, alternative="two-sided", random_state=SEED)
    return float(result.pvalue)


def share_a_better(a: np.ndarray, b: np.ndarray) -> float:
    """Of all pairs (one run of a, one of b) in this sample, the share in which a has the lower error (ties
    half): a description of these runs, not an estimate with an interval."""
    lower = (a[:, None] < b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(lower + ties / 2)


def compare(a, b, paired: bool) -> Difference:
    """a against b (test errors; paired: the same seeds in the same order on both sides). A test only where
    each side has 2 runs or more and the spread is not zero: with one run a side no test can say anything."""
    a, b = finite(a), finite(b)
    spread = Spread.of(a, b, paired)
    diff, share = float(a.mean() - b.mean()), share_a_better(a, b)
    if min(len(a), len(b)) < 2:
        return Difference(diff, no_interval("1 seed on a side"), math.nan, math.nan, paired, "none: 1 seed on a side",
                          spread, share)
    error, df = spread.error_and_df(len(a), len(b))
    if error == 0:
        why = "no spread in the per-seed differences" if paired else "all values identical on both sides"
        return Difference(diff, no_interval(why), math.nan, math.nan, paired, f"none: {why}", spread, share)
    method = PAIRED_T if paired else WELCH_T
    half = t_quantile(df) * error
    p = float(2 * stats.t.sf(abs(diff) / error, df))
    return Difference(diff, Interval(diff - half, diff + half, method), p, permutation_p(a, b, paired), paired,
                      method, spread, share)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of p-values made together (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def smallest_permutation_p(n_a: int, n_b: int, paired: bool) -> float:
    """The smallest two-sided p a permutation test of these seeds can give (its resolution): 2 over the number
    of distinct permutations, and no less than 2 / (RESAMPLES + 1) where they are drawn at random."""
    count = 2.0 ** n_a if paired else math.comb(n_a + n_b, n_a)
    return max(2.0 / count, 2.0 / (RESAMPLES + 1) if count > RESAMPLES else 0.0)


# -- an ordered factor's trend ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trend:
    slope: float  # points of test error per unit of the factor (per layer of depth)
    interval: Interval  # of the slope
    p_value: float  # slope = 0, two-sided
    span: float  # from the smallest to the largest level
    levels: int  # the levels with 2 seeds or more: the ones the slope is fitted to
    first: float  # the smallest of them
    last: float  # the largest

    @property
    def change(self) -> float:
        """The change the slope makes over the levels run (points): depth 20 -> 56 for fig6."""
        return self.slope * self.span


def linear_trend(levels: list[tuple[float, np.ndarray]]) -> Trend | None:
    """The least-squares slope of the cell means over the factor's levels, tested as one linear contrast with
    each level's own spread (a Welch contrast: levels may spread unequally, as plain nets' depths do); None
    with fewer than 2 levels of 2 seeds or more, or no spread."""
    try:
        levels = [(float(x), finite(v)) for x, v in levels if len(v) >= 2]
    except (TypeError, ValueError):
        raise ValueError("a trend needs a factor whose values are numbers (depth, lr, batch size...)") from None
    if len(levels) < 2:
        return None
    x = np.array([level for level, _ in levels])
    centred = x - x.mean()
    c = centred / (centred ** 2).sum()
    means = np.array([v.mean() for _, v in levels])
    variances = np.array([v.var(ddof=1) / len(v) for _, v in levels])
    counts = np.array([len(v) for _, v in levels])
    slope = float(c @ means)
    parts = c ** 2 * variances
    error = math.sqrt(parts.sum())
    if error == 0:
        return None
    df = bounded_welch_df(parts, counts)
    half = t_quantile(df) * error
    p = float(2 * stats.t.sf(abs(slope) / error, df))
    return Trend(slope, Interval(slope - half, slope + half, "Welch contrast"), p, float(np.ptp(x)), len(levels),
                 float(x.min()), float(x.max()))


# -- a published number ------------------------------------------------------------------------------------------

MATCHES, DIFFERS, CANNOT_TELL = "matches", "differs", "cannot tell"


@dataclass(frozen=True)
class Equivalence:
    verdict: str  # MATCHES (within ±margin), DIFFERS, CANNOT_TELL
    interval: Interval  # the 1 - 2 ALPHA interval of mean - published (TOST's)
    p_equivalent: float  # TOST's p: that the difference lies outside ±margin
    p_different: float  # the t-test's p: that the difference is 0


def equivalence(values, published: float, margin: float) -> Equivalence:
    """Whether a cell matches a published number within ±margin points (two one-sided t-tests: its 90%
    interval inside the margin), differs from it (its 95% interval excludes it, and it is not within the
    margin), or neither can be told with these seeds."""
    x = finite(values)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return Equivalence(CANNOT_TELL, no_interval("1 seed" if n < 2 else "no spread"), math.nan, math.nan)
    diff, error, df = x.mean() - published, x.std(ddof=1) / math.sqrt(n), n - 1
    p_equivalent = float(max(stats.t.sf((diff + margin) / error, df), stats.t.cdf((diff - margin) / error, df)))
    p_different = float(2 * stats.t.sf(abs(diff) / error, df))
    half = t_quantile(df, 1 - 2 * ALPHA) * error
    verdict = MATCHES if p_equivalent < ALPHA else DIFFERS if p_different < ALPHA else CANNOT_TELL
    return Equivalence(verdict, Interval(diff - half, diff + half, "t, 90% (TOST)"), p_equivalent, p_different)


# -- where the spread comes from ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceSpread:
    sd: float
    interval: Interval  # of the sd (chi-square)
    df: int
    groups: int


def pooled_sd(groups: list[np.ndarray]) -> SourceSpread | None:
    """The sd within groups (each: runs that differ in one source of randomness only), pooled, with its LEVEL
    chi-square interval (normal errors); None without 2 runs in some group."""
    groups = [finite(g) for g in groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return None
    ss = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
    low = math.sqrt(ss / stats.chi2.ppf(0.5 + LEVEL / 2, df))
    high = math.sqrt(ss / stats.chi2.ppf(0.5 - LEVEL / 2, df))
    return SourceSpread(math.sqrt(ss / df), Interval(low, high, "chi-square"), df, len(groups))
