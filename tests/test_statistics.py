"""The report's statistics on simulated draws with known truth (seeded: the same result every run), and the
files they make on synthetic run folders."""
import json
import math
import shlex
import statistics

import numpy as np
import pandas as pd
import pytest
from conftest import composed_spec
from test_report import composed, table_rows, write_run

from scipy import stats as scipy_stats

from multirun_analysis import stats
from multirun_analysis.report import report

DRAWS = 400


def binomial_tolerance(p: float, draws: int) -> float:
    """Three standard deviations of a share of `draws` that is p in truth."""
    return 3 * math.sqrt(p * (1 - p) / draws)


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_the_interval_of_a_mean_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(n)
    draws = rng.normal(30.0, 1.5, size=(DRAWS, n))
    found = stats.mean_intervals(list(draws))
    assert {i.method for i in found} == {stats.T_METHOD}  # at 30 seeds too: the bootstrap undercovered there
    covered = np.mean([i.low <= 30.0 <= i.high for i in found])
    assert abs(covered - 0.95) <= binomial_tolerance(0.95, DRAWS), covered


def test_one_seed_or_identical_values_have_no_interval_never_a_fake_one():
    assert stats.mean_interval([7.0]).method == "none: 1 seed" and math.isnan(stats.mean_interval([7.0]).low)
    assert stats.mean_interval([7.0, 7.0, 7.0]).method == "none: all 3 values identical"
    two = stats.mean_interval([7.0, 8.0])  # honest and wide: 7.5 ± 12.71 * 0.5
    assert two.method == "t" and two.low == pytest.approx(7.5 - 12.7062 * 0.5, abs=1e-3)
    assert math.isnan(stats.seeds_for_precision([7.0], 0.3))
    result = stats.compare([7.0], [9.0], paired=False)
    assert math.isnan(result.p_value) and result.interval.method.startswith("none") and result.diff == -2.0
    same = stats.compare([7.0, 8.0, 9.0], [6.0, 7.0, 8.0], paired=True)  # every seed 1 point apart: no spread
    assert math.isnan(same.p_value) and same.test == "none: no spread in the per-seed differences"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_nan_never_becomes_a_claim(bad):
    """A NaN test error made the permutation test return p = 0: "better by nan points"."""
    with pytest.raises(ValueError, match="finite numbers only"):
        stats.compare([30.0, bad, 31.0], [20.0, 21.0, 22.0], paired=False)
    with pytest.raises(ValueError):
        stats.mean_interval([bad, 1.0])


@pytest.mark.slow
def test_the_t_test_finds_a_large_difference_and_rarely_one_that_is_not_there():
    rng = np.random.default_rng(2)
    large = [stats.compare(rng.normal(10, 1, 6), rng.normal(13, 1, 6), paired=False) for _ in range(100)]
    assert np.mean([r.p_value < 0.05 for r in large]) >= 0.95 and {r.test for r in large} == {"Welch t"}
    assert all(r.diff < 0 for r in large) and np.mean([r.share_a_better for r in large]) > 0.95
    same = [stats.compare(rng.normal(10, 1, 6), rng.normal(10, 1, 6), paired=False).p_value for _ in range(DRAWS)]
    assert np.mean(np.array(same) < 0.05) <= 0.05 + binomial_tolerance(0.05, DRAWS)


def test_pairing_by_seed_sees_what_the_seed_to_seed_spread_hides():
    """Each seed shifts both settings alike (the same initialization and batches): only the paired test sees
    a 0.5-point difference under a 2-point spread between seeds."""
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 2, 8)
    a = 30 + seed_effect + rng.normal(0, 0.1, 8)
    b = 30.5 + seed_effect + rng.normal(0, 0.1, 8)
    paired, unpaired = stats.compare(a, b, paired=True), stats.compare(a, b, paired=False)
    assert paired.p_value < 0.01 and paired.interval.high < 0 < unpaired.interval.high
    assert unpaired.p_value > 0.3 and paired.test == "paired t"
    assert paired.p_value == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)  # Student's, by scipy's own code
    assert paired.p_permutation == pytest.approx(2 / 2 ** 8)  # the check, exact: all 256 sign flips


def test_five_paired_seeds_can_show_a_ten_point_difference():
    """The audit's case: 5 paired seeds of N(30, 1) against N(20, 1). The permutation test's smallest p was
    0.0625 whatever the gap, so the report said "no difference shown"."""
    rng = np.random.default_rng(5)
    found = stats.compare(rng.normal(30, 1, 5), rng.normal(20, 1, 5), paired=True)
    assert found.p_value * 4 < 0.05 and 8.5 < found.diff < 11.5  # even after Holm over fig6's 4 tests


