"""Jobs started side by side on one machine take different GPUs, whatever started them.

No GPU here: tests/hooks fakes the device count (torch.cuda.is_available and
device_count), and the jobs are real concurrent processes claiming GPUs with
resnet_cifar.placement, as job.run_job does before training.
"""
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import FAKE_GPUS_ENV, LOCK_NAMESPACE_ENV, cli, train_env
from resnet_cifar import filesystem
from resnet_cifar.errors import ConfigError
from resnet_cifar.placement import claimed_gpus

def start_jobs(count: int, processes: int, hold_s: float, fake_gpus: int, env: dict | None = None,
               fresh: bool = False):
    """`count` processes claiming GPUs (tests/hooks/gpu_claim_job.py), started side by side: forked from the
    warm Python (conftest.cli), so that they start within a fraction of a second of each other, or `fresh`
    interpreters (what they read from the environment while importing is then their own)."""
    args = ("gpu_claim_job", str(processes), str(hold_s))
    return [subprocess.Popen([sys.executable, "-m", *args] if fresh else cli(*args),
                             env=train_env({FAKE_GPUS_ENV: str(fake_gpus), **(env or {})}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]


def results(jobs) -> list[dict]:
    out = []
    for job in jobs:
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, stderr
        claimed, released = (json.loads(line) for line in stdout.splitlines())
        out.append({**claimed, **released, "log": stderr})
    return out


@pytest.fixture(autouse=True)
def own_lock_namespace(tmp_path, monkeypatch):
    """The claims of these tests under a name of their own (claims are machine-wide): for the processes they
    start (tests/hooks) and for this one. TMPDIR is the test's own too, where the claims of old were files."""
    name = f"resnet_cifar-test-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv(LOCK_NAMESPACE_ENV, name)
    monkeypatch.setattr(filesystem, "MACHINE_LOCK_PREFIX", f"\0{name}/".encode())
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.slow
def test_jobs_at_once_take_different_gpus_and_one_more_waits_for_a_free_one():
    """Three jobs on two GPUs: the first two hold GPUs 0 and 1 at the same time, the third gets one only
    once a job gives it back, and says that it waits."""
    done = results(start_jobs(3, processes=1, hold_s=3, fake_gpus=2))
    first, second, late = sorted(done, key=lambda d: d["at"])
    assert {first["gpus"][0], second["gpus"][0]} == {"0", "1"}
    assert second["at"] < first["released"]  # held at the same time
    assert late["at"] >= min(first["released"], second["released"]) - 0.1  # only once one was given back
    user = pwd.getpwuid(os.getuid()).pw_name  # who holds each GPU, as the waiting job says it
    assert re.search(rf"waiting for 1 free GPU\(s\): other runs hold 2 of the 2 visible \(GPU 0: user {user}, "
                     rf"pid \d+; GPU 1: user {user}, pid \d+\)", late["log"]), late["log"]
    assert not any("waiting" in d["log"] for d in (first, second))


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """Three visible GPUs named 1, 4, 6 for this process (as CUDA_VISIBLE_DEVICES=1,4,6 gives)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,4,6")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_a_ddp_job_takes_as_many_gpus_as_processes_among_the_visible_ones(two_fake_gpus):
    from resnet_cifar.config import Device
    from resnet_cifar.placement import gpus_for_job, only_these_gpus

    with gpus_for_job(Device.auto, 2) as ddp:
        with gpus_for_job(Device.auto, 1) as single:  # a second job meanwhile (flock: per open file)
            assert len(ddp) == 2 and set(ddp) | set(single) == {"1", "4", "6"}
        with only_these_gpus(ddp):  # what the job's workers see
            assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(ddp)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,4,6"


def test_under_slurm_the_scheduler_has_placed_the_job(two_fake_gpus, monkeypatch):
    """Each SLURM job sees only its own GPUs (often all named 0): no claims, so no waiting."""
    from resnet_cifar.config import Device
    from resnet_cifar.placement import gpus_for_job

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with gpus_for_job(Device.auto, 1) as one, gpus_for_job(Device.auto, 1) as other:
        assert one == other == ["1"]


def test_cpu_jobs_claim_nothing(two_fake_gpus):
    from resnet_cifar.config import Device
    from resnet_cifar.placement import gpus_for_job

    with gpus_for_job(Device.cpu, 4) as gpus:
        assert gpus is None


def test_more_processes_than_visible_gpus_is_refused():
    with pytest.raises(ConfigError, match="2 processes need 2 GPUs, but only 1 are visible here"):
        with claimed_gpus(2, ["0"]):
            pass


# -- a shared machine: other users, other TMPDIRs, and what they leave in the temporary folder --------------

@pytest.mark.slow
def test_jobs_with_different_tmpdirs_take_different_gpus(tmp_path):
    """The claims were files in the temporary folder, so jobs with different TMPDIRs both took GPU 0. Fresh
    interpreters: a warm fork would share whatever the project read from TMPDIR while it was imported."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    jobs = [start_jobs(1, processes=1, hold_s=6, fake_gpus=2, env={"TMPDIR": str(tmp_path / name)}, fresh=True)[0]
            for name in ("a", "b")]
    first, second = sorted(results(jobs), key=lambda d: d["at"])
    assert second["at"] < first["released"]  # held at the same time
    assert {first["gpus"][0], second["gpus"][0]} == {"0", "1"}, (first, second)


@pytest.mark.slow
@pytest.mark.parametrize("left", ["symlink", "fifo", "unreadable"])
def test_what_another_user_left_in_the_temporary_folder_changes_nothing(tmp_path, left):
    """Another user's symbolic link where a claim's file was made a root job create the link's target; a FIFO
    blocked the job in open() for ever; a lock file left with mode 0600 by a user with umask 077 failed the
    next user's job with a PermissionError. Claims are no files now: all three are ignored."""
    target = tmp_path / "elsewhere" / "created-by-the-job"
    target.parent.mkdir()
    for gpu in ("0", "1"):
        path = tmp_path / f"resnet_cifar-gpu-{gpu}.lock"
        if left == "symlink":
            path.symlink_to(target)
        elif left == "fifo":
            os.mkfifo(path)
        else:
            path.write_text("")
            path.chmod(0o000)
    started = time.monotonic()
    (done,) = results(start_jobs(1, processes=2, hold_s=0, fake_gpus=2))
    assert sorted(done["gpus"]) == ["0", "1"]
    assert time.monotonic() - started < 60
    assert not target.exists()


def test_a_claim_is_released_with_its_process_and_never_kept_by_a_forked_child():
    """A DataLoader worker (a forked child) outliving a killed job must not keep its GPU held."""
    lock = filesystem.MachineLock("gpu-0")
    child = None
    try:
        assert lock.try_acquire()
        assert not filesystem.MachineLock("gpu-0").try_acquire()  # held
        ready, tell = os.pipe()
        child = os.fork()
        if child == 0:  # the child: running (its fork hooks have run), it lives on, as a DataLoader worker would
            os.write(tell, b"1")
            time.sleep(30)
            os._exit(0)
        assert os.read(ready, 1) == b"1"
        lock.release()  # the parent ends its claim (as when it is killed); the child still lives
        other = filesystem.MachineLock("gpu-0")
        assert other.try_acquire(), "the forked child kept the claim"
        other.release()
    finally:
        lock.release()
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
