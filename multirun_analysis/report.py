"""python -m multirun_analysis.report [SWEEP_OR_RUN_DIR ...] [--out DIR] [--readme README.md]

Turns run folders into runs.csv, curves.csv, table.md and table.csv (each cell
with its 95% interval and the seeds it needs), comparisons.md and
comparisons.csv (every pair of settings, tested) and the figures, and
optionally puts the table and the verdicts into a README between the results
markers.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from resnet_cifar import filesystem
from resnet_cifar.config import NOT_FACTORS
from resnet_cifar.errors import UserError
from resnet_cifar.filesystem import unwritable_reason
from resnet_cifar.trust import CodeTrust, add_loading_options

from . import comparisons, spread
from .collect import DEFAULT_DIRS, FLOATS, RUNS_FILE, collect, finished
from .comparisons import CONFIRMATORY, DEFAULT_EFFECT, EXPLORATORY
from .question import QuestionError, checked, label, question_of
from .spread import split_by_source
from .stats import SEED_CAP
from .duplicates import count_once, identity_columns
from .escape import fenced, for_terminal, inline
from .more_seeds import add_seeds_command, overrides_from_config
from .plots import draw_all
from .table import (
    DEFAULT_MARGIN,
    DEFAULT_PRECISION,
    ROW_KEYS,
    aggregate,
    basis,
    paper_recipe,
    table_markdown,
    varying_factors,
    with_defaults,
    write_table_csv,
)

SPREAD_SEEDS = 3  # what a cell of one seed is brought to: the fewest whose spread says something
SHOWN_COMMANDS = 10  # seed commands printed; all of them are in table.md

MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


class ReportError(Exception):
    """Nothing to report, or a README that cannot take the report."""


MARKED = re.compile(re.escape(MARKERS[0]) + r".*?" + re.escape(MARKERS[1]), re.DOTALL)


def check_readme(readme: Path) -> str:
    """The README's text, if it has exactly one pair of markers (checked before anything is written)."""
    if not readme.is_file():
        raise ReportError(f"--readme {readme}: no such file")
    try:
        content = filesystem.read_text(readme)
    except OSError as e:
        raise ReportError(f"--readme {readme} cannot be read ({e.strerror})") from None
    if len(MARKED.findall(content)) != 1 or content.count(MARKERS[0]) != 1:
        raise ReportError(f"--readme {readme}: needs exactly one '{MARKERS[0]}' ... '{MARKERS[1]}' pair")
    return content


def update_readme(readme: Path, text: str) -> None:
    """Replace what lies between the markers; everything else stays byte for byte. The new text holds no
    marker (every recorded value in it is escaped: escape.py), so that the next report finds the same pair."""
    if any(marker in text for marker in MARKERS):
        raise ReportError(f"--readme {readme}: the report's text holds a results marker; nothing was written")
    content = check_readme(readme)
    filesystem.write_text(readme, MARKED.sub(lambda _: f"{MARKERS[0]}\n{text}{MARKERS[1]}", content))


def figure7_if_possible(runs: pd.DataFrame, out: Path, data_root: str | None, caption: str = "",
                        earlier: list[Path] = (), trust_code: list[str] = (),
                        max_parameters: int | None = None) -> tuple[list[Path], str]:
    """Figure 7 for the report's runs that kept their models, else from the responses.csv of the earlier
    reports read (their models are not here): ([fig7.png] or [], lines for the account)."""
    from .responses import (  # torch: only here
        FIGURE_FILE,
        RESPONSES_FILE,
        figure7,
        left_out_line,
        write_responses,
    )

    responses, figure, left_out = write_responses(runs, out, data_root, caption, trust_code, max_parameters)
    note = f"\n{left_out_line(runs, left_out)}" if left_out else ""
    measured = [p.parent / RESPONSES_FILE for p in earlier if (p.parent / RESPONSES_FILE).is_file()]
    if responses is None and measured:
        frame = pd.concat([pd.read_csv(m) for m in measured], ignore_index=True)
        # duplicates and unreadable runs left out here too, and a run read twice counted once
        frame = frame[frame["run"].isin(runs["run"])].drop_duplicates(["run", "layer"])
        filesystem.write_frame(frame, out / RESPONSES_FILE, index=False, float_format=FLOATS)
        figure = figure7(frame, out / FIGURE_FILE, caption)
        return [figure], (f"\nFigure 7 from {frame['run'].nunique()} runs' responses as measured before: "
                          f"{', '.join(map(str, measured))}")
    if responses is None:
        return [], note + ("" if left_out else "\nFigure 7 skipped: no completed run kept a model.pt")
    return [figure], f"\nFigure 7 from {responses['run'].nunique()} runs' models: responses.csv, {figure.name}{note}"


