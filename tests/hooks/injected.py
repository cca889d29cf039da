"""What the tests change in the processes they start, through environment variables (sitecustomize.py
installs it at start-up). Nothing of this is in the project's code: each hook wraps a real function,
so that everything else a process does is what a user's process does.

- RESNET_CIFAR_TEST_ARCHIVE="URL MD5": torchvision's CIFAR archive address and checksum (an archive a
  test serves on the loopback address, or a port where nothing listens: conftest.train_env's default,
  so that no test ever reaches the internet).
- RESNET_CIFAR_TEST_SLOW_STEP_UNTIL_REQUEUED="S": each training step takes S seconds more until SLURM
  requeues the job (SLURM_RESTART_COUNT set): a job longer than its time limit, or one still running
  when a test stops it; once requeued it runs at full speed, to complete before its next signal.
- RESNET_CIFAR_TEST_FAKE_GPUS="N": torch.cuda.is_available() and device_count() say N (no GPU behind
  them), for the tests of how jobs started side by side pick their GPUs.
- RESNET_CIFAR_TEST_LOCK_NAMESPACE="NAME": the machine-wide locks (GPU claims, downloads) of this process
  under a name of the test's own, so that tests running at once do not see each other's claims.
- Faults, to check that resuming gives what an uninterrupted run gives:
  RESNET_CIFAR_TEST_KILL_AT_ITERATION="N" or "N:RANK": SIGKILL right after iteration N (its evaluation
  and checkpoint included), only in the process of that rank;
  RESNET_CIFAR_TEST_KILL_IN_WRITE="NAME:K": SIGKILL during the K-th write of the run-folder file NAME:
  between the temporary file and the rename for files replaced atomically, halfway through the row for
  metrics.csv;
  RESNET_CIFAR_TEST_FAIL_WRITE="NAME:K": the K-th write of NAME fails as on a full disk.
"""
import errno
import os
import signal
import time
from collections import Counter

ARCHIVE_ENV = "RESNET_CIFAR_TEST_ARCHIVE"
SLOW_STEP_ENV = "RESNET_CIFAR_TEST_SLOW_STEP_UNTIL_REQUEUED"
FAKE_GPUS_ENV = "RESNET_CIFAR_TEST_FAKE_GPUS"
LOCK_NAMESPACE_ENV = "RESNET_CIFAR_TEST_LOCK_NAMESPACE"
KILL_AT_ITERATION_ENV = "RESNET_CIFAR_TEST_KILL_AT_ITERATION"
KILL_IN_WRITE_ENV = "RESNET_CIFAR_TEST_KILL_IN_WRITE"
FAIL_WRITE_ENV = "RESNET_CIFAR_TEST_FAIL_WRITE"
RUN_FILES = ("metrics.csv", "checkpoint.pt", "summary.json", "model.pt")


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def archive(value: str) -> None:
    import resnet_cifar.data.fetch as fetch  # torchvision itself only when a download starts, as in a user's run

    download = fetch._download

    def download_from_the_test_archive(dataset, root):
        import torchvision.datasets

        for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):  # a CIFAR-100 fetch fails
            cls.url, cls.tgz_md5 = value.split()
        download(dataset, root)

    fetch._download = download_from_the_test_archive


def slow_step(seconds: str) -> None:
    if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
        return
    from resnet_cifar.loop import TrainingLoop

    train_one = TrainingLoop.train_one

    def slow(self, lr):
        time.sleep(float(seconds))
        train_one(self, lr)

    TrainingLoop.train_one = slow


def fake_gpus(count: str) -> None:
    import torch.cuda

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: int(count)


def lock_namespace(name: str) -> None:
    from resnet_cifar import filesystem

    filesystem.MACHINE_LOCK_PREFIX = f"\0{name}/".encode()


def kill_at_iteration(value: str) -> None:
    from resnet_cifar.loop import TrainingLoop

    iteration, _, only_rank = value.partition(":")
    stop_requested = TrainingLoop._stop_requested  # asked once per iteration, after its checkpoint

    def check(self, stop):
        if self.iteration == int(iteration) and only_rank in ("", str(self.world.rank)):
            _kill()
        return stop_requested(self, stop)

    TrainingLoop._stop_requested = check


def faulty_writes(kill_in: str | None, fail: str | None) -> None:
    from resnet_cifar import filesystem

    writes: Counter = Counter()

    def due(spec: str | None, name: str) -> bool:
        target, _, k = (spec or "").partition(":")
        return target == name and k.isdigit() and int(k) == writes[name]

    def kill_due(name: str) -> bool:
        """Count a write of `name`: fail it now if due, or say whether to kill the process during it."""
        writes[name] += 1
        if due(fail, name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return due(kill_in, name)

    replace = os.replace

    def replace_or_die(src, dst, *args, **kwargs):
        name = os.path.basename(dst)
        if name in RUN_FILES and kill_due(name):
            _kill()  # the temporary file is written, the rename has not happened
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_or_die
    append_text = filesystem._append  # what metrics.csv is appended with (append_text reports its errors)

    def append_or_die(path, text):
        if os.path.basename(path) in RUN_FILES and kill_due(os.path.basename(path)):
            with open(path, "a", newline="") as f:
                f.write(text[:len(text) // 2])
                f.flush()
            _kill()
        append_text(path, text)

    filesystem._append = append_or_die


def install(env=os.environ) -> None:
    if env.get(ARCHIVE_ENV):
        archive(env[ARCHIVE_ENV])
    if env.get(SLOW_STEP_ENV):
        slow_step(env[SLOW_STEP_ENV])
    if env.get(FAKE_GPUS_ENV):
        fake_gpus(env[FAKE_GPUS_ENV])
    if env.get(LOCK_NAMESPACE_ENV):
        lock_namespace(env[LOCK_NAMESPACE_ENV])
    if env.get(KILL_AT_ITERATION_ENV):
        kill_at_iteration(env[KILL_AT_ITERATION_ENV])
    if env.get(KILL_IN_WRITE_ENV) or env.get(FAIL_WRITE_ENV):
        faulty_writes(env.get(KILL_IN_WRITE_ENV), env.get(FAIL_WRITE_ENV))
