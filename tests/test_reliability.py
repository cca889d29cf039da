"""Nothing lost on kill, signal, divergence, full disk or bad input: the faults in real processes (tests/hooks),
the runs they are compared with and the resumes in this process where that checks the same thing."""
import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import shlex
import signal
import subprocess
import time

import pytest
import torch

from conftest import (
    FAIL_WRITE_ENV, KILL_AT_ITERATION_ENV, KILL_IN_WRITE_ENV, MARK_ENV, SLOW_STEP_ENV, TINY_BUDGET, break_batch_file,
    cli, processes_marked, run_train, train_env, train_in_process, write_cifar10, write_cifar100,
)
from resnet_cifar.errors import RunFolderError, UserError
from resnet_cifar.run_folder import RunFolder
from test_train import numbers, read_metrics, train_ok

# checkpoints at 4 and 8 and evaluations at 3, 6, 9, 12: the two cadences disagree on purpose
BUDGET = [*TINY_BUDGET, "trainer.eval_every=3", "trainer.checkpoint_every=4"]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tiny_cifar10, tmp_path_factory):
    """The uninterrupted run every interrupted one must equal."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train_in_process(*BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    return numbers(read_metrics(run_dir))


# -- kill -9 anywhere, then the same command again ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    {KILL_AT_ITERATION_ENV: "2"},  # before the first checkpoint: starts again from scratch
    {KILL_AT_ITERATION_ENV: "5"},
    {KILL_AT_ITERATION_ENV: "11"},
    {KILL_IN_WRITE_ENV: "checkpoint.pt:1"},  # between the temporary file and the rename
    {KILL_IN_WRITE_ENV: "checkpoint.pt:2"},
    {KILL_IN_WRITE_ENV: "metrics.csv:3"},  # halfway through a row
    {KILL_IN_WRITE_ENV: "summary.json:2"},
], ids=["after-2", "after-5", "after-11", "in-checkpoint-1", "in-checkpoint-2", "in-metrics-row-3",
        "in-summary-2"])
def test_kill_anywhere_then_resume_gives_the_uninterrupted_metrics(tiny_cifar10, tmp_path, straight, fault):
    run_dir = tmp_path / "run"
    args = [*BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}"]
    killed = run_train(*args, cwd=tmp_path, env=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if (run_dir / "checkpoint.pt").exists():
        torch.load(run_dir / "checkpoint.pt", weights_only=True)  # whatever is there is whole
    train_in_process(*BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)  # the same run again
    assert numbers(read_metrics(run_dir)) == straight
    assert summary(run_dir)["status"] == "completed"
    assert not list(run_dir.glob("*.tmp"))


# -- signals: checkpoint at the next step, status interrupted, exit for a requeue ------------

def wait_for_iteration(run_dir, process, at_least: int, timeout: float = 120) -> None:
    """Until metrics.csv shows an evaluation at or after `at_least` (the run is in its loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.csv").exists():
            rows = read_metrics(run_dir)
            if rows and int(rows[-1]["iteration"]) >= at_least:
                return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not get going")


def wait_for_jobs(sweep_dir, process, count: int, at_least: int, timeout: float = 180) -> list:
    """Until `count` jobs of the sweep show an evaluation at or after `at_least`; their metrics.csv files."""
    deadline = time.monotonic() + timeout
    while not (len(logs := list(sweep_dir.glob("*/metrics.csv"))) == count
               and all(int(read_metrics(log.parent)[-1]["iteration"]) >= at_least for log in logs)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return logs


LONG_BUDGET = [*TINY_BUDGET, "trainer.max_iters=40", "trainer.eval_every=5", "trainer.checkpoint_every=1000",
               "schedule.milestones=[30]"]


@pytest.fixture(scope="module")
def long_reference(tiny_cifar10, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("long") / "run"
    train_in_process(*LONG_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    return numbers(read_metrics(run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_saves_a_checkpoint_and_the_run_resumes_exactly(tiny_cifar10, tmp_path, long_reference,
                                                                      signum, caplog):
    budget = [*LONG_BUDGET, f"data.root={tiny_cifar10}"]
    run_dir = tmp_path / "run"
    process = subprocess.Popen(cli("resnet_cifar.train", *budget, f"hydra.run.dir={run_dir}"),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=train_env({SLOW_STEP_ENV: "0.1"}))  # still running when the signal comes
    wait_for_iteration(run_dir, process, 5)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name} at iteration" in stderr and "Traceback" not in stderr
    state = summary(run_dir)
    assert state["status"] == "interrupted" and state["iteration"] < 40
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == state["iteration"]  # saved at the step it stopped after

    caplog.set_level("INFO")
    train_in_process(*budget, run_dir=run_dir)  # the same run again
    assert f"resuming from {run_dir / 'checkpoint.pt'} at iteration {state['iteration']}" in caplog.text
    assert numbers(read_metrics(run_dir)) == long_reference


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c,seeds,n_jobs", [(False, 3, 2), (True, 2, 2), (False, 2, 3)],
                         ids=["SIGTERM-to-the-sweep-a-job-queued", "Ctrl-C-to-all-its-processes",
                              "SIGTERM-to-the-sweep-a-worker-idle"])
def test_a_joblib_sweep_stops_as_a_run_does_and_resumes_exactly(tiny_cifar10, tmp_path, long_reference, ctrl_c,
                                                                 seeds, n_jobs):
    """Interrupted in the sweep's process, joblib killed its workers at once (one of two jobs stayed `running`,
    its work since the last checkpoint lost), and a SIGTERM to that process alone left the workers training on
    as orphans. Now every running job saves and records itself interrupted before the sweep ends, a queued job
    is not started, an idle worker does not die of the signal (loky would kill the others), and the same command
    resumes the jobs to the uninterrupted run's numbers."""
    sweep_dir, mark = tmp_path / "sweep", f"joblib-stop-{os.getpid()}-{time.monotonic_ns()}"
    command = ["-m", *LONG_BUDGET, f"data.root={tiny_cifar10}", f"seed=range(0,{seeds})", "hydra/launcher=joblib",
               f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(cli("resnet_cifar.train", *command), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=train_env({SLOW_STEP_ENV: "0.1", MARK_ENV: mark}))
    logs = wait_for_jobs(sweep_dir, process, 2, at_least=5)
    if ctrl_c:  # what a terminal does: SIGINT to the sweep's process and to its workers
        for pid in processes_marked(mark):
            os.kill(pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    signum = signal.SIGINT if ctrl_c else signal.SIGTERM
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "the 2 running job(s) saved a checkpoint; to resume the sweep: " in stderr, stderr
    assert "Traceback" not in stderr, stderr
    for log in logs:
        state = summary(log.parent)
        assert state["status"] == "interrupted" and 5 <= state["iteration"] < 40, state
        assert torch.load(log.parent / "checkpoint.pt", weights_only=True)["iteration"] == state["iteration"]
    assert len(list(sweep_dir.glob("*/summary.json"))) == 2  # the queued job was not started
    deadline = time.monotonic() + 30
    while processes_marked(mark):  # no worker trains on as an orphan
        assert time.monotonic() < deadline, processes_marked(mark)
        time.sleep(0.1)

    resumed = run_train(*command, cwd=tmp_path)  # the same command again
    assert resumed.returncode == 0 and f"0 done, 2 to resume, {seeds - 2} new" in resumed.stderr, resumed.stderr
    assert numbers(read_metrics(next(sweep_dir.glob("*seed=0*")))) == long_reference


@pytest.mark.slow
def test_a_joblib_sweep_of_one_job_at_a_time_stops_in_its_own_process(tiny_cifar10, tmp_path):
    """joblib with n_jobs=1 runs the jobs in the sweep's own process: the job stops itself, as under the basic
    launcher, and the sweep ends with the command that resumes it (its stop signals are not ignored there)."""
    sweep_dir = tmp_path / "sweep"
    command = ["-m", *LONG_BUDGET, f"data.root={tiny_cifar10}", "seed=0,1", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(cli("resnet_cifar.train", *command), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=train_env({SLOW_STEP_ENV: "0.1"}))
    logs = wait_for_jobs(sweep_dir, process, 1, at_least=5, timeout=120)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "to resume the sweep: " in stderr and "Traceback" not in stderr, stderr
    assert summary(logs[0].parent)["status"] == "interrupted"
    assert len(list(sweep_dir.glob("*/summary.json"))) == 1  # the second job was not started


@pytest.mark.slow
def test_the_command_a_stopped_run_prints_resumes_it_from_its_default_folder(tiny_cifar10, tmp_path, long_reference):
    """With Hydra's default outputs/DATE/TIME folder, the same command alone would start a new run: the stop
    message gives the command that resumes, and running exactly what it says does."""
    budget = [*LONG_BUDGET, f"data.root={tiny_cifar10}"]
    process = subprocess.Popen(cli("resnet_cifar.train", *budget), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=train_env({SLOW_STEP_ENV: "0.1"}))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("outputs/*/*/metrics.csv")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    line = next(line for line in stderr.splitlines() if "to resume: " in line)
    words = shlex.split(line.split("to resume: ", 1)[1])
    run_dir = next(tmp_path.glob("outputs/*/*"))
    assert words[:3] == ["python", "-m", "resnet_cifar.train"] and f"hydra.run.dir={run_dir}" in words
    resumed = subprocess.run(cli(words[2], *words[3:]), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env=train_env())
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    assert numbers(read_metrics(run_dir)) == long_reference
    assert len(list(tmp_path.glob("outputs/*/*"))) == 1  # no second run started


# -- divergence -------------------------------------------------------------------------------

@pytest.mark.slow
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    # lr 1e6 blows up within a few steps; checkpoints come before the evaluation notices
    result = run_train(*TINY_BUDGET, "optimizer.lr=1e6", "trainer.eval_every=12", "trainer.checkpoint_every=1",
                       f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "the last checkpoint is the last good state" in result.stderr and "Traceback" not in result.stderr
    state = summary(run_dir)
    assert state["status"] == "diverged"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] < state["iteration"]
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert torch.isfinite(checkpoint["running"]["loss_sum"])


# -- a full disk or an unwritable folder ------------------------------------------------------

@pytest.mark.slow
def test_a_full_disk_at_a_write_keeps_the_earlier_files_and_the_run_resumes(tiny_cifar10, tmp_path, straight):
    """In Hydra's default outputs/DATE/TIME folder: the message gives the command that resumes (the same command
    alone would start a new run), and running exactly that resumes to the uninterrupted metrics."""
    args = [*BUDGET, f"data.root={tiny_cifar10}"]
    result = run_train(*args, cwd=tmp_path, env={FAIL_WRITE_ENV: "checkpoint.pt:2"})
    assert result.returncode == 2
    run_dir = next(tmp_path.glob("outputs/*/*"))
    assert f"could not write {run_dir / 'checkpoint.pt'} (No space left on device)" in result.stderr
    assert "Traceback" not in result.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 4  # the first one, whole
    assert summary(run_dir)["status"] == "failed"
    assert not list(run_dir.glob("*.tmp"))
    line = next(line for line in result.stderr.splitlines() if "to resume from its last checkpoint: " in line)
    words = shlex.split(line.split("to resume from its last checkpoint: ", 1)[1])
    assert words[:3] == ["python", "-m", "resnet_cifar.train"] and words[3:] == [*args, f"hydra.run.dir={run_dir}"]
    resumed = run_train(*words[3:], cwd=tmp_path)  # that command, once there is room again
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    assert numbers(read_metrics(run_dir)) == straight
    assert len(list(tmp_path.glob("outputs/*/*"))) == 1  # no second run started


def test_an_output_folder_that_cannot_exist_is_refused_before_anything_is_written(tiny_cifar10, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run_train(*TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}",
                       cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# -- a process refused a run folder touches nothing in it ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("why", ["another config", "in use"])
def test_a_refused_process_writes_nothing_into_the_folder(tiny_cifar10, tmp_path, why):
    """Not .hydra/ (the report would read the refused config), not train.log."""
    run_dir = tmp_path / "run"
    args = [*TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}"]
    train_ok(*args, cwd=tmp_path)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}  # .lock too
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "train.log"} <= {
        str(p.relative_to(run_dir)) for p in files}
    with RunFolder(run_dir).held() if why == "in use" else contextlib.nullcontext():
        refused = run_train(*args, "optimizer.lr=0.05", cwd=tmp_path)
    assert refused.returncode == 2
    assert ("optimizer.lr: 0.1 -> 0.05" if why == "another config" else "is in use by another process") in \
        refused.stderr
    assert refused.stderr.startswith("error: ") or "\nerror: " in refused.stderr  # one bare line
    assert {p: p.read_bytes() for p in files} == files


def test_the_lock_holds_when_its_file_is_deleted_and_a_file_system_without_locks_only_warns(tmp_path, monkeypatch,
                                                                                          caplog):
    folder = RunFolder(tmp_path / "run")
    with folder.held():
        folder.write_hydra_files({"depth": 20}, [], None)  # the run is its own: .lock says who holds it
        assert f"pid {os.getpid()}" in (tmp_path / "run" / ".lock").read_text()
        (tmp_path / "run" / ".lock").unlink()  # a user tidying up
        with pytest.raises(RunFolderError, match="is in use by another process"):
            with RunFolder(tmp_path / "run").held():
                pass
    import fcntl

    import resnet_cifar.run_folder as run_folder

    def no_locks(fd, operation):  # NFS without its lock service, Lustre mounted without flock
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(run_folder, "_warned_no_locking", False)
    for _ in range(2):
        with RunFolder(tmp_path / "other").held():
            pass
    assert caplog.text.count("cannot lock (No locks available)") == 1


# -- bad input: one clear message, non-zero exit, no file touched ------------------------------

def bad_data(root, kind: str):
    """A copy of the tiny layout with data_batch_2 broken, or the CIFAR-10 files swapped for CIFAR-100's."""
    folder = write_cifar10(root, n_train=100, n_test=20) / "cifar-10-batches-py"
    if kind == "cifar100 content":  # a CIFAR-100 pickle under a CIFAR-10 name
        (folder / "data_batch_2").write_bytes(
            (write_cifar100(root / "c100", n_train=20) / "cifar-100-python" / "train").read_bytes())
    elif kind == "cifar100 folder":  # only CIFAR-100 where CIFAR-10 is expected
        shutil.rmtree(folder)
        write_cifar100(root)
    elif kind == "class 3 absent":  # a training set without one class
        for path in folder.glob("data_batch_*"):
            batch = pickle.loads(path.read_bytes(), encoding="latin1")
            keep = [i for i, label in enumerate(batch["labels"]) if label != 3]
            batch["data"], batch["labels"] = batch["data"][keep], [batch["labels"][i] for i in keep]
            path.write_bytes(pickle.dumps(batch, protocol=2))
    else:
        break_batch_file(folder / "data_batch_2", kind)
    return root


BAD_INPUT = [
    # (case, overrides, expected exit code, message)
    ("depth not 6n+2", ["depth=21"], 2, "depth=21 is not allowed: depth must be 6n+2"),
    ("depth below 8", ["depth=2"], 2, "depth=2 is not allowed: depth must be 6n+2"),
    ("unknown arch", ["arch=wide"], 1, "Could not find 'arch/wide'"),
    ("unknown shortcut", ["shortcut=D"], 1, "Could not find 'shortcut/D'"),
    ("unknown normalization", ["normalization=whitening"], 1, "Could not find 'normalization/whitening'"),
    ("unknown optimizer", ["optimizer=adam"], 1, "Could not find 'optimizer/adam'"),
    ("unknown data set", ["data=svhn"], 1, "Could not find 'data/svhn'"),
    ("zero lr", ["optimizer.lr=0"], 2, "optimizer.lr=0 is not allowed: it must be a number > 0"),
    ("negative lr", ["optimizer.lr=-0.1"], 2, "optimizer.lr=-0.1 is not allowed: it must be a number > 0"),
    ("zero batch size", ["data.batch_size=0"], 2, "data.batch_size=0 is not allowed: it must be > 0"),
    ("zero max_iters", ["trainer.max_iters=0"], 2, "trainer.max_iters=0 is not allowed: it must be > 0"),
    ("negative eval_every", ["trainer.eval_every=-1"], 2, "trainer.eval_every=-1 is not allowed: it must be > 0"),
    ("milestones not increasing", ["schedule.milestones=[9,6]"], 2, "they must be positive and strictly increasing"),
    ("seed too large", ["seed=100000000000000000000000"], 2,
     "seed=100000000000000000000000 is not allowed: it must lie in 0 .. 2**63-1"),
    ("val_size with a class absent", ["data.root={bad}", "data.val_size=10"], 2,
     "data.val_size=10 is not allowed here: class 3 has 0 training image(s)"),
    ("val_size too big", ["data.val_size=1000"], 2, "data.val_size=1000 is not allowed: it must be a multiple"),
    ("negative val_size", ["data.val_size=-10"], 2, "data.val_size=-10 is not allowed: it must be >= 0"),
    ("batch not divisible by processes", ["trainer.nproc_per_node=3"], 2,
     "the global batch must divide by the number of processes"),
    ("cuda without a GPU", ["trainer.device=cuda"], 2, "trainer.device=cuda is not allowed here"),
    ("unknown pipeline", ["data.pipeline=ffcv"], 2,
     "data.pipeline=ffcv is not allowed: it must be one of device, torchvision"),
    ("unknown augment", ["augment=mixup"], 1, "Could not find 'augment/mixup'"),
    ("negative workers", ["data.workers=-1"], 2, "data.workers=-1 is not allowed: it must be in 0 .. 256"),
    ("torchvision pipeline with a CUDA graph", ["data.pipeline=torchvision", "trainer.cuda_graph=true"], 2,
     "trainer.cuda_graph=true is not allowed with data.pipeline=torchvision"),
    ("unknown config key", ["trainer.epochs=3"], 1, "Key 'epochs' not in 'TrainerConfig'"),
    ("unknown preset", ["+experiment=nope"], 1, "Could not find 'experiment/nope'"),
    ("missing data folder", ["data.root={tmp}/nowhere", "data.download=false"], 2,
     "cifar10 not found: expected data_batch_1"),
    ("truncated batch file", ["data.root={bad}"], 2, "data_batch_2 cannot be read as a CIFAR pickle"),
    ("batch file not a pickle", ["data.root={bad}"], 2, "data_batch_2 cannot be read as a CIFAR pickle"),
    ("batch of the wrong shape", ["data.root={bad}"], 2, "'data' must be a uint8 array of shape (N, 3072), "
     "found uint8 (20, 1024)"),
    ("batch of the wrong dtype", ["data.root={bad}"], 2, "found float32 (20, 3072)"),
    ("labels out of range", ["data.root={bad}"], 2, "labels must lie in 0..9, found 0..10"),
    ("CIFAR-100 file under a CIFAR-10 name", ["data.root={bad}"], 2,
     "has no 'labels' entry (it looks like a cifar-100-python file)"),
    ("CIFAR-100 folder under data=cifar10", ["data.root={bad}", "data.download=false"], 2,
     "holds cifar-100-python/: did you mean data=cifar100?"),
]
BAD_DATA_KIND = {"val_size with a class absent": "class 3 absent", "truncated batch file": "truncated", "batch file not a pickle": "not a pickle",
                 "batch of the wrong shape": "wrong shape", "batch of the wrong dtype": "wrong dtype",
                 "labels out of range": "labels out of range", "CIFAR-100 file under a CIFAR-10 name": "cifar100 content",
                 "CIFAR-100 folder under data=cifar10": "cifar100 folder"}


def bad_input(case: str, overrides: list[str], tiny_cifar10, tmp_path) -> list[str]:
    """The case's overrides, with the broken data set it needs written."""
    bad = bad_data(tmp_path / "data", BAD_DATA_KIND[case]) if case in BAD_DATA_KIND else tiny_cifar10
    return [*TINY_BUDGET, f"data.root={tiny_cifar10}", *(o.format(tmp=tmp_path, bad=bad) for o in overrides)]


@pytest.mark.parametrize("case,overrides,code,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_with_one_clear_message_before_anything_starts(tiny_cifar10, tmp_path, case,
                                                                            overrides, code, message):
    """Every case, in this process: the message the command prints, of the kind that sets its exit
    status (2: our UserError; 1: Hydra's composition errors), and no run started."""
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = tmp_path / "run"
    with pytest.raises(Exception) as refused:
        train_in_process(*bad_input(case, overrides, tiny_cifar10, tmp_path), run_dir=run_dir)
    said = f"{refused.value}\n{refused.value.__cause__}"  # Hydra prints an error and its cause
    assert message in said, said
    assert isinstance(refused.value, UserError) == (code == 2), repr(refused.value)
    assert not (run_dir / "summary.json").exists()


@pytest.mark.parametrize("case,folder", [("unknown arch", None), ("depth not 6n+2", None),
                                         ("truncated batch file", None), ("depth not 6n+2", "absolute")])
def test_bad_input_through_the_command_exits_non_zero_and_touches_nothing(tiny_cifar10, tmp_path, case, folder):
    """Each way the command refuses input once as a user meets it: a Hydra composition error (1), a config
    value (2) and a data file (2): one bare line, no traceback, no run folder nor outputs/DATE/ left; nor
    the folders made for an absolute hydra.run.dir outside the working directory."""
    _, overrides, code, message = next(c for c in BAD_INPUT if c[0] == case)
    work = tmp_path / "work"
    work.mkdir()
    where = [f"hydra.run.dir={tmp_path / 'elsewhere' / 'new' / 'run'}"] if folder else []  # else Hydra's outputs/
    result = run_train(*bad_input(case, overrides, tiny_cifar10, tmp_path), *where, cwd=work)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert message in output, output
    assert "Traceback" not in output
    assert list(work.iterdir()) == [] and not (tmp_path / "elsewhere").exists()
    if code == 2:
        last = result.stderr.splitlines()[-1]
        assert last.startswith("error: ") and message in last  # the bare line the README shows


@pytest.mark.slow
@pytest.mark.parametrize("damage,message", [
    ("another architecture", "was saved from another architecture (unexpected key layer1.1.conv1.weight)"),
    ("corrupt", "is not a readable checkpoint"),
], ids=["another-architecture", "corrupt"])
def test_a_checkpoint_that_cannot_be_resumed_is_refused_with_the_reason(tiny_cifar10, tmp_path, damage, message):
    run_dir = tmp_path / "run"
    if damage == "another architecture":  # a depth-14 checkpoint where a depth-8 run resumes
        donor = tmp_path / "donor"
        train_in_process(*TINY_BUDGET, "depth=14", "trainer.max_iters=4", "schedule.milestones=[2]",
                         f"data.root={tiny_cifar10}", run_dir=donor)
        run_dir.mkdir()
        (run_dir / "checkpoint.pt").write_bytes((donor / "checkpoint.pt").read_bytes())
    else:
        run_dir.mkdir()
        (run_dir / "checkpoint.pt").write_bytes(b"\x00" * 100)
    before = (run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(RunFolderError, match=re.escape(message)):  # exit status 2, as every UserError
        train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == before  # not replaced by a fresh start


# -- damaged files: resumed or refused with a reason, never a traceback -------------------------

@pytest.mark.slow
@pytest.mark.parametrize("damage", ["completed without test_error", "completed before max_iters",
                                    "metrics lines not UTF-8 and with an unbalanced quote"])
def test_a_damaged_summary_or_metrics_file_is_not_believed_and_the_run_ends_as_it_should(tiny_cifar10, tmp_path,
                                                                                        straight, damage, caplog):
    """A 'completed' summary without its final error, or short of max_iters, was believed (or a KeyError);
    a line of metrics.csv that is not UTF-8 stopped the resume, and an unbalanced quote took the next row
    with it. Now the run goes on from its checkpoint and ends with the uninterrupted run's metrics."""
    run_dir = tmp_path / "run"
    args = [*BUDGET, f"data.root={tiny_cifar10}"]
    train_in_process(*args, run_dir=run_dir)
    state = summary(run_dir)
    if damage == "completed without test_error":
        del state["test_error"]
    elif damage == "completed before max_iters":
        state["iteration"] = 4
    else:
        state["status"] = "running"  # killed after its last row
        lines = (run_dir / "metrics.csv").read_bytes().split(b"\n")
        lines[2:2] = [b'"3,0.1,unbalanced', b"\xff\xfe not utf-8"]  # between the rows of iterations 3 and 6
        (run_dir / "metrics.csv").write_bytes(b"\n".join(lines))
    (run_dir / "summary.json").write_text(json.dumps(state))
    caplog.set_level("WARNING")
    after = train_in_process(*args, run_dir=run_dir)
    assert after["status"] == "completed" and after["iteration"] == 12 and after["test_error"] is not None
    assert numbers(read_metrics(run_dir)) == straight
    if damage != "metrics lines not UTF-8 and with an unbalanced quote":  # a sweep's account agrees with the run
        from resnet_cifar.sweep import JobState, job_state

        (run_dir / "summary.json").write_text(json.dumps(state))
        assert job_state(run_dir) == JobState.resume and job_state(tmp_path / "nothing") == JobState.new
        (run_dir / "summary.json").write_text(json.dumps(after))
        assert job_state(run_dir) == JobState.completed
    said = {"completed without test_error": "says completed, but with test_error=None at iteration 12 of 12",
            "completed before max_iters": "at iteration 4 of 12: resuming it from its checkpoint",
            "metrics lines not UTF-8 and with an unbalanced quote": "2 damaged line(s) dropped"}[damage]
    assert said in caplog.text


@pytest.mark.parametrize("content", ["[]", "null", '"completed"'])
def test_a_summary_that_is_not_a_mapping_is_unreadable_to_a_sweep_and_to_a_run(tmp_path, content):
    """A sweep relaunch took a summary.json of [] for no summary and skipped the config check."""
    from resnet_cifar.sweep import JobState, job_state

    (tmp_path / "summary.json").write_text(content)
    assert job_state(tmp_path) == JobState.unreadable
    with pytest.raises(RunFolderError, match=r"summary.json is unreadable \(it holds .*, not a run's summary\)"):
        RunFolder(tmp_path).previous(None)


# -- a sweep relaunched, and the report, over damaged job folders ------------------------------

@pytest.mark.slow
def test_sweep_relaunch_and_report_over_damaged_folders(tiny_cifar10, tmp_path, capsys):
    from test_sweep import sweep, summaries

    sweep_dir = tmp_path / "sweep"
    grid = ("depth=8", "seed=0,1,2,3")
    # killed halfway through writing the first job's first metrics row
    killed = sweep(*grid, data=tiny_cifar10, sweep_dir=sweep_dir, env={KILL_IN_WRITE_ENV: "metrics.csv:1"})
    assert killed.returncode == -signal.SIGKILL
    first = sweep(*grid, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert first.returncode == 0, first.stderr
    assert "0 done, 1 to resume, 3 new" in first.stderr
    done = summaries(sweep_dir)
    assert all(s["status"] == "completed" for s in done.values()) and len(done) == 4
    job = {json.loads((p / "summary.json").read_text())["config"]["seed"]: p for p in sweep_dir.iterdir()
           if (p / "summary.json").exists()}
    assert len(read_metrics(job[0])) == 1  # the cut row was dropped and written again

    # now damage three jobs as a crash, a bad disk or a stray edit would
    crashed, corrupt, garbled = job[1], job[2], job[3]
    state = json.loads((crashed / "summary.json").read_text())
    (crashed / "summary.json").write_text(json.dumps({**state, "status": "running"}))  # died before the end
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    corrupt_state = json.loads((corrupt / "summary.json").read_text())
    (corrupt / "summary.json").write_text(json.dumps({**corrupt_state, "status": "running"}))
    (garbled / "summary.json").write_text('{"status": "compl')  # cut short
    again = sweep(*grid, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert again.returncode == 1  # the sweep went on, and says which jobs did not complete
    assert "1 done, 2 to resume, 0 new, 1 with an unreadable summary.json" in again.stderr
    assert "2 of 4 jobs did not complete" in again.stderr
    assert f"{corrupt / 'checkpoint.pt'} is not a readable checkpoint" in again.stderr
    assert f"{garbled / 'summary.json'} is unreadable" in again.stderr
    assert json.loads((crashed / "summary.json").read_text())["status"] == "completed"  # resumed at its end
    assert json.loads((corrupt / "summary.json").read_text())["status"] == "failed"
    assert (corrupt / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # left for the user to look at

    from multirun_analysis.report import main as report

    report([str(sweep_dir), "--out", str(tmp_path / "report")])
    assert f"skipped {garbled}: summary.json is unreadable" in capsys.readouterr().out
    runs = (tmp_path / "report" / "runs.csv").read_text()
    assert str(job[0]) in runs and str(crashed) in runs and str(corrupt) in runs and str(garbled) not in runs
