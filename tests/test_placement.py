"""Jobs started side by side on one machine take different GPUs, whatever started them.

No GPU here: tests/hooks fakes the device count (torch.cuda.is_available and
device_count), and the jobs are real concurrent processes claiming GPUs with
resnet_cifar.placement, as job.run_job does before training.
"""
import json
import subprocess
import sys

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
    """The claims of these tests in a folder of their own (the lock files live in the temporary folder)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def test_four_jobs_at_once_on_four_gpus_take_one_each():
    done = results(start_jobs(4, processes=1, hold_s=6, fake_gpus=4))
    assert sorted(g for d in done for g in d["gpus"]) == ["0", "1", "2", "3"]
    assert max(d["at"] for d in done) < min(d["released"] for d in done)  # all four held at the same time
    assert not any("waiting" in d["log"] for d in done)


def test_more_jobs_than_gpus_wait_for_a_free_one():
    done = results(start_jobs(3, processes=1, hold_s=6, fake_gpus=2))
    first, second, late = sorted(done, key=lambda d: d["at"])
    assert {first["gpus"][0], second["gpus"][0]} == {"0", "1"}
    assert late["at"] >= min(first["released"], second["released"]) - 0.1  # only once one was given back
    assert "waiting for 1 free GPU(s): other runs hold 2 of the 2 visible (0, 1)" in late["log"]


def test_a_ddp_job_takes_as_many_gpus_as_processes_among_the_visible_ones():
    ddp, single = results([*start_jobs(1, processes=2, hold_s=6, fake_gpus=3, env={"CUDA_VISIBLE_DEVICES": "1,4,6"}),
                           *start_jobs(1, processes=1, hold_s=6, fake_gpus=3, env={"CUDA_VISIBLE_DEVICES": "1,4,6"})])
    assert len(ddp["gpus"]) == 2 and set(ddp["gpus"]) | set(single["gpus"]) == {"1", "4", "6"}


def test_under_slurm_the_scheduler_has_placed_the_job():
    """Each SLURM job sees only its own GPUs (often all named 0): no claims, no waiting."""
    done = results(start_jobs(2, processes=1, hold_s=3, fake_gpus=1, env={"SLURM_JOB_ID": "7"}))
    assert [d["gpus"] for d in done] == [["0"], ["0"]]
    assert all(abs(d["at"] - done[0]["at"]) < 3 for d in done)  # neither waited for the other


def test_more_processes_than_visible_gpus_is_refused():
    with pytest.raises(ConfigError, match="2 processes need 2 GPUs, but only 1 are visible here"):
        with claimed_gpus(2, ["0"]):
            pass