def test_welch_takes_each_sides_spread_and_the_smaller_sides_degrees_of_freedom():
    a, b = np.array([27.0, 30.0, 33.0]), np.array([30.0 + 0.1 * k for k in range(-6, 6)])
    found = stats.compare(a, b, paired=False)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    # Welch's statistic, its df bounded by the smaller side's n - 1 = 2 (Welch's own: 2.02 here)
    assert found.test == "Welch t" and found.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(welch.statistic), 2))
    assert found.p_value >= welch.pvalue


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, float("nan"), 0.03, 0.5])
    # 4 tested: 0.01 * 4, max(0.03 * 3, 0.04), max(0.04 * 2, 0.09), max(0.5, 0.09); NaN untouched
    assert adjusted[[0, 3, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5]) and math.isnan(adjusted[2])


def test_seeds_are_planned_for_the_effect_of_interest_never_from_the_difference_seen():
    assert stats.seeds_for_precision([10.0, 11.0, 12.0], 0.3) == 46  # s = 1: t(n-1) / sqrt(n) <= 0.3 from n = 46
    assert stats.seeds_for_precision([10.0, 10.1, 10.2], 0.3) == 3  # already within ±0.3 (2.48 * 0.1 / 1.73)
    # 1 point at sd 1 on each side, one test: a printed power table gives 17 seeds a side at 2n - 2 degrees of
    # freedom; with them bounded by n - 1 (Hsu, against false claims under unequal spreads) one seed more
    assert stats.seeds_for_effect(1.0, stats.Spread(False, sd_a=1.0, sd_b=1.0), 0.05) == 18
    # paired, sd 1 of the differences, 0.5 points: 34 (noncentral t), more at fig6's 4 tests (0.0125)
    assert stats.seeds_for_effect(0.5, stats.Spread(True, sd_diff=1.0), 0.05) == 34
    assert stats.seeds_for_effect(0.5, stats.Spread(True, sd_diff=1.0), 0.0125) == 48
    # the same spread, whatever difference was seen: two samples with the same spread plan the same seeds
    near = stats.Spread.of([30.0, 31.0, 32.0], [30.0, 31.0, 32.0], paired=False)
    far = stats.Spread.of([40.0, 41.0, 42.0], [30.0, 31.0, 32.0], paired=False)
    assert stats.seeds_for_effect(0.5, near, 0.05) == stats.seeds_for_effect(0.5, far, 0.05)
    # what the seeds run can detect: at 5 paired seeds of sd 1, about 1.7 points at 0.05 (t-test power table)
    assert 1.6 < stats.detectable_effect(stats.Spread(True, sd_diff=1.0), 5, 5, 0.05) < 1.8


def test_a_trend_is_one_contrast_with_each_levels_own_spread():
    levels = [(20, np.array([34.0, 35.0, 36.0])), (56, np.array([60.0, 70.0, 80.0]))]
    trend = stats.linear_trend(levels)
    # two levels: the slope is the difference of means over the span, its test Welch's t with Hsu's bound of
    # its degrees of freedom (the smaller side's seeds - 1: Welch-Satterthwaite's df overstates a few seeds')
    assert trend.change == pytest.approx(70.0 - 35.0) and trend.slope == pytest.approx(35.0 / 36)
    welch = scipy_stats.ttest_ind(levels[1][1], levels[0][1], equal_var=False)
    assert trend.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(welch.statistic), df=2))
    assert trend.p_value > welch.pvalue
    flat = stats.linear_trend([(20, np.array([30.0, 31.0])), (32, np.array([30.5, 30.4])),
                               (44, np.array([29.9, 31.2]))])
    assert flat.p_value > 0.5 and flat.levels == 3
    assert stats.linear_trend([(20, np.array([30.0])), (56, np.array([40.0]))]) is None  # no spread seen


@pytest.mark.parametrize("values, verdict", [
    ([7.0, 7.1, 6.9, 7.05, 6.95], stats.MATCHES),  # within ±0.3 of 7.0
    ([8.0, 8.1, 7.9, 8.05, 7.95], stats.DIFFERS),  # 1 point off
    ([6.0, 8.0, 7.5, 6.5, 7.0], stats.CANNOT_TELL),  # too spread to say either
])
def test_a_published_number_is_matched_differed_from_or_cannot_be_told(values, verdict):
    assert stats.equivalence(values, 7.0, 0.3).verdict == verdict


def write_seeds(root, overrides, errors, seeds=None):
    for seed, error in zip(seeds or range(len(errors)), errors):
        write_run(root / ",".join([*overrides, f"seed={seed}"]), [*overrides, f"seed={seed}"], error)


