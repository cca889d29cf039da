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

from multirun_analysis import stats
from multirun_analysis.report import report

DRAWS = 400


def binomial_tolerance(p: float, draws: int) -> float:
    """Three standard deviations of a share of `draws` that is p in truth."""
    return 3 * math.sqrt(p * (1 - p) / draws)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_interval_of_a_mean_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(n)
    draws = rng.normal(30.0, 1.5, size=(DRAWS, n))
    found = stats.mean_intervals(list(draws))
    assert {i.method for i in found} == {stats.T_METHOD}
    covered = np.mean([i.low <= 30.0 <= i.high for i in found])
    assert abs(covered - 0.95) <= binomial_tolerance(0.95, DRAWS), covered


def test_from_thirty_seeds_the_bootstrap_covers_too():
    rng = np.random.default_rng(1)
    draws = rng.normal(7.0, 0.3, size=(200, 60))
    found = stats.mean_intervals(list(draws))
    assert {i.method for i in found} == {stats.BOOTSTRAP_METHOD}
    covered = np.mean([i.low <= 7.0 <= i.high for i in found])
    assert abs(covered - 0.95) <= binomial_tolerance(0.95, 200), covered


def test_one_seed_or_identical_values_have_no_interval_never_a_fake_one():
    assert stats.mean_interval([7.0]).method == "none: 1 seed" and math.isnan(stats.mean_interval([7.0]).low)
    assert stats.mean_interval([7.0, 7.0, 7.0]).method == "none: all 3 values identical"
    two = stats.mean_interval([7.0, 8.0])  # honest and wide: 7.5 ± 12.71 * 0.5
    assert two.method == "t" and two.low == pytest.approx(7.5 - 12.7062 * 0.5, abs=1e-3)
    assert math.isnan(stats.seeds_for_precision([7.0], 0.3))
    result = stats.compare([7.0], [9.0], paired=False)
    assert math.isnan(result.p_value) and result.interval.method.startswith("none") and result.diff == -2.0


@pytest.mark.slow
def test_the_permutation_test_finds_a_large_difference_and_rarely_one_that_is_not_there():
    rng = np.random.default_rng(2)
    large = [stats.compare(rng.normal(10, 1, 6), rng.normal(13, 1, 6), paired=False) for _ in range(100)]
    assert np.mean([r.p_value < 0.05 for r in large]) >= 0.95
    assert all(r.diff < 0 for r in large) and np.mean([r.prob_a_better for r in large]) > 0.95
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
    assert unpaired.p_value > 0.3
    assert paired.p_value == pytest.approx(2 / 2 ** 8)  # exact: all 256 sign flips, only the observed two as extreme


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, float("nan"), 0.03, 0.5])
    # 4 tested: 0.01 * 4, max(0.03 * 3, 0.04), max(0.04 * 2, 0.09), max(0.5, 0.09); NaN untouched
    assert adjusted[[0, 3, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5]) and math.isnan(adjusted[2])


def test_seeds_needed_follow_from_the_spread():
    assert stats.seeds_for_precision([10.0, 11.0, 12.0], 0.3) == 46  # s = 1: t(n-1) / sqrt(n) <= 0.3 from n = 46
    assert stats.seeds_for_precision([10.0, 10.1, 10.2], 0.3) == 3  # already within ±0.3 (2.48 * 0.1 / 1.73)
    # a 1-point difference at s = 1: about 17 seeds a side for 80% power at 5% (one test)
    assert 16 <= stats.seeds_to_detect([10.0, 11.0, 12.0], [11.0, 12.0, 13.0], False, tests=1) <= 18
    # a permutation test of 2 seeds a side can never reach 0.05, so never fewer than 4 (2 / C(8, 4) = 0.029)
    assert stats.seeds_to_detect([10.0, 10.1], [20.0, 20.1], False, tests=1) == 4


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
    assert list(found.columns) == ["factor", "a", "b", "held", "n_a", "n_b", "paired", "diff", "ci_low", "ci_high",
                                   "ci_method", "p_value", "p_holm", "prob_a_better", "seeds_needed", "verdict"]
    rows = {(r.factor, r.held): r for r in found.itertuples()}
    # arch at each depth, depth for each arch: 4 comparisons, all of them tested
    assert set(rows) == {("arch", "depth=20"), ("arch", "depth=56"), ("depth", "arch=plain"), ("depth", "arch=resnet")}
    at56 = rows[("arch", "depth=56")]
    assert (at56.a, at56.b, at56.n_a, at56.n_b, bool(at56.paired)) == ("plain", "resnet", 5, 5, True)
    assert at56.diff == pytest.approx(np.mean(plain56) - np.mean(resnet56))
    assert at56.p_value == pytest.approx(2 / 2 ** 5) and at56.p_holm == pytest.approx(min(1, 4 * 2 / 2 ** 5))
    # 5 paired seeds: the smallest p is 1/16, and 4 tests at once: not shown, though the gap is 24 points
    assert at56.verdict.startswith("no difference shown between plain and resnet at depth=56 with 5 seeds each, "
                                   "paired by seed (plain − resnet: +2")
    # a 24-point gap whose interval excludes 0 is not "no difference": the verdict says what the test lacks
    assert ("; the interval excludes 0, but the permutation test does not show the difference (p = 0.25 after Holm "
            "over 4 tests)") in at56.verdict
    assert at56.verdict.endswith("a permutation test cannot reach p < 0.05 (its smallest p is 0.062)")
    assert at56.seeds_needed == 8  # 2 / 2^8 <= 0.05 / 4
    at20 = rows[("arch", "depth=20")]
    assert at20.verdict.startswith("no difference shown between plain and resnet at depth=20 with 2 seeds each")
    assert "interval excludes 0" not in at20.verdict
    by_depth = rows[("depth", "arch=plain")]  # any factor but the net is named with its key
    assert by_depth.verdict.startswith("no difference shown between depth=20 and depth=56 at arch=plain")
    md = (tmp_path / "out" / "comparisons.md").read_text()
    assert md.startswith("4 comparisons, 4 of them tested") and "Holm" in md
    # the commands that add the seeds, into the sweep folder the runs lie in; a long run of seeds as a range
    assert "arch=resnet depth=20 'seed=range(2," in account  # quoted for the shell
    assert f"python -m resnet_cifar.train -m arch=plain depth=56 seed=5,6,7 hydra.sweep.dir={root}" in account


