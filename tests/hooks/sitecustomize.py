"""Run at the start of every Python process the tests start with tests/hooks on PYTHONPATH.

CIFAR cannot be downloaded here (and a test must not download 170 MB where it
can): with RESNET_CIFAR_TEST_ARCHIVE="URL MD5" set, torchvision's CIFAR
archive address and checksum point at an archive the test serves on the
loopback address (or at a port where nothing listens: conftest.train_env's
default, so that no test ever reaches the internet). Everything after that, torchvision's downloader and md5
check included, is the code a user runs. It reaches every process of a run: the
command, its DDP workers and a sweep's joblib workers (they inherit the
environment).
"""
import os

_archive = os.environ.get("RESNET_CIFAR_TEST_ARCHIVE")
if _archive:
    import torchvision.datasets

    for _cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):  # a CIFAR-100 fetch fails here
        _cls.url, _cls.tgz_md5 = _archive.split()

# A training step that takes this many seconds until SLURM requeues the job (SLURM_RESTART_COUNT set):
# a job longer than its time limit, or one still running when the test preempts it; once requeued it
# runs at full speed, so that it completes before its next time-limit signal.
_slow = os.environ.get("RESNET_CIFAR_TEST_SLOW_STEP_UNTIL_REQUEUED")
if _slow and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
    import time

    import resnet_cifar.engine

    _step = resnet_cifar.engine.Trainer.step

    def _slow_step(self, lr):
        time.sleep(float(_slow))
        _step(self, lr)

    resnet_cifar.engine.Trainer.step = _slow_step

# This many CUDA devices, as far as torch.cuda.is_available() and device_count() tell (no GPU behind
# them): for the tests of how jobs started side by side pick their GPUs (resnet_cifar.placement).
_fake_gpus = os.environ.get("RESNET_CIFAR_TEST_FAKE_GPUS")
if _fake_gpus:
    import torch.cuda

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: int(_fake_gpus)
