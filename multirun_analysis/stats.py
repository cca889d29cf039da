"""The statistics of the report: intervals of a mean, comparisons of two settings, seeds a claim needs.

Numbers only (numpy and scipy.stats), no frames: table.py and comparisons.py say what they mean.

Which interval: Student's t below BOOTSTRAP_MIN_SEEDS seeds, scipy's BCa bootstrap from there on. Simulated
on the 2-core dev machine (400 draws of n values each, scipy 1.17; two simulations): the bootstrap's 95%
interval covers the true mean of normal data in 72-76% of draws at n = 3, 81-87% at 5, 89% at 10, 93% at 20
and 30, where the t-interval covers 93.5-96.5% at every n; on skewed (lognormal) data the t-interval was never
the worse of the two either. Seeds come by the handful, so the t-interval is the honest one there; each row says which was used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats

LEVEL = 0.95  # every interval of the report
ALPHA = 0.05  # the level a difference is said to be shown at (after Holm's correction)
POWER = 0.8  # the chance of detecting a difference that "seeds needed" plans for
BOOTSTRAP_MIN_SEEDS = 30  # from here on the bootstrap's coverage is within ~1 point of nominal (measured above)
RESAMPLES = 9999  # bootstrap and random permutations; permutations are exact when there are fewer
BATCH = 500  # resamples held in memory at once (cells x seeds x BATCH floats)
SEED = 0  # resampling is seeded: the same runs give the same report

T_METHOD, BOOTSTRAP_METHOD, NO_INTERVAL = "t", "bootstrap BCa", "none"


@cache
def t_quantile(df: int) -> float:
    """The two-sided LEVEL quantile of Student's t (cached: the report asks for few dfs, many times)."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # T_METHOD, BOOTSTRAP_METHOD or "none: why"


def no_interval(why: str) -> Interval:
    return Interval(math.nan, math.nan, f"{NO_INTERVAL}: {why}")


def mean_interval(values) -> Interval:
    """The LEVEL interval of the mean of `values` (one per seed); none for one value or identical values,
    where nothing is known of the spread."""
    return mean_intervals([values])[0]


def mean_intervals(samples: list) -> list[Interval]:
    """mean_interval of each sample, the bootstraps of samples of one size in one vectorized call."""
    found: list[Interval | None] = [None] * len(samples)
    by_size: dict[int, list[int]] = {}
    for i, values in enumerate(samples):
        x = np.asarray(values, dtype=float)
        n = len(x)
        if n < 2:
            found[i] = no_interval("1 seed" if n == 1 else "no runs")
        elif np.ptp(x) == 0:
            found[i] = no_interval(f"all {n} values identical")
        elif n < BOOTSTRAP_MIN_SEEDS:
            half = t_quantile(n - 1) * x.std(ddof=1) / math.sqrt(n)
            found[i] = Interval(x.mean() - half, x.mean() + half, T_METHOD)
        else:
            by_size.setdefault(n, []).append(i)
    for n, indices in by_size.items():
        data = np.stack([np.asarray(samples[i], dtype=float) for i in indices])
        result = stats.bootstrap((data,), np.mean, axis=-1, vectorized=True, confidence_level=LEVEL,
                                 n_resamples=RESAMPLES, batch=BATCH, method="BCa", random_state=SEED)
        for i, low, high in zip(indices, *result.confidence_interval):
            found[i] = Interval(float(low), float(high), BOOTSTRAP_METHOD)
    return found  # type: ignore[return-value]


MAX_SEEDS = 1_000_000  # beyond this a number of seeds is reported as infinite


def smallest_n(enough, start: int = 2) -> float:
    """The smallest n >= start with enough(n), for enough monotone in n (False, ..., False, True, ...): doubling
    to a bracket, then bisection: about 40 evaluations where a scan of every n up to MAX_SEEDS would take
    seconds per comparison (noncentral t)."""
    high = start
    while not enough(high):
        if high >= MAX_SEEDS:
            return math.inf
        high = min(2 * high, MAX_SEEDS)
    low = start if high == start else high // 2 + 1  # high // 2 was not enough
    while low < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle + 1
    return float(high)