def seed_commands(table: pd.DataFrame, found: pd.DataFrame, runs: pd.DataFrame, keys: list[str],
                  recipe: dict) -> tuple[list[str], list[str]]:
    """(the sweeps that add the seeds each cell needs for ±precision and each confirmatory comparison not yet
    shown needs to show the effect of interest, the larger of the two per cell; lines for the cells whose plan
    is beyond SEED_CAP, saying why instead of printing range(5, 611967)). A cell whose runs recorded no command
    line gets the overrides read from its first run's config."""
    # a cell of one seed has no spread to plan from: SPREAD_SEEDS first; one that lost every seed, no plan (its
    # recipe failed or diverged: the report says so, more of the same is not a plan)
    wanted = {i: math.nan if table.at[i, "n"] == 0 else SPREAD_SEEDS if table.at[i, "n"] < 2 else
              table.at[i, "seeds_needed"] for i in range(len(table))}
    why = {i: f"for its interval at its spread (sd {table.at[i, 'std']:.2f} points over {table.at[i, 'n']} seeds)"
           for i in range(len(table))}
    index = {tuple(str(table.at[i, k]) for k in keys): i for i in range(len(table))}
    for _, c in found[found["seeds_needed"].notna()].iterrows():
        for cell in c["cells"]:
            i = index.get(cell)
            if i is not None and (pd.isna(wanted[i]) or c["seeds_needed"] > wanted[i]):
                wanted[i] = c["seeds_needed"]
                held = f" at {c['held']}" if c["held"] else ""
                spread = c["_spread"].text() if c.get("_spread") is not None else ""
                why[i] = (f"to show the effect of interest between {c['a']} and {c['b']}{held} "
                          f"(comparisons.md; {spread} points)")
    by_run = runs.drop_duplicates("run").set_index("run", drop=False)
    commands, beyond = [], []
    for i, total in wanted.items():
        if not pd.isna(total) and total > SEED_CAP:
            cell = ", ".join(f"{label(k)}={table.at[i, k]}" for k in keys)
            beyond.append(f"{cell}: {'over 1,000,000' if math.isinf(total) else int(total)} seeds would be needed "
                          f"{why[i]}: more than {SEED_CAP}, not planned; at this budget the seeds spread too much "
                          "for that question")
            continue
        command = add_seeds_command(table.iloc[i], keys, total,
                                    overrides_from_config(by_run.loc[table.at[i, "runs"][0]], recipe, keys))
        if command:
            commands.append(command)
    return commands, beyond


