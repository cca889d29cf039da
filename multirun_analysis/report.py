"""python -m multirun_analysis.report [SWEEP_OR_RUN_DIR ...] [--out DIR] [--readme README.md]

Turns run folders into runs.csv, curves.csv, table.md and table.csv (each cell
with its 95% interval and the seeds it needs), comparisons.md and
comparisons.csv (every pair of settings, tested) and the figures, and
optionally puts the table and the verdicts into a README between the results
markers.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd

from resnet_cifar import filesystem
from resnet_cifar.errors import UserError
from resnet_cifar.filesystem import unwritable_reason
from resnet_cifar.trust import CodeTrust, add_loading_options

from . import comparisons
from .collect import DEFAULT_DIRS, FLOATS, RUNS_FILE, collect
from .duplicates import count_once, identity_columns
from .escape import fenced, inline
from .more_seeds import add_seeds_command, overrides_from_config
from .plots import draw_all
from .table import (
    DEFAULT_PRECISION,
    NOT_FACTORS,
    ROW_KEYS,
    aggregate,
    basis,
    paper_recipe,
    to_csv,
    to_markdown,
    varying_factors,
    with_defaults,
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
                  recipe: dict) -> list[str]:
    """The sweeps that add the seeds each cell needs for ±precision, and each comparison that shows no
    difference needs to show the one observed (the larger of the two per cell); a cell whose runs recorded
    no command line gets the overrides read from its first run's config."""
    # a cell of one seed has no spread to plan from: SPREAD_SEEDS first
    wanted = {i: SPREAD_SEEDS if table.at[i, "n"] < 2 else table.at[i, "seeds_needed"] for i in range(len(table))}
    index = {tuple(str(table.at[i, k]) for k in keys): i for i in range(len(table))}
    for _, c in found[found["seeds_needed"].notna()].iterrows():
        for cell in c["cells"]:
            i = index.get(cell)
            if i is not None:
                wanted[i] = c["seeds_needed"] if pd.isna(wanted[i]) else max(wanted[i], c["seeds_needed"])
    by_run = runs.drop_duplicates("run").set_index("run", drop=False)
    commands = [add_seeds_command(table.iloc[i], keys, total,
                                  overrides_from_config(by_run.loc[table.at[i, "runs"][0]], recipe, keys))
                for i, total in wanted.items()]
    return [c for c in commands if c]


