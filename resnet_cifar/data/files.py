"""What each supported data set's official python release holds, and where.

One table read by the reader (cifar.py), the downloader (fetch.py) and the
benchmark, so that file names, label keys and the torchvision class that knows
the archive's address and md5 are written down once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Dataset


@dataclass(frozen=True)
class DatasetFiles:
    """Where a data set's official python release keeps what."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str  # in the meta file: the class names
    num_classes: int
    torchvision_class: str  # its url, filename and md5 are torchvision's

    @property
    def names(self) -> tuple[str, ...]:
        """Every file of the release: training batches, test batch, meta."""
        return (*self.train, self.test, self.meta)

    def missing(self, root: Path) -> list[str]:
        """The files of the release not found in root/<folder>."""
        return [n for n in self.names if not (root / self.folder / n).is_file()]


DATASETS = {
    Dataset.cifar10: DatasetFiles(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", "labels", "label_names", 10, "CIFAR10",
    ),
    Dataset.cifar100: DatasetFiles(
        "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names", 100, "CIFAR100",
    ),
}