@pytest.mark.slow
def test_a_shown_difference_says_by_how_much_and_with_how_many_seeds(tmp_path):
    root = tmp_path / "sweep"
    plain = [70.0, 70.4, 69.6, 70.2, 69.8, 70.1, 69.9, 70.3]
    resnet = [46.0, 46.5, 45.6, 46.1, 45.8, 46.2, 45.9, 46.3]
    write_seeds(root, ["arch=plain", "depth=56"], plain)
    write_seeds(root, ["arch=resnet", "depth=56"], resnet)
    report([root], tmp_path / "out")
    row = pd.read_csv(tmp_path / "out" / "comparisons.csv").iloc[0]
    assert row.p_holm == pytest.approx(2 / 2 ** 8)  # one comparison: no correction
    differences = np.subtract(plain, resnet)  # 24, -0.1, 0, +0.1, 0, -0.1, 0, 0: the t-interval by hand
    half = 2.364624251592785 * differences.std(ddof=1) / math.sqrt(8)  # t(0.975, 7) from a table: 2.365
    assert row.verdict == (f"resnet better than plain at depth=56 by {differences.mean():.2f} points "
                           f"[{differences.mean() - half:.2f}, {differences.mean() + half:.2f}] "
                           "(p = 0.0078 after Holm, 8 seeds each, paired by seed)")


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
    config = composed_spec(*words[:-1], f"seed={seeds[0]}").config
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
                                                    f"data.augment={augment}"], 30.0 + batch / 100, iterations=(1564,))
    figures = drawn_figures(monkeypatch)
    report([root], tmp_path / "out")
    by_title = {f._suptitle.get_text(): f for f in figures}
    batch = next(f for t, f in by_title.items() if "by data.batch_size" in t)
    assert [t for t in legend_texts(batch) if t.isdigit()] == ["20", "100", "200"]
    assert sorted(ax.get_title() for ax in batch.axes) == ["data.augment=none", "data.augment=random"]
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
    made_with = ["budget=quick", "arch=plain", "normalization=imagenet", "data.augment=none", "depth=32"]
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
    from multirun_analysis.comparisons import verdict
    row = {"factor": "shortcut", "held": "depth=20", "n_a": 1, "n_b": 3, "paired": False, "diff": -1.5,
           "ci_low": math.nan, "ci_high": math.nan, "p_holm": math.nan, "a": "A", "b": "B"}
    assert verdict(row, tests=0) == ("cannot say whether shortcut=A or shortcut=B is better at depth=20: 1 and 3 "
                                     "seeds (shortcut=A − shortcut=B = -1.50 points, but no spread seen on a side)")


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
    assert list(table.columns[:11]) == ["depth", "arch", "n", "mean", "std", "ci_low", "ci_high", "ci_method", "min",
                                        "max", "seeds_needed"]
    plain, resnet = table.iloc[0], table.iloc[1]
    assert (plain.arch, plain.n, plain.ci_method, plain["min"], plain["max"]) == ("plain", 5, "t", 30.0, 32.5)
    assert plain.ci_low < plain["mean"] < plain.ci_high
    assert (resnet.n, resnet.ci_method) == (1, "none: 1 seed") and math.isnan(resnet.ci_low)
    # 5 seeds: the paper's own form, best (mean ± std), in the markdown table
    assert "| 30.00 (31.04 ± 0.94) |" in (tmp_path / "out" / "table.md").read_text()


def test_seeds_needed_survive_scipys_far_tails():
    """A large difference at a small spread: the noncentral t's far tail is NaN in scipy, not a lack of power
    (plain-56 against plain-20 of the README's runs: 8 seeds, the permutation test's floor at 0.05 / 4)."""
    assert stats.seeds_to_detect([35.21, 33.59], [65.95, 72.63], paired=True, tests=4) == 8


def test_the_resolution_of_a_permutation_test_is_counted_not_assumed():
    assert stats.smallest_permutation_p(3, 10, paired=False) == pytest.approx(2 / math.comb(13, 3))
    assert stats.smallest_permutation_p(5, 5, paired=True) == pytest.approx(2 / 32)
    # beyond RESAMPLES permutations they are drawn at random: p never below 2 / (RESAMPLES + 1)
    assert stats.smallest_permutation_p(20, 20, paired=False) == pytest.approx(2 / (stats.RESAMPLES + 1))
    # 0.05 / 300 tests lies below that: no number of seeds can show it with this test
    assert stats.seeds_to_detect([10.0, 11.0, 12.0], [20.0, 21.0, 22.0], False, tests=300) == math.inf


def test_a_shown_difference_whose_interval_includes_zero_says_so():
    from multirun_analysis.comparisons import verdict
    row = {"factor": "arch", "held": "depth=20", "n_a": 6, "n_b": 6, "paired": False, "diff": -0.45, "ci_low": -1.0, "ci_high": 0.1,
           "p_holm": 0.04, "a": "resnet", "b": "plain"}
    assert verdict(row, tests=1) == ("resnet better than plain at depth=20 by 0.45 points [-0.10, 1.00] "
                                     "(p = 0.04 after Holm, 6 seeds each; the interval includes no difference)")


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