def report(paths: list[Path], out: Path, readme: Path | None = None, data_root: str | None = None,
           precision: float = DEFAULT_PRECISION, trust_code: list[str] = (), max_parameters: int | None = None) -> str:
    """Write the report files into `out`; return a one-paragraph account of what was read. Figure 7 imports
    a net a run folder names outside this package only from the modules of `trust_code` (resnet_cifar.trust);
    such a run's numbers are reported either way."""
    missing = [p for p in paths if not p.is_dir() and not (p.is_file() and p.name == RUNS_FILE)]
    if missing:
        raise ReportError(f"no such folder (or earlier report's {RUNS_FILE}): {', '.join(map(str, missing))}")
    if not precision > 0:
        raise ReportError(f"--precision {precision}: must be a positive number of points")
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # what the check before could not foresee (the disk filled since)
        raise ReportError(f"--out {out} cannot be made ({e.strerror})") from None
    recipe = paper_recipe()
    config_columns = list(dict.fromkeys([*found.config_columns, *recipe]))
    runs, duplicates = count_once(with_defaults(found.runs, recipe),
                                  identity_columns(found.runs, config_columns, NOT_FACTORS))
    # a folder read twice (a runs.csv and its run folders) is one run: its curve once
    curves = found.curves[found.curves["run"].isin(runs["run"])].drop_duplicates(["run", "iteration", "metric"])
    filesystem.write_frame(runs, out / "runs.csv", index=False, float_format=FLOATS)
    filesystem.write_frame(curves, out / "curves.csv", index=False, float_format=FLOATS)

    completed = runs[runs["status"] == "completed"]
    factors = varying_factors(completed if len(completed) else runs, config_columns)
    table = aggregate(runs, factors, recipe, precision)
    keys = [k for k in ROW_KEYS if k in completed] + factors
    caption = basis(runs, recipe, where=False)
    compared = comparisons.compare_all(runs, keys)
    commands = seed_commands(table, compared, runs, keys, recipe)
    markdown = to_markdown(table, factors, runs[runs["status"] != "completed"], basis(runs, recipe), precision)
    if commands:
        markdown += (f"\nTo bring every cell to ±{precision:g} points, and to detect the differences not yet "
                     "shown (comparisons.md):\n\n" + fenced(commands, "bash"))
    if duplicates:
        markdown += "\n" + "\n".join(f"- {inline(line)}" for line in duplicates) + "\n"
    filesystem.write_text(out / "table.md", markdown)
    to_csv(table, out / "table.csv")
    filesystem.write_text(out / "comparisons.md", comparisons.to_markdown(compared, caption))
    comparisons.to_csv(compared, out / "comparisons.csv")
    figures, not_drawn = draw_all(curves, runs, keys, factors, out, caption)
    fig7, fig7_note = figure7_if_possible(runs, out, data_root, caption, [p for p in paths if p.is_file()],
                                          trust_code, max_parameters)
    figures += fig7

    if readme is not None:
        links = "".join(f"![{f.stem}]({os.path.relpath(f, readme.resolve().parent)})\n" for f in figures)
        verdicts = "".join(f"- {label}\n" for label in comparisons.markdown_verdicts(compared))
        block = f"{markdown}\n" + (f"Comparisons (comparisons.md):\n\n{verdicts}\n" if verdicts else "")
        update_readme(readme, f"{block}{links}")

    counts = runs["status"].value_counts().to_dict()
    account = (f"read {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
               f"from {', '.join(map(str, paths))}; wrote {out}/: runs.csv, curves.csv, table.md, table.csv, "
               f"comparisons.md, comparisons.csv ({len(compared)} comparisons), "
               f"{', '.join(f.name for f in figures)}")
    account += "".join(f"\n{line}" for line in not_drawn) + fig7_note
    for line in duplicates:
        account += f"\n{line}"
    if commands:
        account += f"\nseeds to add (±{precision:g} points, and the differences not yet shown):"
        account += "".join(f"\n  {c}" for c in commands[:SHOWN_COMMANDS])
        if len(commands) > SHOWN_COMMANDS:
            account += f"\n  ... and {len(commands) - SHOWN_COMMANDS} more in {out / 'table.md'}"
    for run, why in found.broken.items():
        account += f"\nskipped {run}: {why}"
    for run, what in found.notes.items():
        account += f"\n{run}: {what}"
    return account


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="*", type=Path,
                        help="sweep or run folders, or an earlier report's runs.csv (default: multirun/ and outputs/)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where to write (default: reports/)")
    parser.add_argument("--readme", type=Path, help="a README whose results markers get the table and figures")
    parser.add_argument("--data", help="data.root for Figure 7's test set (default: each run's own)")
    parser.add_argument("--precision", type=float, default=DEFAULT_PRECISION,
                        help=f"half-width (points) of the 95%% interval the seeds needed are planned for "
                             f"(default {DEFAULT_PRECISION})")
    add_loading_options(parser)
    args = parser.parse_args(argv)
    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    if not dirs:
        print(f"error: no run folders given and none of {', '.join(DEFAULT_DIRS)}/ here ({Path.cwd()})",
              file=sys.stderr)
        return 2
    try:
        print(report(dirs, args.out, args.readme, args.data, args.precision, args.trust_code, args.max_parameters))
    except (ReportError, UserError) as e:  # UserError: a file that cannot be written (full disk, a link)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
