"""A run folder written by older code resumes and reports with today's (tests/fixtures/README.md)."""
import shutil
from pathlib import Path

import pytest

from conftest import TINY_BUDGET, write_cifar10
from test_train import numbers, read_metrics, train_ok

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.slow
def test_a_run_folder_from_before_the_refactor_resumes_to_the_same_metrics_and_reports(tmp_path):
    """Written before data.pipeline, data.workers and logger existed, with data.augment: true."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_before_refactor", run_dir)
    data = write_cifar10(tmp_path / "data")  # the same tiny set, written again (seeded)
    from resnet_cifar import load_run

    interrupted = load_run(run_dir, data_root=data, checkpoint=True)  # usable as it is
    assert interrupted.iteration == 8 and interrupted.config.augment["name"] == "random"
    resumed = train_ok(*TINY_BUDGET, f"data.root={data}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert f"resuming from {run_dir / 'checkpoint.pt'} at iteration 8" in resumed.stderr
    expected = tmp_path / "expected"
    expected.mkdir()
    shutil.copy(FIXTURES / "run_before_refactor.expected_metrics.csv", expected / "metrics.csv")
    assert numbers(read_metrics(run_dir)) == numbers(read_metrics(expected))

    from multirun_analysis.report import main as report
    report([str(run_dir), "--out", str(tmp_path / "report")])
    runs = (tmp_path / "report" / "runs.csv").read_text()
    assert str(run_dir) in runs and "completed" in runs


def test_the_old_augment_key_on_todays_command_line_is_one_clear_line(tmp_path):
    """data.augment=true (an older version's docs, an old sweep's command) is refused before anything runs,
    naming what to write today; the report's add-seeds command writes recorded ones as today's."""
    from conftest import run_train
    from multirun_analysis.more_seeds import todays_override

    result = run_train("data.augment=true", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines() == [
        "error: data.augment=true: data.augment is no longer a key; write augment=random|static|none "
        "(augmentation is a plug-in group now). An old sweep that used it is relaunched with the version that "
        "started it."]
    assert [todays_override(o) for o in ("data.augment=true", "+data.augment=false", "data.augment=static",
                                         "depth=20")] == ["augment=random", "augment=none", "augment=static",
                                                          "depth=20"]