@pytest.mark.slow
def test_comparisons_hold_everything_else_equal_and_never_overstate(tmp_path):
    root = tmp_path / "sweep"
    (root / "multirun.yaml").parent.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")  # a sweep folder, as Hydra leaves one
    rng = np.random.default_rng(4)
    plain56 = (70 + rng.normal(0, 0.5, 5)).tolist()
    resnet56 = (46 + rng.normal(0, 0.5, 5)).tolist()
    write_seeds(root, ["arch=plain", "depth=56"], plain56)
    write_seeds(root, ["arch=resnet", "depth=56"], resnet56)
    write_seeds(root, ["arch=plain", "depth=20"], [34.0, 35.0])
    write_seeds(root, ["arch=resnet", "depth=20"], [34.5, 34.8])
    account = report([root], tmp_path / "out", precision=5.0)  # the seeds the comparisons need, not the cells
    found = pd.read_csv(tmp_path / "out" / "comparisons.csv", keep_default_na=False)
    assert list(found.columns) == ["family", "kind", "factor", "a", "b", "held", "n_a", "n_b", "lost_a", "lost_b",
                                   "paired", "test", "diff", "ci_low", "ci_high", "p_value", "p_holm",
                                   "p_permutation", "shown", "share_a_better", "detectable", "seeds_needed",
                                   "verdict", "slope", "p_permutation_holm"]
    rows = {(r.factor, r.held): r for r in found.itertuples()}
    # no question declared: arch at each depth, depth for each arch, all 4 in the family
    assert set(rows) == {("arch", "depth=20"), ("arch", "depth=56"), ("depth", "arch=plain"), ("depth", "arch=resnet")}
    assert set(found["family"]) == {"confirmatory"}
    at56 = rows[("arch", "depth=56")]
    assert (at56.a, at56.b, at56.n_a, at56.n_b, bool(at56.paired), at56.test) == ("plain", "resnet", 5, 5, True,
                                                                                 "paired t")
    assert at56.diff == pytest.approx(np.mean(plain56) - np.mean(resnet56))
    assert at56.p_value == pytest.approx(scipy_stats.ttest_rel(plain56, resnet56).pvalue)
    # 5 paired seeds show a 24-point gap after Holm over 4 tests (the permutation test never could: 1/16)
    assert at56.verdict.startswith("resnet better than plain at depth=56 by 24.") and "after Holm over 4 " \
        "confirmatory tests, 5 seeds each, paired by seed)" in at56.verdict
    at20 = rows[("arch", "depth=20")]
    assert at20.verdict.startswith("no difference shown between plain and resnet at depth=20 with 2 seeds each")
    assert "with these seeds a true difference below " in at20.verdict  # what 2 seeds could have shown
    md = (tmp_path / "out" / "comparisons.md").read_text()
    assert md.startswith("4 comparisons, 4 confirmatory (4 tested)") and "No question was declared" in md
    assert "arch=resnet depth=20 'seed=range(2," in account  # quoted for the shell


@pytest.mark.slow
def test_a_shown_difference_says_by_how_much_and_with_how_many_seeds(tmp_path):
    root = tmp_path / "sweep"
    plain = [70.0, 70.4, 69.6, 70.2, 69.8, 70.1, 69.9, 70.3]
    resnet = [46.0, 46.5, 45.6, 46.1, 45.8, 46.2, 45.9, 46.3]
    write_seeds(root, ["arch=plain", "depth=56"], plain)
    write_seeds(root, ["arch=resnet", "depth=56"], resnet)
    report([root], tmp_path / "out")
    row = pd.read_csv(tmp_path / "out" / "comparisons.csv").iloc[0]
    p = scipy_stats.ttest_rel(plain, resnet).pvalue  # one comparison: no correction
    assert row.p_holm == pytest.approx(p)
    differences = np.subtract(plain, resnet)
    half = 2.364624251592785 * differences.std(ddof=1) / math.sqrt(8)  # t(0.975, 7) from a table: 2.365
    assert row.verdict == (f"resnet better than plain at depth=56 by {differences.mean():.2f} points "
                           f"[{differences.mean() - half:.2f}, {differences.mean() + half:.2f}] "
                           f"(paired t, p = {p:.2g} after Holm over 1 confirmatory test, 8 seeds each, paired by seed; "
                           f"the permutation test agrees (p = {2 / 2 ** 8:.2g}))")  # 8 paired seeds: it can reach 0.05


def test_the_permutation_test_is_a_check_beside_the_t_test_not_a_second_gate():
    """8 paired seeds, 4 tests: the permutation test's smallest p (2 / 2^8, times 4 under Holm) showed a difference
    only when (nearly) all 8 seeds agreed, so adding an 8th seed lowered the power. A difference the t-test shows
    is now shown, and the verdict says that the permutation test does not confirm it."""
    from multirun_analysis.calibration import NETS, sweep
    from multirun_analysis.comparisons import compare_all

    base = np.array([30.0, 31.0, 29.5, 30.5, 29.0, 30.2, 31.5, 30.8])
    cells = {("resnet", depth): (lambda _rng, _n: base) for depth in (20, 32, 44, 56)}
    clear = base + 5.0 + np.array([0.1, -0.1, 0.2, 0.0, 0.1, -0.2, 0.05, 0.0])  # every seed agrees
    cells.update({("plain", depth): (lambda _rng, _n: clear) for depth in (20, 32, 44)})
    cells[("plain", 56)] = lambda _rng, _n: base + np.array([3.0, 3.2, 2.9, 3.1, 3.0, -0.3, -0.2, -0.1])
    table = compare_all(sweep(cells, list(range(8)), np.random.default_rng(0)), ["depth", "arch.name"], NETS)
    row = table[table["held"] == "depth=56"].iloc[0]
    assert row.p_holm < 0.05 and row.p_permutation_holm >= 0.05 and row.shown, row.to_dict()
    assert row.verdict.startswith("resnet better than plain at depth=56 by 1.83 points")
    assert "the permutation test of the same statistic, free of the normal assumption, does not confirm it " \
           f"(p = {row.p_permutation_holm:.2g} after Holm over 4 confirmatory tests): a claim of the t-test alone" \
           in row.verdict


