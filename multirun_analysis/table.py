"""Completed runs -> the accuracy table: depth x model (x every other factor that varies), over seeds.

A row is compared with the paper's Table 6 only when its runs used the
paper's recipe and budget in full (ResNet, option A, the default config of
conf/), so short runs are never set against the paper.
"""
from __future__ import annotations

import pandas as pd
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from resnet_cifar.config import DATA_SOURCE_KEYS, NOT_THE_EXPERIMENT

from .collect import flatten_config

# He et al. 2015, Table 6 (CIFAR-10 test error %). For 110 the paper gives best of 5 (6.43) and the
# mean ± std of 5 runs (6.61 ± 0.16); the table compares means, so it uses 6.61.
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61, 1202: 7.93}

# Keys that say where or how a run was executed, not what was trained.
NOT_FACTORS = {"seed", *DATA_SOURCE_KEYS, *NOT_THE_EXPERIMENT, "trainer.device", "trainer.eval_batch_size",
               "trainer.eval_every", "trainer.checkpoint_every", "trainer.channels_last",
               "trainer.cuda_graph", "trainer.compile", "trainer.compile_mode"}
ROW_KEYS = ["depth", "arch"]
# The paper trained on two GPUs with per-GPU BN; one process or several both count as its recipe.
NOT_RECIPE = NOT_FACTORS | {"depth", "trainer.nproc_per_node", "trainer.nnodes"}


def paper_recipe() -> dict:
    """The default config of conf/ (the paper's recipe and full budget), flattened."""
    with initialize_config_module(version_base="1.3", config_module="resnet_cifar.conf"):
        cfg = compose(config_name="config")
    return flatten_config(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def with_defaults(runs: pd.DataFrame, recipe: dict) -> pd.DataFrame:
    """A config key that an older run folder lacks takes its default in conf/: keys are added with
    defaults that keep the earlier behaviour (trainer.precision arrived as fp32, the only one before)."""
    runs = runs.copy()
    for key, value in recipe.items():
        runs[key] = runs[key].where(runs[key].notna(), value) if key in runs else value
    return runs


def varying_factors(runs: pd.DataFrame, config_columns: list[str]) -> list[str]:
    """Config keys (other than depth, arch and execution details) whose value differs between runs."""
    return [c for c in config_columns
            if c not in NOT_FACTORS and c not in ROW_KEYS and c in runs and runs[c].astype(str).nunique() > 1]


def is_paper_recipe(runs: pd.DataFrame, recipe: dict) -> pd.Series:
    """Per run: every key that defines the experiment, except depth and the process count, has the
    paper's value."""
    ok = pd.Series(True, index=runs.index)
    for key, value in recipe.items():
        if key in NOT_RECIPE:
            continue
        ok &= runs[key].astype(str) == str(value) if key in runs else False
    return ok


def aggregate(runs: pd.DataFrame, factors: list[str], recipe: dict) -> pd.DataFrame:
    """Mean, std and count of the final test error over seeds, per depth x arch x factors."""
    done = runs[runs["status"] == "completed"].copy()
    keys = [k for k in ROW_KEYS if k in done] + factors
    done["paper_recipe"] = is_paper_recipe(done, recipe)
    table = done.groupby(keys, dropna=False, sort=True).agg(
        test_error_mean=("test_error", "mean"), test_error_std=("test_error", "std"),
        runs=("test_error", "size"), params=("params", "first"), paper_recipe=("paper_recipe", "all"),
    ).reset_index()
    table["test_accuracy_mean"] = 100.0 - table["test_error_mean"]
    paper = table["depth"].map(PAPER_TABLE6) if "depth" in table else pd.Series(float("nan"), index=table.index)
    table["paper_error"] = paper.where(table["paper_recipe"])
    table["vs_paper"] = table["test_error_mean"] - table["paper_error"]
    return table


def _values(series: pd.Series) -> str:
    values = sorted(series.dropna().unique().tolist())
    return ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values)


def basis(runs: pd.DataFrame, recipe: dict, where: bool = True) -> str:
    """What the numbers come from, said under the table and on every figure (a 60-iteration table must not
    read like a final result): the budget against the paper's, the data and its sizes (and, with `where`,
    its folder), the seeds."""
    done = runs[runs["status"] == "completed"]
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


def to_markdown(table: pd.DataFrame, factors: list[str], not_completed: pd.DataFrame, caption: str) -> str:
    header = ["depth", "model", *factors, "test error % (mean ± std)", "accuracy %", "runs", "params",
              "paper error %", "vs paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        spread = f" ± {_fmt(r.test_error_std)}" if r.runs > 1 else ""
        cells = [str(r.get("depth", "")), str(r.get("arch", "")), *(str(r[f]) for f in factors),
                 f"{_fmt(r.test_error_mean)}{spread}", _fmt(r.test_accuracy_mean), str(r.runs),
                 f"{int(r.params):,}" if not pd.isna(r.params) else "", _fmt(r.paper_error),
                 "" if pd.isna(r.vs_paper) else f"{r.vs_paper:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\n" + caption + " Mean ± sample std over the seeds of a row.\n"
    if len(not_completed):
        text += "\nNot in the table (not completed):\n\n| run | status | iteration | error |\n|---|---|---|---|\n"
        for _, r in not_completed.iterrows():
            error = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")
            iteration = "" if pd.isna(r.get("iteration")) else int(r["iteration"])
            text += f"| {r['run']} | {r['status']} | {iteration} | {error} |\n"
    return text
