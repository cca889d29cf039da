"""One careful way to touch the file system (resnet_cifar/filesystem.py), tried as a hostile or careless user
would: symbolic links, FIFOs and full disks where files belong, bad input in a folder that holds the user's
files, runaway settings, and every command's bad input as one line (exit 2), never a traceback."""
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_BUDGET, cli, dump, run_train, train_env, train_in_process, write_cifar10
from resnet_cifar import filesystem
from resnet_cifar.errors import ConfigError, DataError, FileProblem, RunFolderError
from resnet_cifar.run_folder import RunFolder

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail the test instead of blocking it for ever (a FIFO opened the old way)."""
    def timeout(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line_exit_2(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("error: ") == 1, result.stderr


@pytest.fixture(scope="module")
def trained(tiny_cifar10, tmp_path_factory) -> Path:
    """A completed tiny run (model.pt, normalization.pt, summary.json) to copy and damage."""
    run_dir = tmp_path_factory.mktemp("fs") / "run"
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    return run_dir


def copy_of(trained: Path, tmp_path: Path, name: str = "run") -> Path:
    copy = tmp_path / name
    shutil.copytree(trained, copy)
    return copy


def edit_summary(run_dir: Path, change) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    change(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary))


class RunsCode:
    """A pickle that runs a command when it is loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- the module's rules ------------------------------------------------------------------------

def test_a_file_replaced_over_a_symlink_replaces_the_link_never_its_target(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("theirs")
    (tmp_path / "summary.json").symlink_to(target)
    (tmp_path / "summary.json.tmp").symlink_to(tmp_path / "also-elsewhere")  # the temporary name taken too
    filesystem.write_text(tmp_path / "summary.json", "ours")
    assert target.read_text() == "theirs" and not (tmp_path / "also-elsewhere").exists()
    assert not (tmp_path / "summary.json").is_symlink() and (tmp_path / "summary.json").read_text() == "ours"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_an_append_goes_only_into_a_regular_file_of_the_folder(tmp_path, kind):
    path, target = tmp_path / "metrics.csv", tmp_path / "target"
    target.write_text("theirs")
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with no_hang(), pytest.raises(FileProblem, match=r"metrics.csv (is a symbolic link|is a FIFO|is a folder)"):
        filesystem.append_text(path, "a row\n")
    assert target.read_text() == "theirs"


def test_reading_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "summary.json")
    from resnet_cifar.contract import read_summary

    with no_hang(), pytest.raises(RunFolderError, match="is a FIFO, not a regular file"):
        read_summary(tmp_path)


