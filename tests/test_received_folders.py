"""A run folder from someone else is data, not code: what it names is never imported unless the person running
the command trusts it, and what the report writes from it stays in --out and between the README's markers.
Every case here was an attack that worked before (issue 34)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY_BUDGET, cli, train_env, train_in_process
from multirun_analysis.report import MARKERS, report
from resnet_cifar.errors import UserError
from resnet_cifar.evaluate import main as evaluate
from resnet_cifar.saved_run import load_run
from resnet_cifar.trust import UntrustedCode, builtin_targets

REPO = Path(__file__).resolve().parent.parent
# what the attacker wrote into a received summary.json: each runs `touch PWNED` when called
ATTACKS = {
    "os.system": {"_target_": "os.system", "command": "touch PWNED", "name": "per_pixel_mean"},
    "subprocess.call": {"_target_": "subprocess.call", "args": ["touch", "PWNED"], "name": "per_pixel_mean"},
}


@pytest.fixture(scope="module")
def trained(tiny_cifar10, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("received") / "run"
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    return run_dir


def received(trained: Path, where: Path, change=None) -> Path:
    """A copy of the run, its summary.json edited as someone else's folder might hold it."""
    folder = where / "arch=resnet,depth=8"
    shutil.copytree(trained, folder)
    if change is not None:
        summary = json.loads((folder / "summary.json").read_text())
        change(summary)
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def with_node(group: str, node: dict):
    return lambda summary: summary["config"].update({group: node})


