"""The user's commands against a real SLURM cluster (tests/slurm/cluster.sh: one node, Slurm 22.05).

Every job goes through sbatch, runs under slurmd, is watched with sacct by
submitit and is preempted or timed out by Slurm itself.
"""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import SLOW_STEP_ENV as SLOW_ENV, TINY_BUDGET, cli, run_train, train_env

CLUSTER_SH = Path(__file__).parent / "slurm" / "cluster.sh"
FOREIGN_CONFIG = 3  # cluster.sh's exit status for a slurm.conf it did not write
BUDGET = tuple(o for o in TINY_BUDGET if not o.startswith("depth="))
ON_THE_TEST_NODE = ("hydra/launcher=slurm", "trainer.device=cpu", "hydra.launcher.cpus_per_task=1",
                    "hydra.launcher.mem_gb=2")
TIMING_COLUMNS = ["elapsed_s", "images_per_s"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]


@pytest.fixture(scope="session")
def slurm_cluster():
    """The test cluster, started if need be (idempotent, and safe from two pytest-xdist workers at once)."""
    if not (shutil.which("sbatch") and shutil.which("slurmctld")):
        pytest.skip("Slurm is not installed: `sudo tests/slurm/cluster.sh start` installs and starts a "
                    "one-node test cluster (Debian), then these tests run")
    if os.geteuid() != 0:
        pytest.skip("the test cluster is started as root: `sudo tests/slurm/cluster.sh start`")
    started = subprocess.run([str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode == FOREIGN_CONFIG:
        pytest.skip(started.stderr.strip())
    assert started.returncode == 0, started.stdout + started.stderr


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def sacct_final_state(job: str, timeout_s: float = 60) -> str:
    """The job's state in Slurm's accounting once it has ended (submitit returns when the result is
    written, a moment before the job step ends)."""
    until = time.monotonic() + timeout_s
    while True:
        state = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], capture_output=True,
                               text=True, check=True).stdout.strip()
        if state not in ("", "PENDING", "RUNNING", "COMPLETING", "REQUEUED") or time.monotonic() > until:
            return state
        time.sleep(0.5)


def metrics_without_timing(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING_COLUMNS)


