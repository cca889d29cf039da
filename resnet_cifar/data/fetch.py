"""Fetch a CIFAR release that is missing, once per folder, leaving nothing half-done.

The first command people run should not need a second one, so a missing data
set is downloaded (`data.download: true`, the default) with torchvision's
downloader, which checks the archive's md5. What this module adds:

- One download per folder on a machine. Several processes may need the same
  data at once (the workers of a DDP job, the jobs of a joblib sweep, two
  commands started together): one fetches, the others wait for it and then
  find the files. The lock is machine-wide and named by the data folder
  (filesystem.MachineLock: nothing is created in the shared temporary folder,
  nor under `data.root` before the data is there).
- Whole files only. The archive is unpacked into a staging folder inside
  `data.root` and its files are moved into place one by one with
  `os.replace`, so a reader (another node on a shared file system included)
  never sees half a file.
- Nothing left behind by a failure: the staging folder, the archive, and any
  folder above it that the fetch created are removed again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config import Dataset
from .files import DATASETS
from ..errors import DataError
from ..filesystem import MachineLock

log = logging.getLogger(__name__)


@contextmanager
def _one_download_at_a_time(folder: Path) -> Iterator[None]:
    """Hold the machine-wide lock for downloads into `folder`, saying so when another process has it."""
    lock = MachineLock("download-" + hashlib.sha1(str(folder).encode()).hexdigest()[:16])
    with lock.held(lambda holder: log.info("another process (%s) is downloading into %s; waiting for it",
                                           holder, folder)):
        yield


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def fetch_if_missing(dataset: Dataset, root: str | Path) -> None:
    """Download the data set's official archive into `root` unless all its files are there."""
    files = DATASETS[dataset]
    root = Path(root).expanduser().resolve()
    if not files.missing(root):
        return
    with _one_download_at_a_time(root / files.folder):
        if files.missing(root):  # not fetched by the process this one waited for
            _download(dataset, root)


def _download(dataset: Dataset, root: Path) -> None:
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    files = DATASETS[dataset]
    archive = getattr(tvd, files.torchvision_class)
    created = _missing_folders(root)
    log.info("%s is not in %s: downloading %s into it (data.download=false turns this off)",
             dataset.value, root / files.folder, archive.url)
    done = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            download_and_extract_archive(archive.url, str(staging), filename=archive.filename, md5=archive.tgz_md5)
            target = root / files.folder
            target.mkdir(exist_ok=True)
            for name in files.names:  # only the release's own files; each one whole or not at all
                os.replace(staging / files.folder / name, target / name)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as e:
        raise DataError(
            f"downloading {dataset.value} from {archive.url} into {root} failed ({type(e).__name__}: {e}). "
            f"Without internet, put the official {files.folder}/ folder under {root}, or point data.root at a "
            f"folder that holds it (with data.download=false a run never tries to download); "
            f"see docs/guide/setup.md, Data"
        ) from e
    finally:
        if not done:
            for folder in created:  # deepest first; a folder something else wrote into stays
                try:
                    folder.rmdir()
                except OSError:
                    break
