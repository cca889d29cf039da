"""The main job fetches its data on first use: once per folder, never half, never silently on a cluster node.

The archive is a tiny CIFAR-10 served on the loopback address (tests/hooks
points torchvision's address and md5 at it); the rest is the user's command.
"""
import json
import re
import subprocess

import pytest

from conftest import ARCHIVE_ENV, TINY_BUDGET, cli, closed_port_url, run_train, train_env, train_in_process
from resnet_cifar.errors import DataError

FETCHING = "downloading http://127.0.0.1:"  # the log line of the process that fetches


def completed(run_dir) -> bool:
    return json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_the_first_run_fetches_its_data_and_says_where_it_goes(tmp_path, archive_server):
    result = run_train(*TINY_BUDGET, "data.root=data", "hydra.run.dir=run", cwd=tmp_path, env=archive_server.env)
    assert result.returncode == 0, result.stderr
    assert f"cifar10 is not in {tmp_path / 'data' / 'cifar-10-batches-py'}: {FETCHING}" in result.stderr
    assert "data.download=false turns this off" in result.stderr
    assert completed(tmp_path / "run") and len(archive_server.downloads) == 1
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]


@pytest.mark.slow
def test_two_first_runs_at_once_download_once(tmp_path, archive_server):
    """One fetches, the other waits for it. The server answers slowly, so that without the wait
    both would be downloading at the same time (and the count below would be 2)."""
    archive_server.delay_s = 4.0
    runs = [subprocess.Popen(cli("resnet_cifar.train", *TINY_BUDGET, "data.root=data",
                              f"hydra.run.dir=run{i}"), cwd=tmp_path, env=train_env(archive_server.env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    assert len(archive_server.downloads) == 1
    assert sum(FETCHING in log for log in logs) == 1
    # the one that waits says who holds the download (a machine-wide lock: filesystem.MachineLock)
    assert sum(bool(re.search(r"another process \(user \S+, pid \d+\) is downloading into", log))
               for log in logs) == 1, logs
    assert all(completed(tmp_path / f"run{i}") for i in range(2))


@pytest.mark.slow
def test_a_sweep_fetches_once_before_its_jobs_start(tmp_path, archive_server):
    """Two jobs at once (joblib): the sweep fetches on the machine it was launched from, then the jobs
    find the data (on a cluster: no compute node downloads)."""
    result = run_train("-m", *TINY_BUDGET, "seed=0,1", "data.root=data", "hydra/launcher=joblib",
                       "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep", cwd=tmp_path, env=archive_server.env)
    assert result.returncode == 0, result.stderr
    assert len(archive_server.downloads) == 1 and result.stderr.count(FETCHING) == 1
    assert result.stderr.index(FETCHING) < result.stderr.index("Launching jobs")
    jobs = [p.parent for p in (tmp_path / "sweep").glob("*/summary.json")]
    assert len(jobs) == 2 and all(completed(job) for job in jobs)


@pytest.mark.slow
def test_a_sweep_whose_jobs_would_share_a_folder_is_refused_before_anything_runs(tmp_path, archive_server):
    """data.root does not name a job's folder: two jobs differing only there would land in one folder,
    and the second would be skipped as completed (found while writing the test above)."""
    result = run_train("-m", *TINY_BUDGET, "data.root=a,b", "hydra.sweep.dir=sweep", cwd=tmp_path,
                       env=archive_server.env)
    assert result.returncode == 2, result.stderr
    assert "jobs of this sweep would share a run folder" in result.stderr
    assert "data.root, data.download, data.workers, logger, logger.experiment, trainer.device, trainer.max_parameters, " \
        "trainer.threads, question, question.compare, question.trend are not part of a job's folder name" in \
        result.stderr
    assert archive_server.downloads == [] and not (tmp_path / "a").exists()
    assert not any((tmp_path / "sweep").glob("*/summary.json"))


@pytest.mark.slow
def test_offline_the_main_job_says_what_to_do_and_leaves_nothing(tmp_path, archive_server):
    work = tmp_path / "work"
    work.mkdir()
    offline = {ARCHIVE_ENV: f"{closed_port_url()} {archive_server.md5}"}
    for sweep in ([], ["-m", "seed=0,1", "hydra.sweep.dir=sweep"]):
        result = run_train(*sweep, *TINY_BUDGET, "data.root=data/cifar", cwd=work, env=offline)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "downloading cifar10 from http://127.0.0.1:" in output and "failed (" in output
        assert "put the official cifar-10-batches-py/ folder under" in output and "docs/guide/setup.md, Data" in output
        assert "Traceback" not in output
        assert list(work.iterdir()) == [] or sweep, list(work.iterdir())  # no data/, no outputs/
        assert not (work / "data").exists()
    assert not any((work / "sweep").glob("*/summary.json"))  # no job started


@pytest.mark.slow
def test_a_run_started_when_download_defaulted_to_false_is_still_its_run(tmp_path, tiny_cifar10, caplog):
    """Where the data comes from is not part of the experiment: the new default does not refuse old runs."""
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", "data.download=false", run_dir=tmp_path / "run")
    caplog.set_level("INFO")
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=tmp_path / "run")
    assert "is already completed" in caplog.text


def test_with_download_off_a_missing_data_set_is_refused_without_a_download(tmp_path, archive_server, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CIFAR10, "url", archive_server.url)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", archive_server.md5)
    with pytest.raises(DataError) as refused:  # exit status 2, as every UserError
        train_in_process(*TINY_BUDGET, f"data.root={tmp_path / 'data'}", "data.download=false",
                         run_dir=tmp_path / "run")
    assert "cifar10 not found: expected data_batch_1" in str(refused.value)
    assert "drop data.download=false" in str(refused.value)
    assert archive_server.downloads == [] and not (tmp_path / "data").exists()
