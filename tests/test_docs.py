"""The documentation: the site builds with no warning (broken links and anchors, pages missing from the
navigation), its reference pages are what the code makes today, the README stays a landing page, and every
command a page shows in a block marked runnable runs, as written, on tiny data."""
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, train_env, write_cifar10

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUNNABLE = re.compile(r"^```bash \{\.runnable\}\n(.*?)^```", re.DOTALL | re.MULTILINE)
README_LIMIT = 15_000  # bytes: a landing page, the rest lives on the site


def runnable_commands(page: Path) -> list[list[str]]:
    """The commands of a page's runnable blocks, in order, each as its words (comments dropped)."""
    commands = []
    for block in RUNNABLE.findall(page.read_text()):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


PAGES_WITH_COMMANDS = [p for p in PAGES if runnable_commands(p)]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed")
def test_the_site_builds_with_no_warning(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**train_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "guide" / "analysis" / "index.html").is_file()


@pytest.mark.slow
def test_the_reference_pages_are_what_the_code_makes_today():
    from resnet_cifar.reference import cli_page, config_page

    assert (REPO / "docs" / "reference" / "config.md").read_text() == config_page(), \
        "docs/reference/config.md is out of date: python -m resnet_cifar.reference docs/reference"
    assert (REPO / "docs" / "reference" / "cli.md").read_text() == cli_page(), \
        "docs/reference/cli.md is out of date: python -m resnet_cifar.reference docs/reference"


def test_the_readme_is_a_landing_page_with_its_results_block():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode())} bytes"
    assert text.count("<!-- results:start -->") == 1 and text.count("<!-- results:end -->") == 1
    for link in re.findall(r"\]\((docs/[^)#]+)", text):  # every page it links to exists
        assert (REPO / link).is_file(), link


def test_some_pages_have_runnable_commands():
    assert REPO / "README.md" in PAGES_WITH_COMMANDS


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_runnable_command_runs_as_written_on_tiny_data(page, tmp_path):
    """In a fresh folder whose data/ holds a tiny CIFAR-10 (the default data.root), one after the other."""
    write_cifar10(tmp_path / "data")
    for words in runnable_commands(page):
        assert words[:2] == ["python", "-m"], f"{page.name}: a runnable command is `python -m ...`: {words}"
        result = subprocess.run(cli(words[2], *words[3:]), cwd=tmp_path, capture_output=True, text=True,
                                timeout=600, env=train_env())
        assert result.returncode == 0, f"{shlex.join(words)}\n{result.stderr[-3000:]}"
    shutil.rmtree(tmp_path / "data")


@pytest.mark.slow
def test_the_readmes_results_are_what_the_report_makes_today_from_the_studys_runs(tmp_path):
    """The README's results block and the study's committed report are today's statistics over the committed
    run records (docs/results/fig6_study/runs): a change to the statistics that changes them fails here until
    they are made again (the command in docs/reproduction.md)."""
    from multirun_analysis.report import MARKERS, report

    study = REPO / "docs" / "results" / "fig6_study"
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    report([study / "runs"], tmp_path / "out", readme=readme, question="compare=arch,trend=depth")

    def block(text: str) -> str:
        inside = text.split(MARKERS[0], 1)[1].split(MARKERS[1], 1)[0]
        return re.sub(r"\]\([^)]*/(\w+\.png)\)", r"](\1)", inside)  # the figures' links follow --out

    assert block(readme.read_text()) == block((REPO / "README.md").read_text())
    for name in ("table.md", "comparisons.md", "table.csv", "comparisons.csv"):
        assert (tmp_path / "out" / name).read_text() == (study / name).read_text(), name
