"""Completed runs -> the accuracy table: depth x model (x every other factor that varies), over seeds.

A row is compared with a published number only when its runs used that paper's recipe and budget in full
(the default config of conf/, with the conditions the paper states: references.csv), so short runs are
never set against a paper. Models are whatever arch names the runs have, never a fixed list.
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from resnet_cifar.contract import Status
from resnet_cifar.config import (
    NAME_KEY,
    NOT_FACTORS,
    PLUGIN_GROUPS,
    SEED_KEYS,
    is_under,
)

from resnet_cifar.hydra_setup import compose_run
from resnet_cifar.run_spec import composed_run_config

from .collect import ARCH, FLOATS, finished, flatten_config, order_key
from .escape import inline
from .stats import equivalence, mean_intervals, seeds_for_precision
from resnet_cifar.filesystem import write_frame

REFERENCES_FILE = "references.csv"  # published CIFAR-10 test errors: arch, depth, conditions, error, source

ROW_KEYS = ["depth", ARCH]
CELL_COLUMNS = ["n", "lost", "mean", "std", "ci_low", "ci_high", "ci_method", "min", "max", "seeds_needed"]
DEFAULT_PRECISION = 0.3  # points of test error: the distance at which a reproduction matches Table 6
DEFAULT_MARGIN = 0.3  # points: within this of a published number, a cell "matches" it (equivalence, --margin)
PAPER_FORM_SEEDS = 5  # the paper gave "best (mean ± std)" over 5 runs (ResNet-110)
INTERVAL_NOTE = "Student's t at every number of seeds; none for 1 seed or identical values"
# The paper trained on two GPUs with per-GPU BN; one process or several both count as its recipe. The net
# (arch) is the reference's own key, with its conditions.
NOT_RECIPE = (*NOT_FACTORS, "depth", "arch", "trainer.nproc_per_node", "trainer.nnodes")


def paper_recipe() -> dict:
    """The default config of conf/ (the paper's recipe and full budget), flattened."""
    return flatten_config(composed_run_config(compose_run()))


def references() -> pd.DataFrame:
    """The published numbers the table compares with (references.csv), conditions as {key: value}."""
    with resources.files("multirun_analysis").joinpath(REFERENCES_FILE).open() as f:
        table = pd.read_csv(f, keep_default_na=False)
    table["conditions"] = table["conditions"].map(
        lambda text: dict(part.split("=", 1) for part in text.split(";")) if text else {})
    return table


def with_defaults(runs: pd.DataFrame, recipe: dict) -> pd.DataFrame:
    """A config key that an older run folder lacks takes its default in conf/: keys are added with
    defaults that keep the earlier behaviour (trainer.precision arrived as fp32, the only one before)."""
    runs = runs.copy()
    for key, value in recipe.items():
        runs[key] = runs[key].where(runs[key].notna(), value) if key in runs else value
    return runs


def own_keys_determined(runs: pd.DataFrame, column: str) -> bool:
    """Whether a plug-in's own key (arch.bottleneck, normalization.epsilon) takes one value per option of its
    group: then it is part of what the option is, not a factor of its own."""
    group = column.split(".")[0]
    name = f"{group}.{NAME_KEY}"
    if group not in PLUGIN_GROUPS or column == name or name not in runs:
        return False
    return bool((runs.groupby(name, dropna=False)[column].agg(lambda v: v.astype(str).nunique()) <= 1).all())


def varying_factors(runs: pd.DataFrame, config_columns: list[str]) -> list[str]:
    """Config keys (other than depth, the net and execution details) whose value differs between runs."""
    return [c for c in config_columns
            if not is_under(c, NOT_FACTORS) and c not in ROW_KEYS and c in runs
            and runs[c].astype(str).nunique() > 1 and not own_keys_determined(runs, c)]


def same_value(value, wanted) -> bool:
    """A config value against a reference's condition (text): numbers as numbers, words case-blind."""
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value).lower() == str(wanted).lower()


