"""python -m multirun_analysis.report [SWEEP_OR_RUN_DIR ...] [--out DIR] [--readme README.md]

Turns run folders into runs.csv, curves.csv, table.md and the figures, and
optionally puts the table into a README between the results markers.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd

from .collect import DEFAULT_DIRS, FLOATS, collect
from .plots import draw_all
from .table import aggregate, basis, paper_recipe, to_markdown, varying_factors, with_defaults

MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


class ReportError(Exception):
    """Nothing to report, or a README that cannot take the report."""


MARKED = re.compile(re.escape(MARKERS[0]) + r".*?" + re.escape(MARKERS[1]), re.DOTALL)


def check_readme(readme: Path) -> str:
    """The README's text, if it has exactly one pair of markers (checked before anything is written)."""
    if not readme.is_file():
        raise ReportError(f"--readme {readme}: no such file")
    content = readme.read_text()
    if len(MARKED.findall(content)) != 1 or content.count(MARKERS[0]) != 1:
        raise ReportError(f"--readme {readme}: needs exactly one '{MARKERS[0]}' ... '{MARKERS[1]}' pair")
    return content


def update_readme(readme: Path, text: str) -> None:
    """Replace what lies between the markers; everything else stays byte for byte."""
    content = check_readme(readme)
    readme.write_text(MARKED.sub(lambda _: f"{MARKERS[0]}\n{text}{MARKERS[1]}", content))


def figure7_if_possible(runs: pd.DataFrame, out: Path, data_root: str | None,
                        caption: str = "") -> tuple[list[Path], str]:
    """Figure 7 for the report's runs that kept their models: ([fig7.png] or [], lines for the account)."""
    from .responses import left_out_line, write_responses  # torch and the nets only where a figure needs them

    responses, figure, left_out = write_responses(runs, out, data_root, caption)
    note = f"\n{left_out_line(runs, left_out)}" if left_out else ""
    if responses is None:
        return [], note + ("" if left_out else "\nFigure 7 skipped: no completed run kept a model.pt")
    return [figure], f"\nFigure 7 from {responses['run'].nunique()} runs' models: responses.csv, {figure.name}{note}"


def report(paths: list[Path], out: Path, readme: Path | None = None, data_root: str | None = None) -> str:
    """Write the report files into `out`; return a one-paragraph account of what was read."""
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise ReportError(f"no such folder: {', '.join(map(str, missing))}")
    if readme is not None:
        check_readme(readme)
    found = collect(paths)
    if found.runs.empty:
        broken = "".join(f"\n  {run}: {why}" for run, why in found.broken.items())
        raise ReportError(f"no readable run folders under {', '.join(map(str, paths))}{broken}")
    out.mkdir(parents=True, exist_ok=True)
    recipe = paper_recipe()
    runs, curves = with_defaults(found.runs, recipe), found.curves
    config_columns = list(dict.fromkeys([*found.config_columns, *recipe]))
    runs.to_csv(out / "runs.csv", index=False, float_format=FLOATS)
    curves.to_csv(out / "curves.csv", index=False, float_format=FLOATS)

    completed = runs[runs["status"] == "completed"]
    factors = varying_factors(completed if len(completed) else runs, config_columns)
    table = aggregate(runs, factors, recipe)
    markdown = to_markdown(table, factors, runs[runs["status"] != "completed"], basis(runs, recipe))
    (out / "table.md").write_text(markdown)
    caption = basis(runs, recipe, where=False)
    figures = draw_all(curves, runs, factors, out, caption)
    fig7, fig7_note = figure7_if_possible(runs, out, data_root, caption)
    figures += fig7

    if readme is not None:
        links = "".join(f"![{f.stem}]({os.path.relpath(f, readme.resolve().parent)})\n" for f in figures)
        update_readme(readme, f"{markdown}\n{links}")

    counts = runs["status"].value_counts().to_dict()
    account = (f"read {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
               f"from {', '.join(map(str, paths))}; wrote {out}/: runs.csv, curves.csv, table.md, "
               f"{', '.join(f.name for f in figures)}")
    account += fig7_note
    for run, why in found.broken.items():
        account += f"\nskipped {run}: {why}"
    for run, what in found.notes.items():
        account += f"\n{run}: {what}"
    return account


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep or run folders (default: multirun/ and outputs/)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where to write (default: reports/)")
    parser.add_argument("--readme", type=Path, help="a README whose results markers get the table and figures")
    parser.add_argument("--data", help="data.root for Figure 7's test set (default: each run's own)")
    args = parser.parse_args(argv)
    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    if not dirs:
        print(f"error: no run folders given and none of {', '.join(DEFAULT_DIRS)}/ here ({Path.cwd()})",
              file=sys.stderr)
        return 2
    try:
        print(report(dirs, args.out, args.readme, args.data))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