@pytest.mark.parametrize("group", ["normalization", "arch"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_evaluate_and_load_run_refuse_code_a_folder_names_and_run_none_of_it(trained, tmp_path, monkeypatch, capsys,
                                                                             group, attack):
    monkeypatch.chdir(tmp_path)
    folder = received(trained, tmp_path / "sweep", with_node(group, ATTACKS[attack]))
    assert evaluate([str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / 'summary.json'} names {group}._target_: "
                                                   f"{attack}, which is not one of this package's {group} "
                                                   "plug-ins"), err
    assert f"--trust-code {attack.rpartition('.')[0]}" in err
    with pytest.raises(UntrustedCode):
        load_run(folder)
    with pytest.raises(UntrustedCode):
        torch.hub.load(str(REPO), "from_run", source="local", run_dir=str(folder))
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_a_summary_nested_past_pythons_limit_is_one_line_in_evaluate_and_the_report(tmp_path, monkeypatch, capsys):
    """A summary.json nested 100,000 deep ended evaluate with a RecursionError traceback."""
    folder = tmp_path / "sweep" / "deep"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    assert evaluate([str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder / 'summary.json'} is unreadable" in err, err
    with pytest.raises(Exception, match="is unreadable") as refused:
        load_run(folder)
    assert not isinstance(refused.value, RecursionError)
    fake_run(tmp_path / "sweep" / "fine")
    account = report([tmp_path / "sweep"], tmp_path / "report")
    assert f"skipped {folder}: summary.json is unreadable" in account


def test_nothing_is_imported_to_decide(trained, tmp_path, monkeypatch):
    """The decision is made on the recorded text: a module whose import alone would do something is never
    imported for a folder that names it."""
    (tmp_path / "imported_marker.py").write_text("import pathlib\npathlib.Path('IMPORTED').touch()\n"
                                                 "class Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    folder = received(trained, tmp_path / "sweep", with_node("arch", {"_target_": "imported_marker.Net", "name": "x"}))
    with pytest.raises(UntrustedCode, match="names arch._target_: imported_marker.Net"):
        load_run(folder)
    assert not (tmp_path / "IMPORTED").exists() and "imported_marker" not in sys.modules


def test_a_users_own_normalization_loads_once_its_module_is_trusted(trained, tmp_path, monkeypatch):
    """By keyword, by --trust-code, or by the per-user allow-list; a module trusts what lies below it only."""
    (tmp_path / "my_norms.py").write_text("from resnet_cifar.data.normalization import PerPixelMean\n"
                                          "class Mine(PerPixelMean):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = received(trained, tmp_path / "sweep", with_node("normalization", {"_target_": "my_norms.Mine",
                                                                                "name": "mine"}))
    with pytest.raises(UntrustedCode, match=r"add the line my_norms to .*config/resnet_cifar/trusted_code"):
        load_run(folder)
    with pytest.raises(UntrustedCode):
        load_run(folder, trust_code=["my_norms_other"])  # a prefix of the name is not the module
    assert type(load_run(folder, trust_code="my_norms").normalize.normalization).__name__ == "Mine"
    assert evaluate([str(folder), "--out", str(tmp_path / "out"), "--trust-code", "my_norms"]) == 0
    (tmp_path / "config" / "resnet_cifar").mkdir(parents=True)
    (tmp_path / "config" / "resnet_cifar" / "trusted_code").write_text("# my lab's code\nmy_norms  # mine\n")
    assert type(load_run(folder).normalize.normalization).__name__ == "Mine"
    with pytest.raises(UserError, match="'my norms' is not a module path"):
        load_run(folder, trust_code=["my norms"])


def test_the_packages_own_plugins_are_the_targets_of_conf():
    assert "resnet_cifar.models.resnet.cifar_resnet" in builtin_targets("arch")
    assert "resnet_cifar.data.normalization.ZCAWhitening" in builtin_targets("normalization")
    assert "resnet_cifar.data.normalization.ZCAWhitening" not in builtin_targets("arch")
    for group in ("arch", "normalization", "optimizer", "logger"):
        assert not any(target.startswith(("os.", "subprocess.", "builtins.")) for target in builtin_targets(group))


@pytest.mark.slow
def test_the_report_keeps_the_numbers_of_an_untrusted_run_and_leaves_it_out_of_figure_7(trained, tmp_path,
                                                                                       monkeypatch, tiny_cifar10):
    """Under the default multirun/ too, as `python -m multirun_analysis.report` with no folder reads it."""
    monkeypatch.chdir(tmp_path)
    received(trained, tmp_path / "multirun" / "theirs", with_node("normalization", ATTACKS["os.system"]))
    result = subprocess.run(cli("multirun_analysis.report", "--out", "reports", "--data", str(tiny_cifar10)),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=train_env())
    assert result.returncode == 0, result.stderr
    assert "Figure 7 leaves out arch=resnet (1 run): it cannot be loaded here: " in result.stdout
    assert "names normalization._target_: os.system" in result.stdout and "--trust-code os" in result.stdout
    assert len(pd.read_csv(tmp_path / "reports" / "runs.csv")) == 1  # its numbers are data
    assert "| 8 | resnet |" in (tmp_path / "reports" / "table.md").read_text()
    assert not (tmp_path / "PWNED").exists()


# -- what the report writes stays in --out and between the markers ----------------------------------------------

def fake_run(folder: Path, config_change=None, seed: int = 0, **summary_values) -> Path:
    """A completed run folder of the report's own kind (no training), its config changed as a received one's."""
    from test_report import composed, write_run

    run = write_run(folder, ["depth=20", f"seed={seed}"], 10.0 + seed)
    summary = json.loads((run / "summary.json").read_text())
    summary["config"] = composed("depth=20", f"seed={seed}")
    if config_change:
        config_change(summary["config"])
    summary.update(summary_values)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.mark.parametrize("key", ["/some/dir/x_fig", "sub/dir", "../../escaped", ".hidden"])
def test_a_figure_named_by_a_recorded_key_stays_in_out_and_keeps_its_title(tmp_path, key):
    for seed, value in ((0, 1), (1, 2)):
        fake_run(tmp_path / "runs" / f"run{seed}", lambda c, v=value: c.update({key: v}), seed=seed)
    out = tmp_path / "deep" / "out"
    account = report([tmp_path / "runs"], out)
    assert not Path("/some/dir").exists() and not (tmp_path / "escaped.png").exists()
    inside = {p.name for p in out.iterdir()}
    figures = [name for name in inside if name.endswith(".png") and name not in ("fig6.png", "depth.png")]
    assert len(figures) == 1 and not figures[0].startswith(".") and "/" not in figures[0], inside
    assert figures[0] in account
    assert all(p.resolve().parent == out.resolve() for p in out.rglob("*"))


def test_two_keys_that_make_the_same_file_name_get_two_files(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / f"run{seed}", lambda c, s=seed: c.update({"a/b": s, "a_b": s}), seed=seed)
    report([tmp_path / "runs"], tmp_path / "out")
    assert len([p for p in (tmp_path / "out").glob("a_b*.png")]) == 2


HOSTILE_VALUE = "x | y\n<!-- results:end -->\n```\nrm -rf ~\n```"


def test_a_recorded_value_never_changes_the_structure_of_what_the_report_writes(tmp_path):
    """A value with a `|`, a newline, the README's end marker and a code fence: one cell, one verdict line, one
    shell word; the README changes between its markers only, and a later clean report replaces all of it."""
    for seed, value in ((0, HOSTILE_VALUE), (1, "plain")):
        for run_seed in (seed * 2, seed * 2 + 1):
            fake_run(tmp_path / "runs" / f"run{run_seed}", lambda c, v=value: c["data"].update(pipeline=v),
                     seed=run_seed, overrides=["depth=20", f"seed={run_seed}", f"data.pipeline={value}"])
    readme = tmp_path / "README.md"
    before, after = "# mine\n\nintro\n\n", "\n\n## after\n"
    readme.write_text(f"{before}{MARKERS[0]}\nold\n{MARKERS[1]}{after}")
    report([tmp_path / "runs"], tmp_path / "out", readme=readme)
    text = readme.read_text()
    assert text.startswith(before + MARKERS[0]) and text.endswith(MARKERS[1] + after)
    assert text.count(MARKERS[0]) == 1 and text.count(MARKERS[1]) == 1
    table = (tmp_path / "out" / "table.md").read_text()
    rows = [line for line in table.split("\n\n")[0].splitlines() if line.startswith("| 20 |")]
    columns = len(table.splitlines()[0].split(" | "))
    assert len(rows) == 2 and all(len(row.split(" | ")) == columns for row in rows), rows
    assert all(line.count("```") in (0,) or line.startswith("```") for line in table.splitlines())
    block = table[table.index("```bash"):]
    commands = block.split("\n```")[0].splitlines()[1:]
    assert commands and all(line.startswith("python -m resnet_cifar.train -m ") for line in commands), commands
    hostile = [c for c in commands if "x | y" in c or "x\\x20" in c or "$'" in c]
    assert hostile, commands
    printed = subprocess.run(["bash", "-c", f"printf '%s\\0' {hostile[0].split('-m ', 2)[2]}"], capture_output=True,
                             text=True).stdout.split("\0")
    assert f"data.pipeline={HOSTILE_VALUE}" in printed  # bash reads back the value as it was recorded
    comparisons = (tmp_path / "out" / "comparisons.md").read_text()
    assert all(line.count(" | ") == comparisons.splitlines()[2].count(" | ") for line in comparisons.splitlines()[2:]
               if line.startswith("| "))
    for seed in range(4):  # the same runs, the value made plain: the README block is replaced whole
        summary = json.loads((tmp_path / "runs" / f"run{seed}" / "summary.json").read_text())
        summary["config"]["data"]["pipeline"] = "device" if seed < 2 else "torchvision"
        summary["overrides"] = ["depth=20", f"seed={seed}"]
        (tmp_path / "runs" / f"run{seed}" / "summary.json").write_text(json.dumps(summary))
    report([tmp_path / "runs"], tmp_path / "out2", readme=readme)
    assert "rm -rf" not in readme.read_text() and "x | y" not in readme.read_text()


HIDDEN_VALUE = "a\x1b[2Jb\u202ec\x85d<\U0001F600é"  # a terminal's clear screen, a right-to-left override, C1


def test_a_recorded_value_with_hidden_characters_is_shown_escaped_and_its_command_reads_it_back(tmp_path):
    """ESC sequences ran in the terminal that showed table.md, and a right-to-left override could make text
    read as something else; a character past U+FFFF in a printed command was read back by bash as another."""
    import unicodedata

    for seed, value in ((0, HIDDEN_VALUE), (1, "plain")):
        for run_seed in (seed * 2, seed * 2 + 1):
            fake_run(tmp_path / "runs" / f"run{run_seed}", lambda c, v=value: c["data"].update(pipeline=v),
                     seed=run_seed, overrides=["depth=20", f"seed={run_seed}", f"data.pipeline={value}"])
    readme = tmp_path / "README.md"
    readme.write_text(f"{MARKERS[0]}\n{MARKERS[1]}\n")
    report([tmp_path / "runs"], tmp_path / "out", readme=readme)
    for path in (tmp_path / "out" / "table.md", tmp_path / "out" / "comparisons.md", readme):
        text = path.read_text()
        assert not [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")], path
        assert "a\\\\x1b\\[2Jb\\\\u202ec d&lt;" in text, path  # the escapes that name them (NEL: a line break)
    table = (tmp_path / "out" / "table.md").read_text()
    command = next(line for line in table.splitlines() if line.startswith("python -m resnet_cifar.train") and "$'" in line)
    printed = subprocess.run(["bash", "-c", f"printf '%s\\0' {command.split('-m ', 2)[2]}"], capture_output=True,
                             env={"LANG": "C.UTF-8", "PATH": os.environ["PATH"]}).stdout.decode().split("\0")
    assert f"data.pipeline={HIDDEN_VALUE}" in printed, printed


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0, 150.0])
def test_a_test_error_that_cannot_be_one_leaves_its_run_out_as_damaged(tmp_path, value):
    for seed in range(3):
        fake_run(tmp_path / "runs" / f"run{seed}", seed=seed, **({"test_error": value} if seed == 0 else {}))
    account = report([tmp_path / "runs"], tmp_path / "out")
    assert f"skipped {tmp_path / 'runs' / 'run0'}: summary.json says test_error: '{value}', not a finite number " \
           "in [0, 100]: left out as damaged" in account
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert table["n"].tolist() == [2] and table["mean"].tolist() == [11.5]


@pytest.mark.parametrize("field, value, what", [
    ("source", "x", "a mapping of commit (text) and dirty"), ("params", "abc", "a whole number >= 0"),
    ("params", float("inf"), "a whole number >= 0"), ("params", [1], "a whole number >= 0"),
    ("status", ["x"], "one of running, completed, failed, diverged, interrupted, unknown"),
    ("train_images", "lots", "a whole number >= 0"), ("wall_time_s", -3.0, "a finite number >= 0")])
def test_a_field_of_the_wrong_type_leaves_its_run_out_as_damaged_not_the_report(tmp_path, field, value, what):
    """Each of these aborted the whole report with a traceback (one received folder stopped every report)."""
    for seed in range(3):
        fake_run(tmp_path / "runs" / f"run{seed}", seed=seed, **({field: value} if seed == 0 else {}))
    account = report([tmp_path / "runs"], tmp_path / "out")
    assert f"skipped {tmp_path / 'runs' / 'run0'}: summary.json says {field}: {str(value)[:40]!r}, not {what}: " \
           "left out as damaged" in account
    assert pd.read_csv(tmp_path / "out" / "table.csv")["n"].tolist() == [2]


def test_text_that_is_not_unicode_leaves_its_run_out_not_the_report(tmp_path):
    """JSON's "\\ud800" reads as a lone surrogate: writing runs.csv then failed, ending the whole report."""
    for seed in range(3):
        run = fake_run(tmp_path / "runs" / f"run{seed}", seed=seed)
    (run / "summary.json").write_text((run / "summary.json").read_text().replace('"completed"', '"completed", '
                                                                                  '"note": "\\ud800"', 1))
    account = report([tmp_path / "runs"], tmp_path / "out")
    assert f"skipped {run}: summary.json holds text that is not Unicode" in account
    assert pd.read_csv(tmp_path / "out" / "table.csv")["n"].tolist() == [2]


@pytest.mark.parametrize("column, value, why", [
    ("params", "abc", "runs.csv says params: 'abc', not a whole number >= 0: left out as damaged"),
    ("test_error", None, "runs.csv says completed, but with test_error=None at iteration 64000 of 64000: not believed"),
])
def test_a_bad_cell_in_an_earlier_reports_runs_csv_leaves_its_row_out(tmp_path, column, value, why):
    """A word in a number's column; a blank test error of a completed run (it once became p = 0, a claim)."""
    for seed in range(3):
        fake_run(tmp_path / "runs" / f"run{seed}", seed=seed)
    report([tmp_path / "runs"], tmp_path / "out")
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    runs[column] = runs[column].astype(object)
    runs.loc[0, column] = value
    (tmp_path / "given").mkdir()
    runs.to_csv(tmp_path / "given" / "runs.csv", index=False)
    account = report([tmp_path / "given" / "runs.csv"], tmp_path / "again")
    assert f"(in {tmp_path / 'given' / 'runs.csv'}): {why}" in account, account
    assert pd.read_csv(tmp_path / "again" / "table.csv")["n"].tolist() == [2]


def test_a_symlinked_run_folder_in_a_sweep_is_left_out_with_a_line(tmp_path):
    for seed in range(2):
        fake_run(tmp_path / "runs" / f"run{seed}", seed=seed)
    fake_run(tmp_path / "elsewhere" / "run9", seed=9)
    (tmp_path / "runs" / "linked").symlink_to(tmp_path / "elsewhere" / "run9")
    account = report([tmp_path / "runs"], tmp_path / "out")
    assert f"skipped {tmp_path / 'runs' / 'linked'}: a symbolic link (to {tmp_path / 'elsewhere' / 'run9'}), not " \
           "a run folder of" in account
    assert pd.read_csv(tmp_path / "out" / "table.csv")["n"].tolist() == [2]


# -- what the review of the first round found --------------------------------------------------------------------

def test_a_packages_plugin_of_another_group_is_not_trusted_as_this_one(trained, tmp_path, monkeypatch):
    """A tracker class named as the normalization would write where the folder says (run_dir=...)."""
    monkeypatch.chdir(tmp_path)
    node = {"_target_": "resnet_cifar.trackers.tensorboard.TensorBoardTracker", "run_dir": str(tmp_path / "escaped"),
            "config": {}, "resumed_at": 0, "name": "per_pixel_mean"}
    folder = received(trained, tmp_path / "sweep", with_node("normalization", node))
    with pytest.raises(UntrustedCode, match="which is not one of this package's normalization plug-ins"):
        load_run(folder)
    assert not (tmp_path / "escaped").exists()


def test_a_trusted_module_does_not_lend_its_trust_to_what_it_imports(trained, tmp_path, monkeypatch):
    (tmp_path / "lending_nets.py").write_text("import os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    node = {"_target_": "lending_nets.os.system", "command": "touch PWNED", "name": "per_pixel_mean"}
    folder = received(trained, tmp_path / "sweep", with_node("normalization", node))
    with pytest.raises(UserError, match=r"lending_nets.os.system leads to posix.system, which a trusted module only "
                                        r"imported: it is not trusted"):
        load_run(folder, trust_code=["lending_nets"])
    assert not (tmp_path / "PWNED").exists()


def test_file_names_made_from_keys_stay_unique_whatever_the_keys_are():
    from multirun_analysis.plots import factor_files
    from resnet_cifar.filesystem import safe_name

    import hashlib

    crafted = f"x_y_{hashlib.sha1(b'x_y').hexdigest()[:10]}"  # the name the second key would be given
    names = factor_files(["x/y", "x_y", crafted, "fig6"])
    assert len(set(names.values())) == 4 and "fig6.png" not in names.values(), names
    assert safe_name("a/b", taken={"a_b"}) != "a_b"


def test_a_recorded_override_that_sets_code_or_hydra_is_never_printed_to_run(tmp_path):
    for seed in range(2):
        fake_run(tmp_path / "runs" / f"run{seed}", seed=seed, overrides=[
            "depth=20", f"seed={seed}", "normalization._target_=os.system", "+normalization.command=touch PWNED",
            "hydra.run.dir=/tmp/elsewhere"])
    account = report([tmp_path / "runs"], tmp_path / "out")
    assert "python -m resnet_cifar.train -m" in account
    assert "os.system" not in account and "PWNED" not in account and "hydra.run.dir" not in account
    assert "os.system" not in (tmp_path / "out" / "table.md").read_text()


def test_a_symbolic_link_to_a_sweep_folder_is_said_too(tmp_path):
    for seed in range(2):
        fake_run(tmp_path / "theirs" / f"run{seed}", seed=seed)
    fake_run(tmp_path / "mine" / "run0", seed=5)
    (tmp_path / "mine" / "linked_sweep").symlink_to(tmp_path / "theirs")
    account = report([tmp_path / "mine"], tmp_path / "out")
    assert f"skipped {tmp_path / 'mine' / 'linked_sweep'}: a symbolic link (to {tmp_path / 'theirs'}), not a " \
           "folder of" in account