@pytest.mark.slow
def test_the_question_is_the_family_and_the_rest_is_exploratory(tmp_path):
    """fig6's question (its preset records it in every run): plain against resnet at each depth and the trend
    with depth in each net are confirmatory; the pairs of depths are exploratory, uncorrected and said so."""
    root = tmp_path / "sweep"
    rng = np.random.default_rng(6)
    for arch, depth, mean in (("plain", 20, 34), ("plain", 32, 40), ("plain", 56, 60), ("resnet", 20, 30),
                              ("resnet", 32, 30), ("resnet", 56, 30)):
        write_seeds(root, ["+experiment=fig6", f"arch={arch}", f"depth={depth}"],
                    (mean + rng.normal(0, 0.5, 4)).tolist())
    account = report([root], tmp_path / "out")
    found = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    confirmatory = found[found["family"] == "confirmatory"]
    assert sorted(zip(confirmatory["kind"], confirmatory["factor"], confirmatory["held"])) == [
        ("pair", "arch", "depth=20"), ("pair", "arch", "depth=32"), ("pair", "arch", "depth=56"),
        ("trend", "depth", "arch=plain"), ("trend", "depth", "arch=resnet")]
    assert set(found.loc[found["family"] == "exploratory", "factor"]) == {"depth"}
    assert "5 confirmatory: compare=arch; trend=depth" in account
    plain = confirmatory[(confirmatory["kind"] == "trend") & (confirmatory["held"] == "arch=plain")].iloc[0]
    assert plain.verdict.startswith("test error rises with depth at arch=plain: +") and plain.p_holm < 0.05
    assert "after Holm over 5 confirmatory tests" in plain.verdict
    resnet = confirmatory[(confirmatory["kind"] == "trend") & (confirmatory["held"] == "arch=resnet")].iloc[0]
    assert resnet.verdict.startswith("no trend with depth shown at arch=resnet")
    lead = found[found["family"] == "exploratory"].iloc[0]
    assert lead.verdict.startswith("exploratory (not part of the question, not corrected: a lead, not a finding)")
    assert pd.isna(lead.p_holm)
    # the command line asks another question: now the pairs of depths are the family
    report([root], tmp_path / "again", question="compare=depth")
    again = pd.read_csv(tmp_path / "again" / "comparisons.csv")
    assert set(again.loc[again["family"] == "confirmatory", "factor"]) == {"depth"}


