"""Jobs started side by side on one machine take different GPUs, whatever started them.

No GPU here: tests/hooks fakes the device count (torch.cuda.is_available and
device_count), and the jobs are real concurrent processes claiming GPUs with
resnet_cifar.placement, as job.run_job does before training.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import FAKE_GPUS_ENV, train_env
from resnet_cifar.errors import ConfigError
from resnet_cifar.placement import claimed_gpus

JOB = """
import json, logging, sys, time
from resnet_cifar.config import Device
from resnet_cifar.placement import gpus_for_job
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
with gpus_for_job(Device.auto, int(sys.argv[1])) as gpus:
    print(json.dumps({"gpus": gpus, "at": time.time()}), flush=True)
    time.sleep(float(sys.argv[2]))
print(json.dumps({"released": time.time()}), flush=True)
"""


def start_jobs(count: int, processes: int, hold_s: float, fake_gpus: int, env: dict | None = None):
    return [subprocess.Popen([sys.executable, "-c", JOB, str(processes), str(hold_s)],
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
def own_lock_folder(tmp_path, monkeypatch):
    """The claims of these tests in a folder of their own (the lock files live in the temporary folder):
    TMPDIR for the processes they start, tempfile's cached answer for this one."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_jobs_at_once_take_different_gpus_and_one_more_waits_for_a_free_one():
    """Three jobs on two GPUs: the first two hold GPUs 0 and 1 at the same time, the third gets one only
    once a job gives it back, and says that it waits."""
    done = results(start_jobs(3, processes=1, hold_s=4.5, fake_gpus=2))
    first, second, late = sorted(done, key=lambda d: d["at"])
    assert {first["gpus"][0], second["gpus"][0]} == {"0", "1"}
    assert second["at"] < first["released"]  # held at the same time
    assert late["at"] >= min(first["released"], second["released"]) - 0.1  # only once one was given back
    assert "waiting for 1 free GPU(s): other runs hold 2 of the 2 visible (0, 1)" in late["log"]
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