@pytest.mark.slow
def test_a_run_folders_lock_is_not_kept_by_the_processes_it_forks(tmp_path):
    """A DataLoader worker (forked) inherited the run folder's lock: after kill -9 of the main process the same
    command was refused ('in use by another process') until the orphaned workers exited."""
    holder = subprocess.Popen([sys.executable, "-c", f"""
import multiprocessing as mp, sys, time
from resnet_cifar.run_folder import RunFolder
with RunFolder({str(tmp_path / 'run')!r}).held():
    worker = mp.get_context("fork").Process(target=time.sleep, args=(60,))  # as a DataLoader worker
    worker.start()
    print(worker.pid, flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env=train_env())
    worker = int(holder.stdout.readline())
    try:
        holder.kill()  # kill -9 of the main process; its worker lives on
        holder.wait(timeout=30)
        os.kill(worker, 0)  # still running
        with RunFolder(tmp_path / "run").held():  # the same command, at once
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_the_folders_a_process_holds_are_read_without_taking_a_lock(tmp_path):
    """What a joblib sweep's process waits on when it stops (sweep_stop.py): its workers' job folders."""
    from resnet_cifar.filesystem import child_pids, folder_held, folders_open_in

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from resnet_cifar.run_folder import RunFolder
with RunFolder({str(run_dir)!r}).held():
    print("held", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env=train_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        assert holder.pid in child_pids()
        assert folders_open_in(child_pids(), tmp_path) == {holder.pid: [run_dir]}
        assert folders_open_in([os.getpid()], tmp_path) == {}  # only the processes asked about
        assert folders_open_in([holder.pid], tmp_path / "elsewhere") == {}  # only at or below the folder
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert folders_open_in([holder.pid], tmp_path) == {} and holder.pid not in child_pids()
    with folder_held(run_dir, lambda: AssertionError("held")):  # the look took no lock
        assert folders_open_in([os.getpid()], tmp_path) == {os.getpid(): [run_dir]}


def test_a_stopping_sweeps_mark_keeps_its_queued_jobs_from_starting(tmp_path):
    from resnet_cifar.sweep_stop import job_may_start, stopping_mark

    assert job_may_start(tmp_path)
    mark = stopping_mark(tmp_path)
    assert mark.try_acquire()
    try:
        assert not job_may_start(tmp_path) and job_may_start(tmp_path / "another sweep")
    finally:
        mark.release()
    assert job_may_start(tmp_path)


# -- data never lost or written outside ---------------------------------------------------------

def test_bad_input_in_a_folder_of_the_users_own_files_deletes_none_of_them(tiny_cifar10, tmp_path):
    """`depth=21 hydra.run.dir=M`, where M/train.log and M/.hydra/ were the user's: they were deleted."""
    folder = tmp_path / "M"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "notes.yaml").write_text("mine: true\n")
    (folder / "train.log").write_text("my log\n")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = run_train("depth=21", f"data.root={tiny_cifar10}", f"hydra.run.dir={folder}", cwd=tmp_path)
    one_line_exit_2(result, "depth=21 is not allowed")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", "train.log"]


def test_a_folder_of_the_users_own_config_and_log_is_refused_before_a_byte_is_written(tmp_path):
    """`hydra.run.dir=M`, M holding the user's .hydra/config.yaml and train.log, and data that is missing:
    the config was overwritten and the log appended to before the data was found missing."""
    folder = tmp_path / "M"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("mine: true\n")
    (folder / "train.log").write_text("my log\n")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = run_train(*TINY_BUDGET, f"data.root={tmp_path / 'no_data'}", "data.download=false",
                       f"hydra.run.dir={folder}", cwd=tmp_path)
    one_line_exit_2(result, f"{folder} holds train.log, .hydra but no summary.json, and no record of this run's config")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in folder.rglob("*")) == [".hydra", "config.yaml", "train.log"]


def test_what_an_earlier_start_of_the_same_run_left_is_its_own(tmp_path):
    """Killed while its data loaded, a run leaves .hydra/ and train.log but no summary.json: the same run
    goes on there (on another device too), another config is refused."""
    from conftest import composed_spec
    spec = composed_spec(*TINY_BUDGET)
    earlier = RunFolder(tmp_path / "M")
    with earlier.held():
        earlier.write_hydra_files(spec.recorded, spec.overrides, None)
    (tmp_path / "M" / "train.log").write_text("an earlier start\n")
    for same_run in (spec, composed_spec(*TINY_BUDGET, "trainer.device=cpu")):
        with RunFolder(tmp_path / "M").held():
            RunFolder(tmp_path / "M").write_hydra_files(same_run.recorded, same_run.overrides, None)
    other = composed_spec(*TINY_BUDGET, "seed=5")
    with pytest.raises(RunFolderError, match="no record of this run's config"):
        RunFolder(tmp_path / "M").write_hydra_files(other.config, other.overrides, None)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_sweep_record_that_is_a_link_or_a_fifo_is_refused_before_hydra_writes_through_it(tiny_cifar10, tmp_path,
                                                                                          kind):
    """Hydra's sweeper rewrites multirun.yaml with a plain open(): through a link into its target, or
    blocked for ever on a FIFO."""
    sweep, target = tmp_path / "sweep", tmp_path / "target.txt"
    sweep.mkdir()
    target.write_text("theirs\n")
    record = sweep / "multirun.yaml"
    record.symlink_to(target) if kind == "symlink" else os.mkfifo(record)
    with no_hang():
        result = run_train("-m", *TINY_BUDGET, "seed=0,1", f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep}",
                           cwd=tmp_path)
    one_line_exit_2(result, f"{record} is {'a symbolic link' if kind == 'symlink' else 'not a regular file'}")
    assert target.read_text() == "theirs\n" and sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml"]