def test_the_users_sweep_runs_through_sbatch_and_a_relaunch_reruns_nothing(tiny_cifar10, tmp_path):
    command = ("-m", "depth=20,56", "arch=plain,resnet", *ON_THE_TEST_NODE, *BUDGET,
               f"data.root={tiny_cifar10}", "hydra.sweep.dir=sweep")
    first = run_train(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    done = summaries(tmp_path / "sweep")
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values()), done
    assert all(sacct_final_state(s["slurm"]["job"]) == "COMPLETED" for s in done.values())
    kept = {p: p.read_bytes() for p in (tmp_path / "sweep").glob("*/*") if p.suffix in (".csv", ".json", ".pt")}

    again = run_train(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "sweep of 4 jobs in sweep: 4 done, 0 to resume, 0 new" in again.stderr
    assert all(p.read_bytes() == data for p, data in kept.items())  # nothing trained, nothing rewritten


def test_a_failing_grid_point_is_listed_and_the_others_complete(tiny_cifar10, tmp_path):
    """A job that fails only once it runs on its node (its held-out split does not fit the data)."""
    result = run_train("-m", "depth=8", "data.val_size=0,1000", *ON_THE_TEST_NODE, *BUDGET,
                       f"data.root={tiny_cifar10}", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1
    assert "1 of 2 jobs did not complete" in result.stderr and "data.val_size=1000" in result.stderr
    done = summaries(tmp_path / "sweep")
    failed = next(s for name, s in done.items() if "val_size=1000" in name)
    completed = next(s for name, s in done.items() if "val_size=0" in name)
    assert failed["status"] == "failed" and "data.val_size=1000 is not allowed" in failed["error"]
    assert completed["status"] == "completed" and completed["slurm"]["job"]


def test_a_ddp_job_inside_slurm_completes_in_one_run_folder(tiny_cifar10, tmp_path):
    result = run_train("-m", "depth=8", "trainer.nproc_per_node=2", *ON_THE_TEST_NODE,
                       "hydra.launcher.cpus_per_task=2", *BUDGET, f"data.root={tiny_cifar10}",
                       "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = summaries(tmp_path / "sweep")
    assert len(done) == 1
    (summary,) = done.values()
    assert summary["status"] == "completed" and summary["processes"] == 2 and summary["slurm"]["job"]


def start_sweep(*overrides: str, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cli("resnet_cifar.train", "-m", *overrides), cwd=cwd,
                            env=train_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path_glob: str, folder: Path, timeout_s: float = 120) -> Path:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        found = sorted(folder.glob(path_glob))
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {path_glob} under {folder} after {timeout_s} s")


def test_a_preempted_job_is_requeued_and_ends_as_an_uninterrupted_run(tiny_cifar10, tmp_path):
    """`scontrol requeue` (what preemption does): SIGTERM, a checkpoint, the same job again, a resume."""
    config = ("depth=8", *BUDGET, "trainer.max_iters=24", "schedule.milestones=[12,18]", "trainer.device=cpu",
              f"data.root={tiny_cifar10}")
    sweep = start_sweep(*config, *ON_THE_TEST_NODE, "hydra.sweep.dir=sweep", cwd=tmp_path,
                        env={SLOW_ENV: "0.4"})
    checkpoint = wait_for("*/checkpoint.pt", tmp_path / "sweep")
    run_dir = checkpoint.parent
    job_id = json.loads((run_dir / "summary.json").read_text())["slurm"]["job"]
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["slurm"]["restart_count"] == 1
    log = (run_dir / "train.log").read_text()
    assert "stopped by SIGTERM at iteration" in log and "resuming from" in log

    reference = run_train(*config, "hydra.run.dir=reference", cwd=tmp_path)  # not interrupted, not SLURM
    assert reference.returncode == 0, reference.stderr
    pd.testing.assert_frame_equal(metrics_without_timing(run_dir), metrics_without_timing(tmp_path / "reference"))


def test_a_job_past_its_time_limit_checkpoints_is_requeued_by_submitit_and_completes(tiny_cifar10, tmp_path):
    """Slurm's pre-timeout signal (submitit's USR2, signal_delay_s before the limit) on a job whose
    training is longer than its 1-minute limit. Requeued attempts run at full speed, but on a loaded machine
    an attempt's start-up can take most of its minute (a CI run got 12, then about 30 iterations an attempt):
    the training is kept short after the first stop and submitit may requeue up to 5 times."""
    max_requeues = 5
    sweep = start_sweep("depth=8", *BUDGET, "trainer.max_iters=120", "schedule.milestones=[60,90]",
                        f"data.root={tiny_cifar10}", *ON_THE_TEST_NODE, "hydra.launcher.timeout_min=1",
                        "hydra.launcher.signal_delay_s=20", f"hydra.launcher.max_num_timeout={max_requeues}",
                        "hydra.sweep.dir=sweep", cwd=tmp_path, env={SLOW_ENV: "0.5"})  # 60 s at that speed
    out, err = sweep.communicate(timeout=400)
    assert sweep.returncode == 0, err
    (summary,) = summaries(tmp_path / "sweep").values()
    assert summary["status"] == "completed" and summary["iteration"] == 120
    assert 1 <= summary["slurm"]["restart_count"] <= max_requeues
    (run_dir,) = (tmp_path / "sweep").glob("*/summary.json")
    log = run_dir.parent.joinpath("train.log").read_text()
    stopped = [int(i) for i in re.findall(r"stopped by SIGUSR2 at iteration (\d+)", log)]
    resumed = [int(i) for i in re.findall(r"checkpoint.pt at iteration (\d+)", log)]
    assert stopped and stopped == resumed, log  # each run went on from where the signal stopped the last


@pytest.mark.parametrize("request_,reason", [
    (["hydra.launcher.mem_gb=64"], "Requested node configuration is not available"),
    (["hydra.launcher.cpus_per_task=3"], "More processors requested than permitted"),
    (["trainer.device=auto", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"],
     "Invalid generic resource (gres) specification"),  # a GPU on a cluster without one
], ids=["memory", "cpus", "gpu"])
def test_a_request_the_cluster_cannot_meet_is_refused_before_anything_is_submitted(tiny_cifar10, tmp_path,
                                                                                   request_, reason):
    result = run_train("-m", "depth=8", "hydra/launcher=slurm", "trainer.device=cpu", "hydra.launcher.cpus_per_task=1",
                       "hydra.launcher.mem_gb=2", *request_, *BUDGET, f"data.root={tiny_cifar10}",
                       "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error: SLURM refuses the jobs of this sweep (" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_starting_the_running_cluster_again_twice_at_once_changes_nothing():
    """What two pytest-xdist workers do: both `start`s return at once, and no daemon is started twice."""
    def daemons() -> list[str]:  # not the node's state: other tests' jobs may come and go meanwhile
        status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True, check=True).stdout
        return [line for line in status.splitlines() if not line.startswith("node ")]

    before = daemons()
    starts = [subprocess.Popen([str(CLUSTER_SH), "start"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [start.communicate(timeout=120)[0] for start in starts]
    assert [start.returncode for start in starts] == [0, 0], outputs
    assert not any("started" in out for out in outputs), outputs
    assert daemons() == before and any(line.startswith("slurmctld: running (pid") for line in before)