def reference_errors(runs: pd.DataFrame, recipe: dict) -> pd.Series:
    """Per run: the published error of its net, depth and conditions, where every other key that defines
    the experiment has the recipe's value (NaN elsewhere)."""
    found = pd.Series(float("nan"), index=runs.index)
    for _, ref in references().iterrows():
        conditions = ref["conditions"]
        ok = (runs[ARCH].astype(str) == ref["arch"]) & runs["depth"].map(lambda v, d=ref["depth"]: same_value(v, d))
        for key, value in recipe.items():
            if is_under(key, NOT_RECIPE) or key in conditions:
                continue
            ok &= runs[key].map(lambda v, value=value: same_value(v, value)) if key in runs else False
        for key, value in conditions.items():
            ok &= runs[key].map(lambda v, value=value: same_value(v, value)) if key in runs else False
        found[ok] = float(ref["error"])
    return found


def reference_sources(table: pd.DataFrame) -> list[str]:
    """The sources of the published numbers a table shows."""
    refs = references()
    shown = table.dropna(subset=["paper_error"])
    sources = []
    for _, row in shown.iterrows():
        match = refs[(refs["arch"] == row[ARCH]) & (refs["depth"] == row["depth"])
                     & (refs["error"] == row["paper_error"])]
        for source in match["source"]:
            line = f"{row[ARCH]}-{row['depth']} {row['paper_error']:.2f}: {source}"
            if line not in sources:
                sources.append(line)
    return sources