def report(paths: list[Path], out: Path, readme: Path | None = None, data_root: str | None = None,
           precision: float = DEFAULT_PRECISION, trust_code: list[str] = (), max_parameters: int | None = None,
           question: str | None = None, pairs: list[str] = (), effect: float = DEFAULT_EFFECT, looks: int = 1,
           margin: float = DEFAULT_MARGIN) -> str:
    """Write the report files into `out`; return a one-paragraph account of what was read. Figure 7 imports
    a net a run folder names outside this package only from the modules of `trust_code` (resnet_cifar.trust);
    such a run's numbers are reported either way."""
    missing = [p for p in paths if not p.is_dir() and not (p.is_file() and p.name == RUNS_FILE)]
    if missing:
        raise ReportError(f"no such folder (or earlier report's {RUNS_FILE}): {', '.join(map(str, missing))}")
    for option, value in (("--precision", precision), ("--effect", effect), ("--margin", margin)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ReportError(f"{option} {value}: must be a positive number of points")
    if not (isinstance(looks, int) and looks >= 1):
        raise ReportError(f"--looks {looks}: must be a whole number of looks, 1 or more")
    try:
        asked = question_of(pd.DataFrame(), question, list(pairs)) if question is not None or pairs else None
    except QuestionError as e:
        raise ReportError(str(e)) from None
    if os.path.lexists(out) and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder: choose a folder for the report's files")
    reason = unwritable_reason(out)
    if reason:  # before the runs are read, not after
        raise ReportError(f"--out {out} cannot be used: {reason}; choose another folder for the report's files")
    if readme is not None:
        readme = readme.resolve()  # a README that is a link to yours: the file it names is updated
        check_readme(readme)
    CodeTrust.of(trust_code)  # a module path that is not one: refused before anything is read
    found = collect(paths)
    if found.runs.empty:
        broken = "".join(f"\n  {run}: {why}" for run, why in found.broken.items())
        raise ReportError(f"no readable run folders under {', '.join(map(str, paths))}{broken}")
    recipe = paper_recipe()
    config_columns = list(dict.fromkeys([*found.config_columns, *recipe]))
    runs, duplicates = count_once(with_defaults(found.runs, recipe),
                                  identity_columns(found.runs, config_columns, NOT_FACTORS))
    completed = runs[finished(runs)]
    factors = varying_factors(completed if len(completed) else runs, config_columns)
    keys = [k for k in ROW_KEYS if k in completed] + factors
    asked_here = asked is not None
    asked = asked or question_of(runs)
    try:  # before a file is written: a question these runs cannot answer, asked here, is one line
        unanswered = checked(asked, keys, completed, asked_here, comparisons.Lost(runs, keys))
    except QuestionError as e:
        raise ReportError(str(e)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # what the check before could not foresee (the disk filled since)
        raise ReportError(f"--out {out} cannot be made ({e.strerror})") from None
    # a folder read twice (a runs.csv and its run folders) is one run: its curve once
    curves = found.curves[found.curves["run"].isin(runs["run"])].drop_duplicates(["run", "iteration", "metric"])
    filesystem.write_frame(runs, out / "runs.csv", index=False, float_format=FLOATS)
    filesystem.write_frame(curves, out / "curves.csv", index=False, float_format=FLOATS)

    table = aggregate(runs, factors, recipe, precision, margin)
    caption = basis(runs, recipe, where=False)
    compared = comparisons.compare_all(runs, keys, asked, looks, effect)
    compared.attrs["unmatched"] = unanswered + compared.attrs["unmatched"]
    commands, beyond = seed_commands(table, compared, runs, keys, recipe)
    markdown = table_markdown(table, factors, runs[~finished(runs)], basis(runs, recipe), precision,
                           margin)
    if commands:
        markdown += (f"\nTo bring every cell to ±{precision:g} points, and to show a true difference of {effect:g} "
                     "points in the question's comparisons not yet shown (comparisons.md; add them all, then "
                     "report once: looking again after each seed makes false claims more likely, unless the "
                     "looks are declared with --looks):\n\n" + fenced(commands, "bash"))
    if beyond:
        markdown += "\nNot planned:\n\n" + "".join(f"- {inline(line)}\n" for line in beyond)
    if duplicates:
        markdown += "\n" + "\n".join(f"- {inline(line)}" for line in duplicates) + "\n"
    written = ["runs.csv", "curves.csv", "table.md", "table.csv"]
    if split_by_source(completed):
        sources = spread.decompose(runs, keys)
        spread.write_spread_csv(sources, keys, out / spread.SPREAD_FILE)
        markdown += spread.spread_markdown(sources, keys)
        written.append(spread.SPREAD_FILE)
    filesystem.write_text(out / "table.md", markdown)
    write_table_csv(table, out / "table.csv")
    filesystem.write_text(out / "comparisons.md", comparisons.comparisons_markdown(compared, caption))
    comparisons.write_comparisons_csv(compared, out / "comparisons.csv")
    figures, not_drawn = draw_all(curves, runs, keys, factors, out, caption)
    fig7, fig7_note = figure7_if_possible(runs, out, data_root, caption, [p for p in paths if p.is_file()],
                                          trust_code, max_parameters)
    figures += fig7

    if readme is not None:
        links = "".join(f"![{f.stem}]({os.path.relpath(f, readme.resolve().parent)})\n" for f in figures)
        verdicts = "".join(f"- {said}\n" for said in comparisons.markdown_verdicts(compared, CONFIRMATORY))
        leads = int((compared["family"] == EXPLORATORY).sum())
        not_compared = "".join(f"- {inline(line)}\n" for line in compared.attrs["unmatched"])
        block = f"{markdown}\n" + (f"The question ({inline(asked.describe())}), tested as one family "
                                    f"(comparisons.md):\n\n{verdicts}\n" if verdicts else "")
        if not_compared:
            block += f"Not compared:\n\n{not_compared}\n"
        if leads:
            block += (f"{leads} other comparisons are exploratory (not part of the question, not corrected: leads, "
                      "not findings): comparisons.md.\n\n")
        update_readme(readme, f"{block}{links}")

    counts = runs["status"].value_counts().to_dict()
    account = (f"read {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
               f"from {', '.join(map(str, paths))}; wrote {out}/: {', '.join(written)}, "
               f"comparisons.md, comparisons.csv ({len(compared)} comparisons, "
               f"{int((compared['family'] == CONFIRMATORY).sum())} confirmatory: {asked.describe()}), "
               f"{', '.join(f.name for f in figures)}")
    account += "".join(f"\n{line}" for line in not_drawn) + fig7_note
    for line in duplicates:
        account += f"\n{line}"
    for line in compared.attrs["unmatched"] + beyond:
        account += f"\n{line}"
    if commands:
        account += f"\nseeds to add (±{precision:g} points, and {effect:g} points in the question's comparisons):"
        account += "".join(f"\n  {c}" for c in commands[:SHOWN_COMMANDS])
        if len(commands) > SHOWN_COMMANDS:
            account += f"\n  ... and {len(commands) - SHOWN_COMMANDS} more in {out / 'table.md'}"
    for run, why in found.broken.items():
        account += f"\nskipped {run}: {why}"
    for run, what in found.notes.items():
        account += f"\n{run}: {what}"
    return account


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # the command writes files and shows nothing: no display needed
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="*", type=Path,
                        help="sweep or run folders, or an earlier report's runs.csv (default: multirun/ and outputs/)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where to write (default: reports/)")
    parser.add_argument("--readme", type=Path, help="a README whose results markers get the table and figures")
    parser.add_argument("--data", help="data.root for Figure 7's test set (default: each run's own)")
    parser.add_argument("--precision", type=float, default=DEFAULT_PRECISION,
                        help=f"half-width (points) of the 95%% interval the seeds needed are planned for "
                             f"(default {DEFAULT_PRECISION})")
    parser.add_argument("--question", help="the comparisons to test as one confirmatory family, e.g. "
                                           "compare=arch,trend=depth (default: what the runs' preset declared; without "
                                           "one, every pair of every factor)")
    parser.add_argument("--pair", action="append", default=[], metavar="'A vs B'",
                        help="a confirmatory pair of settings, e.g. 'arch=vgg,depth=10 vs arch=resnet,depth=8' "
                             "(for nets whose depths never meet); repeatable")
    parser.add_argument("--effect", type=float, default=DEFAULT_EFFECT,
                        help=f"the smallest difference of test error (points) worth detecting: seeds are planned "
                             f"to show it with 80%% power (default {DEFAULT_EFFECT})")
    parser.add_argument("--looks", type=int, default=1,
                        help="how many times these runs' question is reported as seeds are added (each look tested "
                             "at 0.05 / LOOKS, so that looking again cannot make false claims more likely; default 1)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"points within which a cell matches a published number (default {DEFAULT_MARGIN})")
    add_loading_options(parser)
    args = parser.parse_args(argv)
    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    if not dirs:
        print(f"error: no run folders given and none of {', '.join(DEFAULT_DIRS)}/ here ({Path.cwd()})",
              file=sys.stderr)
        return 2
    try:
        print(for_terminal(report(dirs, args.out, args.readme, args.data, args.precision, args.trust_code,
                                  args.max_parameters, args.question, args.pair, args.effect, args.looks,
                                  args.margin)))
    except (ReportError, UserError) as e:  # UserError: a file that cannot be written (full disk, a link)
        print(f"error: {for_terminal(str(e))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
