"""Seaborn figures of the paper and of the seed README's comparisons, readable at README width.

Curves of several seeds are drawn as their mean with a band: the 95% interval
of the mean, the table's own (stats.mean_interval; none for one seed), said on
each figure. A figure holds everything else equal: one line per setting, and a
panel per setting of the factors it does not draw (never several settings
pooled into one line). Numbers are ordered as numbers. Errors are in percent,
iterations are SGD steps. Each figure carries the report's caption: budget,
data and seeds.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from resnet_cifar.filesystem import safe_name, write_figure

from .collect import ARCH, finished, in_order
from .stats import mean_interval

# File names for the factors the seed README compared; others use their key.
FACTOR_FILES = {"normalization.name": "normalization", "data.batch_size": "batch", "shortcut": "shortcut",
                "augment.name": "augment", "data.pipeline": "pipeline", "optimizer.lr": "lr", "data.name": "dataset",
                "trainer.nproc_per_node": "processes", "trainer.batch_semantics": "batch_semantics",
                "trainer.sync_bn": "sync_bn"}
METRIC_LABELS = {"train_error": "train", "test_error": "test"}
WIDTH_IN = 10  # inches: a README column at 100 dpi
BAND = "lines: mean over seeds, band: 95% interval of the mean"
SETTING = "setting"  # the column naming a panel: the values of the factors a figure does not draw
PANEL_WRAP = 3


def interval_of_mean(values) -> tuple[float, float]:
    """seaborn's errorbar: the table's 95% interval of the mean (NaN, no band, for one seed)."""
    found = mean_interval(values)
    return found.low, found.high


def interval_of_spread(values) -> tuple[float, float]:
    """interval_of_mean of a standard deviation (Figure 7's responses), never below 0."""
    low, high = interval_of_mean(values)
    return max(low, 0.0), high


def interval_of_error(values) -> tuple[float, float]:
    """interval_of_mean of errors in percent, within their range [0, 100], as in the table."""
    low, high = interval_of_mean(values)
    return max(low, 0.0), min(high, 100.0)


def band_note(counts: pd.Series) -> str:
    """What the band is, and where there is none (a line of one seed)."""
    return BAND + ("; 1 seed: no interval" if (counts <= 1).any() else "")


def with_setting(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A SETTING column: 'key=value, ...' of `keys` (the factors a figure holds equal in a panel)."""
    if not keys:
        return frame.assign(**{SETTING: ""})
    parts = [f"{k.removesuffix('.name')}=" + frame[k].astype(str) for k in keys]
    text = parts[0]
    for part in parts[1:]:
        text = text + ", " + part
    return frame.assign(**{SETTING: text})


def _points_per_line(data: pd.DataFrame, line: list[str]) -> int:
    return int(data.groupby(line, dropna=False)["iteration"].nunique().min()) if len(data) else 0


def add_caption(figure, caption: str) -> None:
    """The report's basis (budget, data, seeds) under a figure."""
    if caption:
        figure.text(0.5, -0.02, caption, ha="center", va="top", fontsize=8, wrap=True)


def _with_factors(curves: pd.DataFrame, runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return curves.merge(runs[["run", *columns]], on="run")


def _error_ylim(values: pd.Series) -> tuple[float, float]:
    """From 0 to a little above the late-training errors, so that early 90% does not flatten the rest."""
    return 0.0, min(100.0, max(5.0, 1.5 * values.quantile(0.5)))


def figure6_panels(runs: pd.DataFrame) -> list[str]:
    """Figure 6's panels: one per net the runs trained (every arch name, in order), never a fixed list."""
    return sorted(runs[ARCH].dropna().astype(str).unique())


def figure6(curves: pd.DataFrame, runs: pd.DataFrame, factors: list[str], path: Path, caption: str = "") -> Path:
    """The paper's Figure 6: error vs iterations, a panel per net (plain | resnet | yours) and setting of the
    other factors, colour by depth, test bold, train dashed; a point per evaluation where a line has one."""
    data = _with_factors(curves[curves["metric"].isin(METRIC_LABELS)], runs, [ARCH, "depth", *factors])
    data = with_setting(data, [ARCH, *factors]) if factors else data.assign(**{SETTING: data[ARCH].astype(str)})
    depths = in_order(data["depth"])
    counts = data.groupby([SETTING, "depth", "metric", "iteration"])["run"].nunique()
    data = data.assign(error=data["metric"].map(METRIC_LABELS), depth=data["depth"].astype(str))
    panels = in_order(data[SETTING]) if factors else [p for p in figure6_panels(runs) if p in set(data[SETTING])]
    marker = {"marker": "o"} if _points_per_line(data, [SETTING, "depth", "metric", "run"]) < 2 else {}
    grid = sns.relplot(data=data, x="iteration", y="value", hue="depth", hue_order=[str(d) for d in depths],
                       style="error", size="error",
                       sizes={"test": 2.2, "train": 0.9}, dashes={"test": "", "train": (4, 2)},
                       col=SETTING, col_order=panels, col_wrap=PANEL_WRAP if len(panels) > PANEL_WRAP else None,
                       kind="line", errorbar=interval_of_error, palette="deep", height=4, aspect=1.2,
                       facet_kws={"sharey": True}, **marker)
    grid.set_axis_labels("iteration", "error (%)")
    grid.set_titles("{col_name}")
    grid.set(ylim=_error_ylim(data["value"]))
    grid.figure.suptitle(f"Training (dashed) and test (bold) error, as the paper's Figure 6 ({band_note(counts)})",
                         y=1.02)
    add_caption(grid.figure, caption)
    write_figure(grid, path, dpi=100, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def highest_bar(done: pd.DataFrame) -> float:
    """The top of the highest error bar of depth.png, so that no bar runs off the axes."""
    tops = [interval_of_error(group["test_error"].to_numpy())[1]
            for _, group in done.groupby([SETTING, ARCH, "depth"], dropna=False)]
    return max([t for t in tops if not pd.isna(t)], default=0.0)


def depth_plot(runs: pd.DataFrame, factors: list[str], path: Path, caption: str = "") -> Path:
    """Final test error vs depth, a line per net, error bars the 95% interval of the mean over seeds, a
    panel per setting of the other factors (the degradation problem); the y axis starts at 0 so that a few
    tenths of a percent do not look like a cliff."""
    done = with_setting(runs[finished(runs)], factors)
    counts = done.groupby([SETTING, ARCH, "depth"])["run"].nunique()
    grid = sns.relplot(data=done, x="depth", y="test_error", hue=ARCH, hue_order=figure6_panels(done), marker="o",
                       kind="line", errorbar=interval_of_error, err_style="bars", col=SETTING,
                       col_order=in_order(done[SETTING]), col_wrap=PANEL_WRAP if done[SETTING].nunique() > PANEL_WRAP
                       else None, height=4, aspect=1.5 if not factors else 1.2)
    grid.set(xticks=in_order(done["depth"]), xlabel="depth (layers)", ylabel="final test error (%)",
             ylim=(0, min(100.0, max(5.0, 1.15 * float(done["test_error"].max()), highest_bar(done)))))
    grid.set_titles("{col_name}" if factors else "")
    grid.figure.suptitle(f"Final test error by depth (mean over seeds, bars: 95% interval of the mean"
                         f"{'; 1 seed: no interval' if (counts <= 1).any() else ''})", y=1.02)
    add_caption(grid.figure, caption)
    write_figure(grid, path, dpi=100, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def factor_plot(curves: pd.DataFrame, runs: pd.DataFrame, factor: str, keys: list[str], path: Path,
                caption: str = "") -> Path:
    """Test (bold) and training (dashed) error curves, a colour per value of the factor (numbers in order),
    a panel per setting of every other key that varies (depth, net, other factors): a factor that changes
    how the net fits its training data (augmentation, the input pipeline) shows in the gap between the two."""
    others = [k for k in keys if k != factor and runs[k].nunique() > 1]
    data = _with_factors(curves[curves["metric"].isin(METRIC_LABELS)], runs, [factor, *others])
    data = with_setting(data, others)
    counts = data.groupby([SETTING, factor, "metric", "iteration"])["run"].nunique()
    order = [str(v) for v in in_order(data[factor])]
    data = data.assign(error=data["metric"].map(METRIC_LABELS), **{factor: data[factor].astype(str)})
    panels = in_order(data[SETTING])
    marker = {"marker": "o"} if _points_per_line(data, [SETTING, factor, "metric", "run"]) < 2 else {}
    grid = sns.relplot(data=data, x="iteration", y="value", hue=factor, hue_order=order, style="error", size="error",
                       sizes={"test": 2.2, "train": 0.9}, dashes={"test": "", "train": (4, 2)},
                       kind="line", errorbar=interval_of_error, palette="deep",
                       col=SETTING if others else None, col_order=panels if others else None,
                       col_wrap=PANEL_WRAP if len(panels) > PANEL_WRAP else None, height=3.5, aspect=1.3, **marker)
    grid.set_axis_labels("iteration", "error (%)")
    grid.set_titles("{col_name}" if others else "")
    grid.set(ylim=_error_ylim(data["value"]))
    held = f"; a panel per setting of {', '.join(o.removesuffix('.name') for o in others)}" if others else ""
    grid.figure.suptitle(f"Test (bold) and training (dashed) error by {factor} ({band_note(counts)}{held})", y=1.02)
    add_caption(grid.figure, caption)
    write_figure(grid, path, dpi=100, bbox_inches="tight")
    plt.close(grid.figure)
    return path


OWN_FIGURES = ("fig6", "depth", "fig7")  # the file names a report gives its other figures


def factor_files(factors: list[str]) -> dict[str, str]:
    """Each factor's figure file: a known name (normalization.png), else one made from its key that stays in
    the report's folder whatever the key holds (no separator, no leading dot, bounded, unique:
    filesystem.safe_name); the figure's title keeps the key as it is."""
    taken = set(OWN_FIGURES) | set(FACTOR_FILES.values())
    return {factor: (FACTOR_FILES.get(factor) or safe_name(factor.replace(".", "_"), taken=taken)) + ".png"
            for factor in factors}


def drawn_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a figure draws: the completed ones, which the caption counts (table.basis); only where none
    completed, the unfinished ones, and the caption then says so."""
    completed = runs[finished(runs)]
    return completed if len(completed) else runs


# Recorded values are shown as they are: a `$` in a value is text, never mathtext to parse (or fail on).
LITERAL_TEXT = {"text.parse_math": False}


def draw_all(curves: pd.DataFrame, runs: pd.DataFrame, keys: list[str], factors: list[str], out: Path,
             caption: str = "") -> tuple[list[Path], list[str]]:
    """(every figure the runs support, a line for each figure that could not be drawn and why): the curve
    figures need curves of the drawn runs, depth.png completed runs."""
    with plt.rc_context(LITERAL_TEXT):
        return _draw_all(curves, runs, keys, factors, out, caption)


def _draw_all(curves: pd.DataFrame, runs: pd.DataFrame, keys: list[str], factors: list[str], out: Path,
              caption: str) -> tuple[list[Path], list[str]]:
    runs = drawn_runs(runs)
    curves = curves[curves["run"].isin(runs["run"])]
    files = factor_files(factors)
    curve_figures = ["fig6.png", *files.values()]
    if not len(curves):
        return ([depth_plot(runs, factors, out / "depth.png", caption)] if finished(runs).any()
                else []), [f"{', '.join(curve_figures)} not drawn: no curves for these runs (an earlier report's "
                           f"runs.csv without its curves.csv beside it, or no evaluation yet)"]
    drawn = [figure6(curves, runs, factors, out / "fig6.png", caption)]
    if finished(runs).any():
        drawn.append(depth_plot(runs, factors, out / "depth.png", caption))
    drawn += [factor_plot(curves, runs, factor, keys, out / files[factor], caption) for factor in factors]
    return drawn, []
