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