@pytest.mark.slow
def test_failed_and_diverged_seeds_are_an_outcome_of_their_setting(tmp_path):
    """Plain lost 3 of 6 seeds: the verdict compares survivors, and says so."""
    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=56"], [60.0, 61.0, 59.5])
    write_seeds(root, ["arch=resnet", "depth=56"], [30.0, 30.5, 29.8, 30.2, 30.1, 29.9])
    for seed in (3, 4, 5):
        write_run(root / f"arch=plain,depth=56,seed={seed}", ["arch=plain", "depth=56", f"seed={seed}"], 0.0,
                  status="diverged" if seed < 5 else "failed")
    report([root], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert table.set_index("arch")["lost"].to_dict() == {"plain": 3, "resnet": 0}
    row = pd.read_csv(tmp_path / "out" / "comparisons.csv").iloc[0]
    assert (row.lost_a, row.lost_b) == (3, 0)
    assert row.verdict.endswith("; plain lost 3 of 6 seeds and resnet 0 of 6 (failed or diverged): compared among "
                                "the runs that finished, which may not be alike")


@pytest.mark.slow
def test_a_cell_that_lost_every_seed_keeps_its_row_and_its_missing_comparisons_are_said(tmp_path):
    """Plain-56 diverged on all 4 seeds: it had no row, and the question's family shrank from 4 tests to 2 with
    no word. Now the table has its row (n 0, lost 4, no mean, no seeds planned) and the report says what was
    not compared."""
    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=20"], [34.0, 35.0, 33.5, 34.2])
    write_seeds(root, ["arch=resnet", "depth=20"], [30.0, 30.5, 29.8, 30.2])
    write_seeds(root, ["arch=resnet", "depth=56"], [28.0, 28.5, 27.8, 28.2])
    for seed in range(4):
        write_run(root / f"arch=plain,depth=56,seed={seed}", ["arch=plain", "depth=56", f"seed={seed}"], 0.0,
                  status="diverged")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    account = report([root], tmp_path / "out", readme=readme, question="compare=arch,trend=depth")
    line = ("not compared: depth=56, arch=plain lost all 4 of its seeds (failed or diverged); the question's arch "
            "at depth=56; the trend with depth at arch=plain: tested without it, or not at all where nothing was left")
    assert line in account
    assert line in (tmp_path / "out" / "comparisons.md").read_text() and line in readme.read_text()
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    lost_cell = table[(table["arch"] == "plain") & (table["depth"] == 56)].iloc[0]
    assert (lost_cell.n, lost_cell.lost) == (0, 4) and pd.isna(lost_cell["mean"])
    assert list(zip(table["depth"], table["arch"])) == [(20, "plain"), (20, "resnet"), (56, "plain"), (56, "resnet")]
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "| 56 | plain |  |  |  |  | 0 | 4 |" in markdown and "nan" not in markdown
    assert "depth=56 arch=plain" not in account.split("seeds to add")[-1]  # no seeds planned for it
    from multirun_analysis.report import ReportError
    with pytest.raises(ReportError, match=r"--pair: no finished run has arch=plain, depth=56 \(all 4 of its seeds "
                                          r"failed or diverged\)"):
        report([root], tmp_path / "named", pairs=["arch=plain,depth=56 vs arch=resnet,depth=56"])


@pytest.mark.slow
def test_nets_whose_depths_never_meet_are_said_and_can_be_paired_by_name(tmp_path):
    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=14"], [40.0, 41.0, 40.5])
    write_seeds(root, ["arch=resnet", "depth=8"], [35.0, 35.5, 36.0])
    account = report([root], tmp_path / "out")
    assert "not compared: arch=plain, resnet never ran in a setting of the other factors that another arch ran " \
           "in (arch=plain: depth=14; arch=resnet: depth=8)" in account
    account = report([root], tmp_path / "named", pairs=["arch=plain,depth=14 vs arch=resnet,depth=8"])
    row = pd.read_csv(tmp_path / "named" / "comparisons.csv").query("factor == 'pair named'").iloc[0]
    assert (row.family, row.a, row.b) == ("confirmatory", "arch=plain,depth=14", "arch=resnet,depth=8")
    assert row.verdict.startswith("arch=resnet,depth=8 better than arch=plain,depth=14 by 5.00 points")


def test_a_plan_beyond_the_cap_says_why_instead_of_a_command(tmp_path):
    write_seeds(tmp_path / "sweep", ["arch=plain", "budget=quick"], [65.95, 72.63])
    account = report([tmp_path / "sweep"], tmp_path / "out")
    assert "seeds would be needed for its interval at its spread (sd 4.72 points over 2 seeds): more than 100, " \
           "not planned" in account
    assert "range(2," not in account


def test_a_plan_beyond_the_cap_names_the_comparison_that_needs_it(tmp_path):
    """ResNet's seeds agree (sd 0.07): its cell needs few seeds of its own, and hundreds only for the comparison,
    whose differences spread (2.0 and 4.9 points): the line says which, not ResNet's spread."""
    write_seeds(tmp_path / "sweep", ["arch=plain", "budget=quick"], [30.0, 33.0])
    write_seeds(tmp_path / "sweep", ["arch=resnet", "budget=quick"], [28.0, 28.1])
    account = report([tmp_path / "sweep"], tmp_path / "out")
    line = next(x for x in account.splitlines() if "arch=resnet:" in x)
    assert "seeds would be needed to show the effect of interest between plain and resnet at depth=20 " \
           "(comparisons.md; sd of the per-seed differences 2.05 points)" in line, account
    assert "sd 0.07" not in line


@pytest.mark.slow
def test_the_command_that_adds_seeds_makes_the_cells_config(tmp_path):
    root = tmp_path / "sweep"
    overrides = ["budget=quick", "arch=plain", "normalization=imagenet"]
    write_seeds(root, overrides, [30.0, 31.5])
    account = report([root], tmp_path / "out", precision=1.0)
    command = next(line.strip() for line in account.splitlines() if line.strip().startswith("python -m"))
    words = command.split()[4:]
    assert words[-1].startswith("seed=") and words[:-1] == overrides
    seeds = [int(s) for s in words[-1].removeprefix("seed=").split(",")]
    # t(n-1) * 1.06 / sqrt(n) <= 1 from n = 7: seeds 2 to 6 added
    assert seeds == [2, 3, 4, 5, 6]
    config = composed_spec(*words[:-1], f"seed={seeds[0]}").recorded
    recorded = json.loads((root / ",".join([*overrides, "seed=0"]) / "summary.json").read_text())["config"]
    assert {**config, "seed": 0} == recorded


@pytest.mark.slow
def test_a_seed_counts_once(tmp_path):
    """The same sweep reported twice, or a run relaunched into another folder: n stays 1; a duplicate with
    another result is named with a warning."""
    first, again = tmp_path / "sweep", tmp_path / "copy"
    write_seeds(first, ["budget=quick"], [30.0, 31.0])
    write_seeds(again, ["budget=quick"], [30.0, 31.5])
    account = report([first, again], tmp_path / "out")
    row = table_rows(tmp_path / "out")[0]
    assert row["seeds"] == "2" and row["test error % (mean)"] == "30.75"  # the first folder in name order: copy/
    assert f"duplicates left out: {first / 'budget=quick,seed=0'}; the same result" in account
    assert "warning: their results differ (test error 31.50, 31.00); the first is counted" in account
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 2


def drawn_figures(monkeypatch) -> list:
    import multirun_analysis.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    return figures


def legend_texts(figure) -> list[str]:
    return [t.get_text() for legend in figure.legends for t in legend.get_texts()]


@pytest.mark.slow
def test_figures_hold_everything_else_equal_sort_numbers_and_draw_single_points(tmp_path, monkeypatch):
    """A factor plot draws one line per value in a panel per setting of the other factors (never pooled),
    numbers in order (20, 100, 200, not 100, 20, 200); Figure 6 with one evaluation a run draws its points."""
    root = tmp_path / "sweep"
    for batch in (20, 100, 200):
        for augment in ("random", "none"):
            write_run(root / f"b{batch}{augment}", ["budget=quick", f"data.batch_size={batch}",
                                                    f"augment={augment}"], 30.0 + batch / 100, iterations=(1564,))
    figures = drawn_figures(monkeypatch)
    report([root], tmp_path / "out")
    by_title = {f._suptitle.get_text(): f for f in figures}
    batch = next(f for t, f in by_title.items() if "by data.batch_size" in t)
    assert [t for t in legend_texts(batch) if t.isdigit()] == ["20", "100", "200"]
    assert sorted(ax.get_title() for ax in batch.axes) == ["augment=none", "augment=random"]
    assert "1 seed: no interval" in batch._suptitle.get_text()
    fig6 = next(f for t, f in by_title.items() if "Figure 6" in t)
    assert all(line.get_marker() == "o" for ax in fig6.axes for line in ax.lines if len(line.get_xdata()))
    assert sum(len(line.get_xdata()) for ax in fig6.axes for line in ax.lines) >= 12  # 6 runs x test, train


@pytest.mark.slow
def test_an_earlier_reports_runs_csv_reports_again_to_the_same_numbers(tmp_path):
    """Committed results (runs.csv, curves.csv) give today's statistics when their run folders are gone."""
    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=20"], [34.0, 35.0, 36.5])
    write_seeds(root, ["arch=resnet", "depth=20"], [28.0, 29.5, 28.7])
    report([root], tmp_path / "first")
    account = report([tmp_path / "first" / "runs.csv"], tmp_path / "again")
    for name in ("table.csv", "comparisons.csv", "runs.csv"):
        assert (tmp_path / "first" / name).read_text() == (tmp_path / "again" / name).read_text(), name
    assert "fig6.png" in account  # the curves came along
    # an interval is never outside [0, 100]: the errors' own range
    write_seeds(tmp_path / "wild", ["arch=plain"], [1.0, 99.0])
    report([tmp_path / "wild"], tmp_path / "wild_out")
    cell = pd.read_csv(tmp_path / "wild_out" / "table.csv").iloc[0]
    assert (cell.ci_low, cell.ci_high, cell.ci_method) == (0.0, 100.0, "t")


@pytest.mark.slow
def test_runs_that_recorded_no_command_get_one_that_makes_their_config(tmp_path):
    """Old run folders, and an earlier report's runs.csv from them, kept no overrides: the command that adds
    seeds is read from the config (budget=quick's 1564 iterations, not the paper's 64k), and it composes to
    that config."""
    made_with = ["budget=quick", "arch=plain", "normalization=imagenet", "augment=none", "depth=32"]
    write_seeds(tmp_path / "old", made_with, [30.0, 31.5])
    for summary in (tmp_path / "old").glob("*/summary.json"):
        record = json.loads(summary.read_text())
        del record["overrides"]
        summary.write_text(json.dumps(record))
    account = report([tmp_path / "old"], tmp_path / "out", precision=1.0)
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["overrides"].isna().all()
    again = report([tmp_path / "out" / "runs.csv"], tmp_path / "again", precision=1.0)
    for text in (account, again):
        command = next(line.strip() for line in text.splitlines() if line.strip().startswith("python -m"))
        words = shlex.split(command)[4:]
        assert "#" not in command and words[-1] == "seed=2,3,4,5,6"
        assert "trainer.max_iters=1564" in words and "arch=plain" in words and "normalization=imagenet" in words
        assert composed(*words[:-1], "seed=0") == composed(*made_with, "seed=0")


def test_a_verdict_of_one_seed_names_its_pair_and_says_it_cannot_tell():
    from multirun_analysis.comparisons import Context, verdict
    row = {"family": "confirmatory", "kind": "pair", "factor": "shortcut", "held": "depth=20", "n_a": 1, "n_b": 3,
           "lost_a": 0, "lost_b": 0, "paired": False, "diff": -1.5, "ci_low": math.nan, "ci_high": math.nan,
           "p_value": math.nan, "p_holm": math.nan, "test": "none: 1 seed on a side", "a": "A", "b": "B"}
    assert verdict(row, Context(0, 0.05, 1, 0.5)) == (
        "cannot say whether shortcut=A or shortcut=B is better at depth=20: 1 and 3 seeds (shortcut=A − shortcut=B = "
        "-1.50 points, but no spread seen on a side)")


@pytest.mark.slow
def test_figures_draw_the_completed_runs_their_caption_counts(tmp_path, monkeypatch):
    """A failed or running run's curve is not drawn beside a caption of completed runs; a runs.csv without its
    curves.csv says which figures it cannot draw."""
    root = tmp_path / "sweep"
    write_seeds(root, ["budget=quick", "arch=plain"], [30.0, 31.0])
    write_run(root / "failed", ["budget=quick", "arch=resnet", "seed=0"], 0.0, status="failed", iterations=(391, 782))
    figures = drawn_figures(monkeypatch)
    report([root], tmp_path / "out")
    fig6 = next(f for f in figures if "Figure 6" in f._suptitle.get_text())
    assert [ax.get_title() for ax in fig6.axes] == ["plain"]  # no panel for the failed resnet
    assert "From 2 completed runs" in fig6.texts[-1].get_text()
    (tmp_path / "out" / "curves.csv").unlink()
    account = report([tmp_path / "out" / "runs.csv"], tmp_path / "again")
    assert "fig6.png not drawn: no curves for these runs" in account and "depth.png" in account


@pytest.mark.slow
def test_table_csv_has_one_row_per_cell_with_its_interval(tmp_path):
    write_seeds(tmp_path / "sweep", ["budget=quick", "arch=plain"], [30.0, 31.0, 32.5, 30.5, 31.2])
    write_seeds(tmp_path / "sweep", ["budget=quick", "arch=resnet"], [28.0])
    report([tmp_path / "sweep"], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(table.columns[:12]) == ["depth", "arch", "n", "lost", "mean", "std", "ci_low", "ci_high",
                                        "ci_method", "min", "max", "seeds_needed"]
    plain, resnet = table.iloc[0], table.iloc[1]
    assert (plain.arch, plain.n, plain.ci_method, plain["min"], plain["max"]) == ("plain", 5, "t", 30.0, 32.5)
    assert plain.ci_low < plain["mean"] < plain.ci_high
    assert (resnet.n, resnet.ci_method) == (1, "none: 1 seed") and math.isnan(resnet.ci_low)
    # 5 seeds: the paper's own form, best (mean ± std), in the markdown table
    assert "| 30.00 (31.04 ± 0.94) |" in (tmp_path / "out" / "table.md").read_text()


def test_the_resolution_of_a_permutation_test_is_counted_not_assumed():
    assert stats.smallest_permutation_p(3, 10, paired=False) == pytest.approx(2 / math.comb(13, 3))
    assert stats.smallest_permutation_p(5, 5, paired=True) == pytest.approx(2 / 32)
    # beyond RESAMPLES permutations they are drawn at random: p never below 2 / (RESAMPLES + 1)
    assert stats.smallest_permutation_p(20, 20, paired=False) == pytest.approx(2 / (stats.RESAMPLES + 1))


def test_a_cell_of_one_seed_is_given_the_seeds_to_see_its_spread(tmp_path):
    write_seeds(tmp_path / "sweep", ["arch=plain", "budget=quick"], [30.0])
    account = report([tmp_path / "sweep"], tmp_path / "out")
    assert "python -m resnet_cifar.train -m arch=plain budget=quick seed=1,2" in account


def test_no_error_bar_runs_off_the_depth_figure(tmp_path, monkeypatch):
    write_seeds(tmp_path / "sweep", ["arch=plain", "budget=quick"], [30.0, 40.0])  # 35 ± 63.5: up to 98.5
    figures = drawn_figures(monkeypatch)
    report([tmp_path / "sweep"], tmp_path / "out")
    depth = next(f for f in figures if "by depth" in f._suptitle.get_text())
    top = 35.0 + 12.706204736174707 * statistics.stdev([30.0, 40.0]) / math.sqrt(2)  # t(0.975, 1) from a table
    assert depth.axes[0].get_ylim()[1] >= top - 1e-6  # it was 1.15 x the largest mean: 46


# -- calibration: the report's own comparisons over synthetic sweeps with a known truth ------------------------------
# (bench/calibrate_stats.py prints the same rates with more draws: the README's numbers)

CALIBRATION_DRAWS = 300


@pytest.mark.slow
@pytest.mark.parametrize("design", ["5 paired", "10 paired", "5 paired lognormal", "unequal spread"])
def test_false_claims_stay_at_or_below_five_percent_family_wise(design):
    from multirun_analysis import calibration as c

    sweeps = {"5 paired": (c.paired_grid(5), c.FIG6), "10 paired": (c.paired_grid(10), c.FIG6),
              "5 paired lognormal": (c.paired_grid(5, noise="lognormal"), c.FIG6),
              "unequal spread": (c.unequal_spread, c.NETS)}
    rate = c.null_rate(*sweeps[design], CALIBRATION_DRAWS, seed=11)
    assert rate.share <= 0.05 + binomial_tolerance(0.05, CALIBRATION_DRAWS), rate.text()


@pytest.mark.slow
def test_looking_again_with_the_looks_declared_keeps_false_claims_at_five_percent():
    from multirun_analysis import calibration as c

    rate = c.sequential_rate(6, 13, 120, seed=12, looks=8)
    assert rate.share <= 0.05 + binomial_tolerance(0.05, 120), rate.text()


@pytest.mark.slow
def test_power_coverage_and_planned_seeds_deliver_what_they_promise():
    from multirun_analysis import calibration as c

    assert c.power(5, 10.0, 60, seed=13).share == 1.0  # 5 paired seeds always show 10 points at sd 1
    # the rates docs/guide/analysis.md quotes (bench/calibrate_stats.py, 1000 draws), within binomial tolerance
    for n, effect, quoted in ((5, 1.5, 0.183), (10, 1.5, 0.650)):  # the old test: 0/60 at 5 seeds
        found = c.power(n, effect, 300, seed=13)
        assert abs(found.share - quoted) <= binomial_tolerance(quoted, 300), (n, found.text())
    skewed = c.coverage(3, 300, seed=4, skewed=True)  # the t-interval's weak side, as the guide says
    assert abs(skewed.share - 0.912) <= binomial_tolerance(0.912, 300), skewed.text()
    effect, delivered = c.detectable_power(8, 1.0, 300, seed=17)  # with the permutation gate: 68.5%
    assert delivered.share >= 0.8 - binomial_tolerance(0.8, 300), (effect, delivered.text())
    n, delivered = c.planned_power(1.0, 1.0, 300, seed=14)  # through the whole report, Holm and all
    assert n == 26 and delivered.share >= 0.8 - binomial_tolerance(0.8, 300), delivered.text()
    covered = c.difference_coverage(300, seed=15)
    assert abs(covered.share - 0.95) <= binomial_tolerance(0.95, 300), covered.text()
    false_match = c.equivalence_at_margin(300, seed=16)
    assert false_match.share <= 0.05 + binomial_tolerance(0.05, 300), false_match.text()


def test_a_question_these_runs_cannot_answer_is_refused_before_a_file_is_written(tmp_path):
    """Asked on the command line: a misspelt factor, a trend of names, a pair of a key or a setting no run has
    is one line and no --out folder; declared by a preset (these runs may be a part of the sweep) it is said."""
    from multirun_analysis.report import ReportError

    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=20"], [40.0, 41.0, 40.5])
    write_seeds(root, ["arch=resnet", "depth=20"], [35.0, 35.5, 36.0])
    out = tmp_path / "out"
    for asked, why in (({"question": "compare=archh"}, "compare=archh: archh is not a factor of these runs "
                                                       "(they vary in: depth, arch)"),
                       ({"question": "trend=arch"}, "trend=arch: its values are not numbers, so it has no trend"),
                       ({"question": "trend=depth"}, "trend=depth: depth has one value in these runs"),
                       ({"pairs": ["arch=plain,widht=3 vs arch=resnet"]}, "--pair: widht is not a key of these runs"),
                       ({"pairs": ["arch=plain,depth=56 vs arch=resnet"]},
                        "--pair: no finished run has arch=plain, depth=56")):
        with pytest.raises(ReportError) as refused:
            report([root], out, **asked)
        assert why in str(refused.value) and not out.exists(), (asked, str(refused.value))
    preset = tmp_path / "preset"
    write_seeds(preset, ["+experiment=fig6", "arch=plain", "depth=20"], [40.0, 41.0, 40.5])
    write_seeds(preset, ["+experiment=fig6", "arch=resnet", "depth=20"], [35.0, 35.5, 36.0])
    account = report([preset], tmp_path / "part")
    assert "the question's trend=depth: depth has one value in these runs; nothing of it was tested" in account


def test_a_trend_runs_from_the_first_level_it_was_fitted_to_to_the_last(tmp_path):
    """A depth with one seed has no spread of its own and is left out of the slope: the trend's ends are the
    levels it was fitted to, not that depth."""
    root = tmp_path / "sweep"
    write_seeds(root, ["arch=plain", "depth=20"], [40.0, 41.0, 40.5])
    write_seeds(root, ["arch=plain", "depth=32"], [45.0, 46.0, 45.5])
    write_seeds(root, ["arch=plain", "depth=56"], [70.0])
    report([root], tmp_path / "out", question="trend=depth")
    trend = pd.read_csv(tmp_path / "out" / "comparisons.csv").query("kind == 'trend'").iloc[0]
    assert (trend.a, trend.b, trend.n_a, trend.n_b) == (20, 32, 3, 3)
    assert trend["diff"] == pytest.approx(5.0)