def seeds_for_precision(values, precision: float) -> float:
    """The fewest seeds whose t-interval's half-width would be at most `precision`, at the spread seen
    (NaN with fewer than 2 values: no spread seen)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan
    s = x.std(ddof=1)
    if s == 0:
        return float(len(x))
    return smallest_n(lambda n: t_quantile(n - 1) * s / math.sqrt(n) <= precision)


@dataclass(frozen=True)
class Difference:
    diff: float  # mean(a) - mean(b)
    interval: Interval
    p_value: float  # two-sided permutation test of the difference of means; NaN where none was made
    paired: bool
    prob_a_better: float  # the chance that one run of a has a lower error than one run of b (ties half)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_p(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    """Two-sided p-value of mean(a) - mean(b): exact where the permutations are fewer than RESAMPLES."""
    kind = "samples" if paired else "independent"
    result = stats.permutation_test((a, b), _mean_difference, permutation_type=kind, vectorized=True,
                                    n_resamples=RESAMPLES, alternative="two-sided", random_state=SEED)
    return float(result.pvalue)


def difference_interval(a: np.ndarray, b: np.ndarray, paired: bool) -> Interval:
    """The LEVEL interval of mean(a) - mean(b): of the per-seed differences if paired, Welch's otherwise
    (the bootstrap where both sides have BOOTSTRAP_MIN_SEEDS)."""
    if paired:
        return mean_interval(a - b)
    if len(a) < 2 or len(b) < 2:
        return no_interval("1 seed on a side")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return no_interval("all values identical on both sides")
    if min(len(a), len(b)) >= BOOTSTRAP_MIN_SEEDS:
        result = stats.bootstrap((a, b), _mean_difference, vectorized=True, confidence_level=LEVEL,
                                 n_resamples=RESAMPLES, method="BCa", random_state=SEED)
        return Interval(*map(float, result.confidence_interval), BOOTSTRAP_METHOD)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt(va + vb)
    d = a.mean() - b.mean()
    return Interval(d - half, d + half, "Welch t")


def prob_a_better(a: np.ndarray, b: np.ndarray) -> float:
    """P(one run of a has a lower test error than one run of b), ties counted half (Mann-Whitney's U / nm)."""
    lower = (a[:, None] < b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(lower + ties / 2)


def compare(a, b, paired: bool) -> Difference:
    """a against b (test errors; paired: the same seeds, in the same order on both sides). A p-value only
    where each side has 2 runs or more: with one run a side no test can say anything."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    p = permutation_p(a, b, paired) if min(len(a), len(b)) >= 2 else math.nan
    return Difference(float(a.mean() - b.mean()), difference_interval(a, b, paired), p, paired, prob_a_better(a, b))


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
    """The smallest two-sided p a permutation test of these seeds can give (its resolution): 2 over the
    number of distinct permutations, and no less than 2 / (RESAMPLES + 1) where they are drawn at random."""
    count = 2.0 ** n_a if paired else math.comb(n_a + n_b, n_a)
    return max(2.0 / count, 2.0 / (RESAMPLES + 1) if count > RESAMPLES else 0.0)


def seeds_to_detect(a, b, paired: bool, tests: int) -> float:
    """Seeds a side for a POWER chance of showing the observed difference at ALPHA after the correction for
    `tests` comparisons (Bonferroni's bound of Holm, the worst case), at the spread seen: the t-test's power
    (noncentral t), and at least the seeds a permutation test needs to reach that level at all. NaN where
    nothing was seen (one run a side, or no difference)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        return math.nan
    delta = abs(a.mean() - b.mean())
    spread = (a - b).std(ddof=1) if paired else math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if delta == 0:
        return math.nan
    alpha = ALPHA / max(tests, 1)
    floor = next((n for n in range(2, 200) if smallest_permutation_p(n, n, paired) <= alpha), None)
    if floor is None:  # below what RESAMPLES random permutations can resolve
        return math.inf
    if spread == 0:
        return float(floor)

    def powerful(n: int) -> bool:
        df = n - 1 if paired else 2 * n - 2
        ncp = delta / spread * (math.sqrt(n) if paired else math.sqrt(n / 2))
        crit = stats.t.ppf(1 - alpha / 2, df)
        # the far tail on the other side: scipy gives NaN where it is below ~1e-17 (read as 0)
        return float(np.nan_to_num(stats.nct.sf(crit, df, ncp)) + np.nan_to_num(stats.nct.cdf(-crit, df, ncp))) >= POWER

    return max(float(floor), smallest_n(powerful))