@pytest.mark.parametrize("link", ["train.log", "metrics.csv", ".hydra"])
def test_a_symlink_in_a_run_folder_is_refused_and_its_target_untouched(tiny_cifar10, tmp_path, link):
    run_dir, target = tmp_path / "run", tmp_path / "target"
    run_dir.mkdir()
    if link == ".hydra":  # a folder of someone else's, whose config.yaml the run would replace
        target.mkdir()
        (target / "config.yaml").write_text("theirs\n")
    else:
        target.write_text("theirs\n")
    (run_dir / link).symlink_to(target)
    result = run_train(*TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_exit_2(result, f"{run_dir / link} is a symbolic link")
    assert (target / "config.yaml" if link == ".hydra" else target).read_text() == "theirs\n"
    if link == ".hydra":
        assert sorted(p.name for p in target.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_a_lock_file_that_is_a_symlink_is_replaced_not_followed(tiny_cifar10, tmp_path):
    run_dir, target = tmp_path / "run", tmp_path / "target.txt"
    run_dir.mkdir()
    target.write_text("theirs\n")
    (run_dir / ".lock").symlink_to(target)
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    assert target.read_text() == "theirs\n"


def test_a_sweep_value_with_path_separators_never_leaves_the_sweep_folder(tmp_path):
    """`-m "data.pipeline=x/../../escaped"` named a job folder outside hydra.sweep.dir: the folders Hydra will
    make (sweep.job_dirs names them exactly as Hydra does) all lie directly in the sweep folder."""
    from resnet_cifar.hydra_setup import job_folder_name
    from resnet_cifar.sweep import job_dirs
    from test_sweep import grid

    sweep_dir = tmp_path / "a" / "b" / "sweep"
    _, cfg = grid("data.pipeline=x/../../escaped,../..,device", f"hydra.sweep.dir={sweep_dir}")
    dirs = job_dirs(cfg)
    assert len(dirs) == 3 and all(d.resolve().parent == sweep_dir.resolve() for d in dirs), dirs
    assert job_folder_name("..") == "%2E%2E" and job_folder_name("a=x%2Fy") != job_folder_name("a=x/y")


@pytest.mark.parametrize("out", ["/proc/x/y", "a_file/sub"])
def test_a_report_out_that_cannot_be_made_is_one_line_before_anything_is_read(trained, tmp_path, capsys, out):
    """`report --out /proc/x/y` or `--out afile/sub` ended in mkdir's traceback."""
    from multirun_analysis.report import main as report

    (tmp_path / "a_file").write_text("mine\n")
    out = out if out.startswith("/") else str(tmp_path / out)
    assert report([str(trained), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} cannot be used: ") and err.count("\n") == 1, err
    assert (tmp_path / "a_file").read_text() == "mine\n"


@pytest.mark.slow
def test_a_readme_is_whole_after_a_report_on_a_full_disk(trained, tmp_path):
    """The README was cut mid-word on a full file system (11 of 41 trailing lines lost)."""
    from multirun_analysis.report import main as report

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        readme = mount / "README.md"
        text = "# notes\n<!-- results:start -->\n<!-- results:end -->\n" + "".join(
            f"line {i} of what follows the results\n" for i in range(800))
        readme.write_text(text)
        filler = mount / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            f.write(b"x" * (48 * 1024 - len(text) - 1024))  # the disk all but full: the README fits once
        assert report([str(trained), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 2
        assert readme.read_text() == text
        assert sorted(p.name for p in mount.iterdir()) == ["README.md", "filler"]  # no temporary file left
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)  # read-only: one line too
        with pytest.raises(FileProblem, match=r"could not write .*README.md \(Read-only file system\)"):
            filesystem.write_text(readme, "new")
        assert readme.read_text() == text
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_refused_process_leaves_the_lock_file_as_it_was(trained, tmp_path):
    """A process refused the folder (another config) rewrote .lock with its pid."""
    run_dir = copy_of(trained, tmp_path)
    (run_dir / ".lock").write_text("pid 1 on elsewhere\n")
    result = run_train(*TINY_BUDGET, "optimizer.lr=0.05", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_exit_2(result, "holds a run made with another config")
    assert (run_dir / ".lock").read_text() == "pid 1 on elsewhere\n"


# -- runaway settings -------------------------------------------------------------------------

def test_a_runaway_number_of_workers_is_refused_and_a_large_one_capped_at_the_cores(tiny_cifar10, tmp_path, caplog):
    from resnet_cifar.cores import usable_cores
    from resnet_cifar.data.run_data import worker_count
    from resnet_cifar.distributed import World

    result = run_train(*TINY_BUDGET, "data.pipeline=torchvision", "data.workers=100000000000",
                       f"data.root={tiny_cifar10}", cwd=tmp_path)
    one_line_exit_2(result, "data.workers=100000000000 is not allowed: it must be in 0 .. 256")
    assert not (tmp_path / "outputs").exists()
    caplog.set_level("WARNING")
    assert worker_count(200, World()) == usable_cores()
    assert f"data.workers=200 is more than the {usable_cores()} cores" in caplog.text
    assert worker_count(0, World()) == 0


# -- never a false "completed" ----------------------------------------------------------------

@pytest.mark.slow
def test_a_sweep_relaunched_on_another_device_finds_its_jobs_and_one_of_another_config_fails(tiny_cifar10,
                                                                                              tmp_path):
    from test_sweep import sweep

    sweep_dir = tmp_path / "sweep"
    first = sweep("depth=8", "seed=0,1", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert first.returncode == 0, first.stderr
    again = sweep("depth=8", "seed=0,1", "trainer.device=cpu", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert again.returncode == 0, again.stderr  # the device is not the experiment: both done, nothing refused
    assert "2 done, 0 to resume, 0 new" in again.stderr and "all 2 jobs completed" in again.stderr
    job = next(sweep_dir.glob("*seed=1*"))
    edit_summary(job, lambda s: s["config"]["optimizer"].update(lr=0.05))  # as if the YAML had changed since
    refused = sweep("depth=8", "seed=0,1", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert refused.returncode != 0
    assert "1 whose folder holds a run of another config (they will be refused)" in refused.stderr
    assert f"{job}: refused: it holds a run made with another config (optimizer.lr: 0.05 -> 0.1)" in refused.stderr
    assert "jobs completed" not in refused.stderr


def test_an_unfinished_run_resumes_only_on_its_device_and_a_completed_one_is_found_on_any():
    """The checkpoint holds the device's random state (a CUDA generator's is not a CPU generator's): resuming
    an interrupted GPU run on the CPU crashed in the generator; a completed run has nothing to resume."""
    from conftest import composed_spec
    from resnet_cifar.run_folder import config_changes

    earlier = {"config": composed_spec().recorded}
    now, deeper = composed_spec("trainer.device=cpu").recorded, composed_spec("trainer.device=cpu", "depth=32").recorded
    assert config_changes({**earlier, "status": "interrupted"}, now) == ["trainer.device: 'auto' -> 'cpu'"]
    assert config_changes({**earlier, "status": "completed"}, now) == []
    assert config_changes({**earlier, "status": "completed"}, deeper) == ["depth: 20 -> 32"]


# -- TensorBoard --------------------------------------------------------------------------------

@pytest.mark.slow
def test_tensorboard_after_a_kill_before_the_first_checkpoint_shows_each_point_once(tiny_cifar10, tmp_path):
    from conftest import KILL_AT_ITERATION_ENV
    from test_use import tensorboard_scalars

    run_dir = tmp_path / "run"
    args = [*TINY_BUDGET, "trainer.eval_every=2", "trainer.checkpoint_every=6", "logger=tensorboard",
            f"data.root={tiny_cifar10}"]
    killed = run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={KILL_AT_ITERATION_ENV: "5"})
    assert killed.returncode < 0 and not (run_dir / "checkpoint.pt").exists()
    assert [step for step, _ in tensorboard_scalars(run_dir)["error/test"]] == [2, 4]
    train_in_process(*args, run_dir=run_dir)
    assert [step for step, _ in tensorboard_scalars(run_dir)["error/test"]] == [2, 4, 6, 8, 10, 12]


def test_an_event_file_named_in_the_future_does_not_hang_the_resume(tmp_path, caplog):
    from resnet_cifar.trackers.tensorboard import earlier_event_seconds, wait_past_earlier_files

    future = int(time.time()) + 10 * 365 * 86400
    (tmp_path / f"events.out.tfevents.{future}.host.1.0").write_bytes(b"")
    started = time.monotonic()
    with no_hang(10):
        wait_past_earlier_files(tmp_path, earlier_event_seconds(tmp_path))
    assert time.monotonic() - started < 1
    assert "named" in caplog.text and "ahead of this machine's clock" in caplog.text


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "64k"):
    """A tmpfs of `size` at `folder` (root only: skipped elsewhere), unmounted afterwards."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


FILL_AND_LOG = """
import contextlib, sys
from pathlib import Path
from resnet_cifar.contract import Status
from resnet_cifar.errors import FileProblem
from resnet_cifar.signals import StopRequest
from resnet_cifar.trackers import GuardedTracker
from resnet_cifar.trackers.tensorboard import TensorBoardTracker
disk = Path(sys.argv[1])
tracker = TensorBoardTracker(disk, {}, 0)
with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
    f.write(b"x" * (1 << 20))  # the disk full
try:
    for step in range(1, 10_000):
        tracker.log({"iteration": step, "test_error": 50.0, "train_error": 40.0, "lr": 0.1})
except FileProblem as e:
    print(e, file=sys.stderr)
GuardedTracker(tracker, StopRequest()).close(Status.failed.value)  # as the run closes it: a warning at most
"""


def test_tensorboard_on_a_real_full_disk_is_one_line_and_no_thread_traceback(tmp_path):
    """The events are written by TensorBoard's own thread: a full disk ended it with an "Exception in thread"
    traceback beside the one line (in a process of its own: pytest catches threads' exceptions itself)."""
    from resnet_cifar.trackers.tensorboard import TensorBoardTracker

    with small_disk(tmp_path / "disk") as disk:
        result = subprocess.run([sys.executable, "-c", FILL_AND_LOG, str(disk)], capture_output=True, text=True,
                                timeout=120, env=train_env())
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith(f"could not write the TensorBoard events in {disk / 'tensorboard'} (No space "
                                        "left on device)"), result.stderr
        assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr, result.stderr
        (disk / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)  # read-only: one line too
        with pytest.raises(FileProblem, match=r"tensorboard is not writable: logger=tensorboard writes its event"):
            TensorBoardTracker(disk, {}, 0)


def test_a_tensorboard_path_that_is_a_file_is_one_line(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tensorboard").write_text("")
    result = run_train(*TINY_BUDGET, "logger=tensorboard", f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    one_line_exit_2(result, f"{run_dir / 'tensorboard'} is not a folder")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


# -- evaluate: one line for each bad input ------------------------------------------------------

def evaluate_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli("resnet_cifar.evaluate", *args), cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=train_env())


def test_evaluate_refuses_a_malicious_or_foreign_model_file_in_one_line(trained, tmp_path):
    marker = tmp_path / "code-ran"
    run_dir = copy_of(trained, tmp_path, "evil")
    torch.save({"x": RunsCode(marker)}, run_dir / "model.pt")
    one_line_exit_2(evaluate_cli(str(run_dir), "--out", str(tmp_path / "o"), cwd=tmp_path),
                    f"{run_dir / 'model.pt'} holds an object of posix.system, which is never unpickled here")
    assert not marker.exists()
    text = copy_of(trained, tmp_path, "text")
    (tmp_path / "notes.txt").write_text("not a model\n")
    (text / "model.pt").unlink()
    (text / "model.pt").symlink_to(tmp_path / "notes.txt")
    one_line_exit_2(evaluate_cli(str(text), "--out", str(tmp_path / "o"), cwd=tmp_path), "is not a readable checkpoint")


def test_evaluate_refuses_bad_places_to_write_before_it_evaluates(trained, tmp_path):
    (tmp_path / "a_file").write_text("")
    one_line_exit_2(evaluate_cli(str(trained), "--out", str(tmp_path / "a_file"), cwd=tmp_path),
                    f"--out {tmp_path / 'a_file'} cannot be used: {tmp_path / 'a_file'} is a file, not a folder")
    one_line_exit_2(evaluate_cli(str(trained), "--out", str(tmp_path / "o"), "--json", "/proc/x/numbers.json",
                                 cwd=tmp_path), "--json /proc/x cannot be used")
    assert not (tmp_path / "o").exists()  # refused before the evaluation
    numbers = tmp_path / "new" / "folder" / "numbers.json"  # a folder that does not exist yet is made
    assert evaluate_cli(str(trained), "--out", str(tmp_path / "o"), "--json", str(numbers), cwd=tmp_path).returncode == 0
    assert json.loads(numbers.read_text())[0]["images"] == 100


@pytest.mark.parametrize("change, message", [
    (lambda s: s["config"]["trainer"].update(eval_batch_size=0), "trainer.eval_batch_size=0 is not allowed"),
    (lambda s: s["config"]["data"].update(val_size=-10), "data.val_size=-10 is not allowed"),
    (lambda s: s["config"].update(arch="../../../../etc/passwd"), "arch=../../../../etc/passwd is not a built-in"),
], ids=["eval_batch_size-0", "val_size-negative", "arch-path"])
def test_evaluate_refuses_a_run_config_that_is_not_allowed(trained, tmp_path, capsys, change, message):
    from resnet_cifar.evaluate import main as evaluate

    run_dir = copy_of(trained, tmp_path)
    edit_summary(run_dir, change)
    assert evaluate([str(run_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_evaluate_writes_a_run_with_a_path_longer_than_a_file_name(trained, tmp_path, capsys):
    from resnet_cifar.evaluate import main as evaluate

    deep = tmp_path
    for i in range(3):
        deep = deep / (f"arch=resnet,depth=20,seed={i}," + "x" * 150)
    shutil.copytree(trained, deep)
    assert evaluate([str(deep), "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    assert all(len(p.name) < 255 for p in (tmp_path / "o").iterdir()) and len(list((tmp_path / "o").iterdir())) == 2


@pytest.mark.slow
def test_load_run_from_another_folder_finds_a_relative_data_root(tiny_cifar10, tmp_path, monkeypatch):
    """A run trained with data.root=data (relative) loaded from elsewhere looked for ./data there."""
    from resnet_cifar import load_run

    (tmp_path / "project").mkdir()
    shutil.copytree(tiny_cifar10, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    train_in_process(*TINY_BUDGET, "data.root=data", run_dir=tmp_path / "project" / "run")
    monkeypatch.chdir(tmp_path)
    assert load_run(tmp_path / "project" / "run").data.test_images.shape[0] == 100
    edit_summary(tmp_path / "project" / "run", lambda s: s.pop("data_root"))  # a folder from before the record
    load_run.__globals__["_dataset"].cache_clear()  # summary.json is the record: .hydra/ is never read back
    with pytest.raises(DataError, match=r"give the folder that holds cifar10 as data_root= \(load_run\) or --data"):
        load_run(tmp_path / "project" / "run")


# -- the report: a damaged run is skipped, saying why ------------------------------------------------

@pytest.mark.slow
def test_the_report_skips_damaged_runs_and_models_saying_why(trained, tmp_path, tiny_cifar10):
    from multirun_analysis.report import ReportError, report

    good = copy_of(trained, tmp_path / "runs", "good")
    depth = copy_of(trained, tmp_path / "runs", "depth")
    edit_summary(depth, lambda s: s["config"].update(depth="abc"))
    error = copy_of(trained, tmp_path / "runs", "error")
    edit_summary(error, lambda s: s.update(test_error="abc"))
    evil = copy_of(trained, tmp_path / "runs", "evil")
    edit_summary(evil, lambda s: s.update(seed=1) or s["config"].update(seed=1))
    marker = tmp_path / "code-ran"
    torch.save({"x": RunsCode(marker)}, evil / "model.pt")
    cut = copy_of(trained, tmp_path / "runs", "cut")
    edit_summary(cut, lambda s: s["config"].update(seed=2))
    (cut / "model.pt").write_bytes((cut / "model.pt").read_bytes()[:500])
    account = report([tmp_path / "runs"], tmp_path / "out", data_root=str(tiny_cifar10))
    assert f"skipped {depth}: summary.json says depth: 'abc', not a whole number" in account
    assert f"skipped {error}: summary.json says test_error: 'abc', not a finite number in [0, 100]" in account
    assert "Figure 7 leaves out arch=resnet (2 runs): it cannot be loaded here" in account
    assert "is not a readable checkpoint" in account or "holds an object of posix.system" in account  # the first why
    assert not marker.exists()
    assert "Figure 7 from 1 runs' models" in account and f"skipped {good}" not in account
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ReportError, match="--out .*a_file is a file, not a folder"):
        report([tmp_path / "runs"], tmp_path / "a_file")


# -- data files: one line, bounded -----------------------------------------------------------------

@pytest.mark.parametrize("names, message", [
    ([b"x" * 100_000] + [f"c{i}".encode() for i in range(9)], "bytes, more than the 65536"),  # the file's size
    ([b"x" * 500] + [f"c{i}".encode() for i in range(9)], "is not allowed (a class name has 1 to 64"),
    ([b"cat", b"cat"] + [f"c{i}".encode() for i in range(8)], "class name 'cat' is listed twice"),
], ids=["huge-file", "long-name", "duplicate"])
def test_class_names_of_absurd_length_or_twice_are_refused(tmp_path, names, message):
    from resnet_cifar.config import Dataset
    from resnet_cifar.data.cifar import load_cifar

    root = write_cifar10(tmp_path / "data", n_train=20, n_test=10)
    dump({"label_names": names}, root / "cifar-10-batches-py" / "batches.meta", bytes_keys=True)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_cifar(Dataset.cifar10, root, allow_download=False)


@pytest.mark.slow
def test_bench_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    from resnet_cifar import speed as bench_module
    from resnet_cifar.speed import main as bench

    written = []  # no data set in tmp_path: the benchmark would write 60,000 random images
    monkeypatch.setattr(bench_module, "write_synthetic_cifar10", written.append)
    with pytest.raises(SystemExit) as exit_:
        bench(["--depths", "8", "21", "--no-standard", "--variants", "fp32", "--steps", "1", "--windows", "1",
               "--warmup", "0", "--data", str(tmp_path)])
    assert exit_.value.code == 2 and "depth=21 is not allowed" in capsys.readouterr().err
    assert not written  # refused before anything was written or loaded
    root = write_cifar10(tmp_path / "data", n_train=20, n_test=10)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"x": RunsCode(tmp_path / "code-ran")}, f)
    with pytest.raises(SystemExit) as exit_:
        bench(["--depths", "8", "--no-standard", "--variants", "fp32", "--steps", "1", "--windows", "1",
               "--warmup", "0", "--data", str(root)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "test_batch was refused" in err and not (tmp_path / "code-ran").exists()


# -- train: where a run cannot be, and the first ten minutes --------------------------------------

@pytest.mark.parametrize("folder, message", [
    ("/proc/x", "hydra.run.dir=/proc/x cannot be used: nothing can be made in /proc"),
    ("runs/" + "a" * 300, "is 300 bytes, more than the 255 a name can be"),
], ids=["proc", "long-name"])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, folder, message):
    one_line_exit_2(run_train(f"hydra.run.dir={folder}", cwd=tmp_path), message)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_misspelt_key_added_with_plus_says_which_was_meant_and_leaves_nothing(tiny_cifar10, tmp_path):
    result = run_train("+trainer.max_iter=100", f"data.root={tiny_cifar10}", cwd=tmp_path)
    one_line_exit_2(result, "trainer.max_iter is not a config key: did you mean trainer.max_iters?")
    assert not list(tmp_path.iterdir())
    swept = run_train("-m", "+trainer.max_iter=100", "seed=0,1", f"data.root={tiny_cifar10}",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    one_line_exit_2(swept, "did you mean trainer.max_iters?")


def test_a_preset_sweep_without_multirun_is_refused_with_the_command_meant(tmp_path):
    result = run_train("+experiment=fig6", "budget=quick", cwd=tmp_path)
    one_line_exit_2(result, "did you mean: python -m resnet_cifar.train -m +experiment=fig6 budget=quick")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_milestone_warning_is_true_said_once_and_in_train_log(tiny_cifar10, tmp_path):
    args = ["-m", *TINY_BUDGET, "schedule.milestones=[20,30]", "seed=0,1", f"data.root={tiny_cifar10}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = run_train(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    warning = "schedule.milestones [20, 30] lie at or past trainer.max_iters=12"
    assert first.stderr.count(warning) == 2  # once for each job that runs
    assert "budget=quick scales" not in first.stderr and "schedule.milestones=[6,9]" in first.stderr
    for log in (tmp_path / "sweep").glob("*/train.log"):
        assert log.read_text().count(warning) == 1
    again = run_train(*args, cwd=tmp_path)
    assert again.returncode == 0 and warning not in again.stderr  # completed jobs are skipped silently


@pytest.mark.slow
def test_the_offline_download_message_is_said_once(tmp_path):
    result = run_train(*TINY_BUDGET, f"data.root={tmp_path / 'data'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("Without internet, put the official cifar-10-batches-py/ folder") == 1, result.stderr


def test_config_errors_are_config_errors(tmp_path):
    """typed() turns the schema's refusals into one line naming the key."""
    from resnet_cifar.config import typed

    with pytest.raises(ConfigError, match="trainer.banana is not a config key; trainer has device"):
        typed({"trainer": {"banana": 1}})
    with pytest.raises(ConfigError, match="depth is not allowed"):
        typed({"depth": "abc"})