def _lost_runs(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame | None:
    """The runs that failed or diverged, where there are any and they have every key (else None)."""
    lost = runs[runs["status"].isin([Status.failed, Status.diverged])]
    return None if lost.empty or not all(k in lost for k in keys) else lost


def lost_seeds(runs: pd.DataFrame, keys: list[str]) -> dict[tuple, int]:
    """Per cell (its keys' values as text): the seeds that failed or diverged, an outcome of that setting."""
    lost = _lost_runs(runs, keys)
    if lost is None:
        return {}
    counted = lost.groupby([lost[k].astype(str) for k in keys], dropna=False)
    draws = [c for c in lost.columns if is_under(c, SEED_KEYS)]  # a seed lost twice (two folders) counts once
    return {tuple(values if isinstance(values, tuple) else (values,)):
            int(len(group[draws].astype(str).drop_duplicates())) if draws else len(group)
            for values, group in counted}


def _lost_cells(runs: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(the keys' values, the runs) of each cell with seeds that failed or diverged."""
    lost = _lost_runs(runs, keys)
    if lost is None:
        return []
    return [(values if isinstance(values, tuple) else (values,), group)
            for values, group in lost.groupby(keys, dropna=False, sort=True)]


def aggregate(runs: pd.DataFrame, factors: list[str], recipe: dict, precision: float = DEFAULT_PRECISION,
              margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """One row per depth x arch x factors: over its seeds (each counted once, duplicates.count_once) the
    final test error's n, the seeds lost (failed or diverged), mean, std, LEVEL interval of the mean and its
    method, min, max, the seeds that would bring the interval's half-width to `precision` points; the mean
    held-out error where the runs held images out (a search's objective); beside a paper's number (its full
    recipe only) whether the cell matches it within ±`margin` points (stats.equivalence)."""
    done = runs[finished(runs)].copy()
    keys = [k for k in ROW_KEYS if k in done] + factors
    lost = lost_seeds(runs, keys)
    done["reference"] = reference_errors(done, recipe) if ARCH in done and "depth" in done else float("nan")
    groups = list(done.groupby(keys, dropna=False, sort=True))
    intervals = mean_intervals([g["test_error"].astype(float).to_numpy() for _, g in groups])
    rows = []
    for (values, group), interval in zip(groups, intervals):
        errors = group["test_error"].astype(float).to_numpy()
        reference = group["reference"]
        paper = reference.iloc[0] if reference.notna().all() and reference.nunique() == 1 else float("nan")
        values = values if isinstance(values, tuple) else (values,)
        matched = None if pd.isna(paper) else equivalence(errors, paper, margin)
        held_out = group["val_error"].astype(float) if "val_error" in group else pd.Series(dtype=float)
        rows.append({**dict(zip(keys, values)), "lost": lost.get(tuple(str(v) for v in values), 0),
                     "n": len(errors), "mean": errors.mean(), "std": errors.std(ddof=1) if len(errors) > 1 else float("nan"),
                     # an error lies in [0, 100]: the interval of its mean too
                     "ci_low": max(interval.low, 0.0), "ci_high": min(interval.high, 100.0), "ci_method": interval.method,
                     "min": errors.min(), "max": errors.max(),
                     "seeds_needed": seeds_for_precision(errors, precision),
                     "params": group["params"].iloc[0], "paper_error": paper,
                     "val_error": held_out.mean() if held_out.notna().all() and len(held_out) else float("nan"),
                     "vs_paper_low": float("nan") if matched is None else matched.interval.low,
                     "vs_paper_high": float("nan") if matched is None else matched.interval.high,
                     "paper_verdict": None if matched is None else matched.verdict,
                     "seeds": sorted(group["seed"].dropna().astype(int)) if "seed" in group else [],
                     "overrides": group["overrides"].iloc[0] if "overrides" in group else None,
                     "runs": list(group["run"])})
    counted = {tuple(str(row[k]) for k in keys) for row in rows}
    for values, group in _lost_cells(runs, keys):
        if tuple(str(v) for v in values) not in counted:  # every seed lost: a row that says so, no mean
            rows.append({**dict(zip(keys, values)), "lost": lost.get(tuple(str(v) for v in values), 0), "n": 0,
                         "ci_method": "", "params": group["params"].iloc[0] if "params" in group else float("nan"),
                         "seeds": [], "runs": list(group["run"])})
    rows.sort(key=lambda row: tuple(order_key(row[k]) for k in keys))
    table = pd.DataFrame(rows, columns=[*keys, *CELL_COLUMNS, "params", "val_error", "paper_error", "vs_paper_low",
                                        "vs_paper_high", "paper_verdict", "seeds", "overrides", "runs"])
    table["accuracy"] = 100.0 - table["mean"]
    table["vs_paper"] = table["mean"] - table["paper_error"]
    return table


def write_table_csv(table: pd.DataFrame, path) -> None:
    """table.csv: one row per cell, its factors (the net as `arch`, as comparisons.csv names it), then
    CELL_COLUMNS and the paper's columns."""
    columns = [c for c in table.columns if c not in ("seeds", "overrides", "runs", "accuracy")]
    write_frame(table[columns].rename(columns={ARCH: "arch"}), path, index=False, float_format=FLOATS)


def _values(series: pd.Series) -> str:
    values = sorted(series.dropna().unique().tolist())
    return ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values)


def basis(runs: pd.DataFrame, recipe: dict, where: bool = True) -> str:
    """What the numbers come from, said under the table and on every figure (a 60-iteration table must not
    read like a final result): the budget against the paper's, the data and its sizes (and, with `where`,
    its folder), the seeds."""
    done = runs[finished(runs)]
    used = done if len(done) else runs
    paper_budget = recipe["trainer.max_iters"]
    full = set(used["trainer.max_iters"].dropna().astype(int)) == {paper_budget}
    budget = "the paper's full budget" if full else f"the paper trained {paper_budget}"
    count = len(done) or len(runs)
    counted = f"{count} {'completed' if len(done) else 'unfinished'} run{'s' if count != 1 else ''}"
    sizes = [f"{_values(used[key])} {label}" for key, label in
             (("train_images", "training"), ("val_images", "held-out"), ("test_images", "test"))
             if key in used and used[key].fillna(0).astype(int).any()]
    data = _values(used["data.name"]) + (f" ({', '.join(sizes)} images)" if sizes else "")
    if where:
        data += f" from {_values(used['data.root'])}"
    return (f"From {counted}: {_values(used['trainer.max_iters'])} iterations ({budget}); {data}; "
            f"seeds {_values(used['seed'])}.")


def _fmt(value, digits: int = 2) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def _interval(low, high) -> str:
    return "" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"


def _paper_form(errors_mean, std, best) -> str:
    """The paper's own form for 5 runs or more: best (mean ± std)."""
    return f"{best:.2f} ({errors_mean:.2f} ± {std:.2f})"


def table_markdown(table: pd.DataFrame, factors: list[str], not_completed: pd.DataFrame, caption: str,
                precision: float = DEFAULT_PRECISION, margin: float = DEFAULT_MARGIN) -> str:
    """The table (LEVEL intervals of the mean, the seeds lost, the seeds a ± `precision` interval needs, the
    held-out error where there is one, a published number matched within ±`margin` or not), its basis and
    sources under it, and the runs that are not in it."""
    paper_form = bool((table["n"] >= PAPER_FORM_SEEDS).any())
    held_out = bool(table["val_error"].notna().any())
    header = ["depth", "model", *map(inline, factors), "test error % (mean)", "95% CI", "std", "min–max", "seeds",
              "lost", "interval", f"seeds for ±{precision:g}", *(["held-out error % (mean)"] if held_out else []),
              "accuracy %", "params", "paper error %", f"mean − paper [90% CI]: within ±{margin:g}?",
              *(["best (mean ± std)"] if paper_form else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        vs_paper = "" if pd.isna(r.vs_paper) else (
            f"{r.vs_paper:+.2f} {_interval(r.vs_paper_low, r.vs_paper_high)}: {r.paper_verdict}".replace("  ", " "))
        cells = [inline(r.get("depth", "")), inline(r.get(ARCH, "")), *(inline(r[f]) for f in factors),
                 _fmt(r["mean"]), _interval(r.ci_low, r.ci_high), _fmt(r["std"]), "" if r.n == 0 else f"{r['min']:.2f}–{r['max']:.2f}",
                 str(r.n), str(r.lost) if r.lost else "", r.ci_method, "" if pd.isna(r.seeds_needed) else (
                     "∞" if r.seeds_needed == float("inf") else str(int(r.seeds_needed))),
                 *([_fmt(r.val_error)] if held_out else []),
                 _fmt(r.accuracy), f"{int(r.params):,}" if not pd.isna(r.params) else "", _fmt(r.paper_error),
                 vs_paper]
        if paper_form:
            cells.append(_paper_form(r["mean"], r["std"], r["min"]) if r.n >= PAPER_FORM_SEEDS else "")
        lines.append("| " + " | ".join(cells) + " |")
    text = ("\n".join(lines) + "\n\n" + inline(caption) + " Mean over the seeds of a row that finished (each seed "
            f"counted once; lost: seeds that failed or diverged); its 95% confidence interval ({INTERVAL_NOTE}); "
            f"seeds for ±{precision:g}: how many seeds would bring that interval's half-width to {precision:g} points "
            "at the spread seen. Against a published number: the 90% interval of mean − paper; matches where it lies "
            f"within ±{margin:g} points (two one-sided t-tests), differs where the 95% interval excludes the paper, "
            "cannot tell otherwise.\n")
    sources = reference_sources(table)
    if sources:
        text += "\nPaper numbers (compared only at that paper's full recipe): " + inline("; ".join(sources)) + ".\n"
    if len(not_completed):
        text += ("\nNot in the means (not completed; a seed that failed or diverged is counted as lost in its "
                 "cell):\n\n| run | status | iteration | error |\n|---|---|---|---|\n")
        for _, r in not_completed.iterrows():
            iteration = "" if pd.isna(r.get("iteration")) else int(r["iteration"])
            text += f"| {inline(r['run'])} | {inline(r['status'])} | {iteration} | {inline(r.get('error') or '')} |\n"
    return text
