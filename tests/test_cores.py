"""Threads that suit a busy CPU: a run takes the cores free when it starts, says so in train.log, and on a busy
machine its OpenMP threads wait passively."""
import json
import os
import sys

from conftest import TINY_BUDGET, run_train
from resnet_cifar import cores
from resnet_cifar.cores import choose_threads, passive_wait_if_busy


def test_a_run_takes_the_cores_that_are_free(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    assert choose_threads(None, 1, 8.0).threads == 8  # an idle machine: every core
    assert choose_threads(None, 1, 1.2).threads == 1  # one core free of eight: one thread, not eight spinning
    assert choose_threads(None, 2, 6.0).threads == 3  # two processes of the run share what is free
    assert choose_threads(None, 1, 0.1).threads == 1  # never none
    assert choose_threads(None, 2, None).threads == 4  # unknown: the share of the usable cores
    assert choose_threads(3, 1, 0.5).threads == 3 and "trainer.threads=3" in choose_threads(3, 1, 0.5).reason
    assert choose_threads(None, 1, 8.0, allowed=1).threads == 1  # a launcher's limit (joblib jobs side by side)


def test_openmp_waits_passively_only_on_a_busy_machine_and_never_against_the_users_setting(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    monkeypatch.delenv(cores.WAIT_POLICY_ENV, raising=False)
    assert passive_wait_if_busy(2.0) is None and cores.WAIT_POLICY_ENV not in os.environ
    assert passive_wait_if_busy(0.9).startswith("OMP_WAIT_POLICY=PASSIVE: only 0.9 of 2 cores were free")
    assert os.environ[cores.WAIT_POLICY_ENV] == "PASSIVE"
    monkeypatch.setenv(cores.WAIT_POLICY_ENV, "ACTIVE")
    assert passive_wait_if_busy(0.1) is None and os.environ[cores.WAIT_POLICY_ENV] == "ACTIVE"


def test_one_reading_decides_the_wait_policy_and_the_threads_and_the_log_says_both(monkeypatch):
    """Two readings seconds apart disagreed under a flickering load: train.log said 0.0 cores free and no passive
    waits. The command's reading decides both; a run that starts later in the process reads again."""
    readings = iter([0.4, 2.0, 2.0])
    monkeypatch.setattr(cores, "free_cores", lambda sample_s=cores.SAMPLE_S: next(readings))
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    monkeypatch.setenv(cores.WAIT_POLICY_ENV, "unset below")
    monkeypatch.delenv(cores.WAIT_POLICY_ENV)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as the command starts
    cores.command_start_reading.cache_clear()
    cores.openmp_wait_note.cache_clear()
    try:
        assert cores.openmp_wait_note().startswith("OMP_WAIT_POLICY=PASSIVE: only 0.4 of 2 cores were free")
        assert cores.free_at_run_start() == 0.4  # the same reading, not a second one
        monkeypatch.setattr(cores, "FRESH_S", -1.0)  # a sweep's later job: read again
        assert cores.free_at_run_start() == 2.0
        cores.command_start_reading.cache_clear()
        cores.openmp_wait_note.cache_clear()
        monkeypatch.delenv(cores.WAIT_POLICY_ENV)
        assert cores.openmp_wait_note() == ("OpenMP waits: OpenMP's default (its threads spin a while before they "
                                            "sleep): 2.0 of 2 cores were free when the command started")
        cores.openmp_wait_note.cache_clear()
        monkeypatch.setenv(cores.WAIT_POLICY_ENV, "ACTIVE")
        assert cores.openmp_wait_note().startswith("OpenMP waits: OMP_WAIT_POLICY=ACTIVE, from the environment")
    finally:
        cores.command_start_reading.cache_clear()
        cores.openmp_wait_note.cache_clear()


def test_the_run_says_how_many_threads_it_took_and_why(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*TINY_BUDGET, "trainer.threads=1", f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 thread(s): trainer.threads=1 on cpu" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["num_threads"] == 1


def test_the_launchers_limit_is_read_from_the_environment_not_from_torchs_last_setting(monkeypatch):
    """A joblib job runs in a process an earlier job set torch's threads in; the limit is the launcher's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cores.thread_limit_from_environment() == 3
    for unset in ("", "zero", "0"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert cores.thread_limit_from_environment() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cores.thread_limit_from_environment() is None


def test_importing_the_command_loads_no_torch_and_sets_no_wait_policy():
    """A launcher's job imports resnet_cifar.train to find its task function: nothing may happen then."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != cores.WAIT_POLICY_ENV}
    probe = ("import os, sys, resnet_cifar.train; "
             f"print('torch' in sys.modules, {cores.WAIT_POLICY_ENV!r} in os.environ)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
