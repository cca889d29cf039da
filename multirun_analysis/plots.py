"""Seaborn figures of the paper and of the seed README's comparisons, readable at README width.

Curves of several seeds are drawn as their mean with a band (± one standard
deviation, said on each figure); errors are in percent, iterations are SGD
steps. Each figure carries the report's caption: budget, data and seeds.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

from .collect import ARCH

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

# File names for the factors the seed README compared; others use their key.
FACTOR_FILES = {"normalization.name": "normalization", "data.batch_size": "batch", "shortcut": "shortcut",
                "data.augment": "augment", "data.pipeline": "pipeline", "optimizer.lr": "lr", "data.name": "dataset",
                "trainer.nproc_per_node": "processes", "trainer.batch_semantics": "batch_semantics",
                "trainer.sync_bn": "sync_bn"}
METRIC_LABELS = {"train_error": "train", "test_error": "test"}
WIDTH_IN = 10  # inches: a README column at 100 dpi
BAND = "lines: mean over seeds, band ± 1 std"


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


def figure6(curves: pd.DataFrame, runs: pd.DataFrame, path: Path, caption: str = "") -> Path:
    """The paper's Figure 6: error vs iterations, a panel per net (plain | resnet | yours), colour by depth,
    test bold, train dashed."""
    data = _with_factors(curves[curves["metric"].isin(METRIC_LABELS)], runs, [ARCH, "depth"])
    depths = sorted(data["depth"].unique())
    data = data.assign(error=data["metric"].map(METRIC_LABELS), depth=data["depth"].astype(str))
    panels = figure6_panels(runs)
    grid = sns.relplot(data=data, x="iteration", y="value", hue="depth", hue_order=[str(d) for d in depths],
                       style="error", size="error",
                       sizes={"test": 2.2, "train": 0.9}, dashes={"test": "", "train": (4, 2)},
                       col=ARCH, col_order=panels, col_wrap=3 if len(panels) > 3 else None,
                       kind="line", errorbar="sd", palette="deep", height=4, aspect=1.2,
                       facet_kws={"sharey": True})
    grid.set_axis_labels("iteration", "error (%)")
    grid.set_titles("{col_name}")
    grid.set(ylim=_error_ylim(data["value"]))
    grid.figure.suptitle(f"Training (dashed) and test (bold) error, as the paper's Figure 6 ({BAND})", y=1.02)
    add_caption(grid.figure, caption)
    grid.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def depth_plot(runs: pd.DataFrame, path: Path, caption: str = "") -> Path:
    """Final test error vs depth, a line per net, error bars over seeds (the degradation problem); the y axis
    starts at 0 so that a few tenths of a percent do not look like a cliff."""
    done = runs[runs["status"] == "completed"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN * 0.6, 4))
    sns.lineplot(data=done, x="depth", y="test_error", hue=ARCH, hue_order=figure6_panels(done), marker="o",
                 errorbar="sd", err_style="bars", ax=ax)
    ax.set_xticks(sorted(done["depth"].unique()))
    ax.set(xlabel="depth (layers)", ylabel="final test error (%)",
           title="Final test error by depth (mean over seeds, bars ± 1 std)")
    ax.set_ylim(0, max(5.0, 1.15 * float((done["test_error"]).max())))
    add_caption(fig, caption)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def factor_plot(curves: pd.DataFrame, runs: pd.DataFrame, factor: str, path: Path, caption: str = "") -> Path:
    """Test (bold) and training (dashed) error curves coloured by the factor's value (a panel per depth and
    model when they vary): a factor that changes how the net fits its training data (augmentation, the
    input pipeline) shows in the gap between the two."""
    panels = [c for c in ("depth", ARCH) if runs[c].nunique() > 1]
    data = _with_factors(curves[curves["metric"].isin(METRIC_LABELS)], runs, [factor, *panels])
    data = data.assign(error=data["metric"].map(METRIC_LABELS), **{factor: data[factor].astype(str)})
    grid = sns.relplot(data=data, x="iteration", y="value", hue=factor, style="error", size="error",
                       sizes={"test": 2.2, "train": 0.9}, dashes={"test": "", "train": (4, 2)},
                       kind="line", errorbar="sd", palette="deep",
                       col=panels[0] if panels else None, row=panels[1] if len(panels) > 1 else None,
                       height=3.5, aspect=1.3)
    grid.set_axis_labels("iteration", "error (%)")
    grid.set(ylim=_error_ylim(data["value"]))
    grid.figure.suptitle(f"Test (bold) and training (dashed) error by {factor} ({BAND})", y=1.02)
    add_caption(grid.figure, caption)
    grid.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def factor_file(factor: str) -> str:
    return FACTOR_FILES.get(factor, factor.replace(".", "_")) + ".png"


def draw_all(curves: pd.DataFrame, runs: pd.DataFrame, factors: list[str], out: Path, caption: str = "") -> list[Path]:
    """Every figure the runs support; a figure needs curves (or completed runs for depth.png)."""
    drawn = []
    if len(curves):
        drawn.append(figure6(curves, runs, out / "fig6.png", caption))
    if (runs["status"] == "completed").any():
        drawn.append(depth_plot(runs, out / "depth.png", caption))
    for factor in factors:
        if len(curves):
            drawn.append(factor_plot(curves, runs, factor, out / factor_file(factor), caption))
    return drawn
