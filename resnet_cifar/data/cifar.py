"""The official CIFAR python release, read safely: numpy arrays of a whole data set, and the held-out split.

Torch-free: this is all that touches the files (written by data/fetch.py). What becomes of the arrays on the
training device is run_data.py's business.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Dataset
from .. import filesystem
from ..errors import ConfigError, DataError, FileProblem
from .fetch import fetch_if_missing
from .files import DATASETS, DatasetFiles

IMAGE_SHAPE = (32, 32, 3)  # H, W, C: an image as the arrays (and the device) hold it
VAL_SPLIT_SEED = 0  # the same hold-out for every run and seed, as the paper's one 45k/5k split


@dataclass
class CifarArrays:
    """A data set as numpy arrays: images uint8 (N, 32, 32, 3), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]


class CifarUnpickler(pickle.Unpickler):
    """Reads what the official CIFAR-10 and CIFAR-100 python files hold, and nothing else.

    A pickle can call any function it names while it is read: a "CIFAR copy"
    from a mirror could run a command on load. The official files name only
    numpy's array reconstruction (and Python 3 re-pickles `_codecs.encode` and
    `bytes` for byte strings); every other name is refused before it is looked up.
    """

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("__builtin__", "bytes"),
        ("builtins", "bytes"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise RefusedObject(f"{module}.{name}")
        module = module.replace("numpy.core.", "numpy._core.") if hasattr(np, "_core") else module
        return super().find_class(module, name)


class RefusedObject(pickle.UnpicklingError):
    """A pickle asked for a function or class that CIFAR files never hold."""


def _unpickle(path: Path, limit: int | None = None) -> dict:
    """A CIFAR pickle (a regular file; with `limit`, of at most that many bytes) as a dict."""
    try:
        if limit is None:
            with filesystem.opened_for_reading(path) as f:
                obj = CifarUnpickler(f, encoding="latin1").load()
        else:
            obj = CifarUnpickler(io.BytesIO(filesystem.read_bytes(path, limit)), encoding="latin1").load()
    except FileProblem as e:
        raise DataError(f"{e}; replace it with a fresh copy of the data set") from None
    except RefusedObject as e:
        raise DataError(f"{path} was refused: it asks to call {e}, which no CIFAR file holds (reading it could run "
                        "code); replace it with a copy of the official data set") from None
    except Exception as e:  # truncated, not a pickle, unreadable: all the same to the user
        raise DataError(f"{path} cannot be read as a CIFAR pickle ({type(e).__name__}: {e}); "
                        "replace it with a fresh copy of the data set") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not the dict of the official CIFAR layout")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, files: DatasetFiles) -> tuple[np.ndarray, np.ndarray]:
    """One pickle of the official layout -> (uint8 NHWC images, int64 labels), checked."""
    batch = _unpickle(path)
    if files.label_key not in batch:
        other = next((f for f in DATASETS.values() if f.label_key in batch), None)
        hint = f" (it looks like a {other.folder} file)" if other else ""
        raise DataError(f"{path} has no '{files.label_key}' entry{hint}; keys: {sorted(batch)}")
    data, labels = batch.get("data"), np.asarray(batch[files.label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), found {desc}")
    if len(data) == 0:
        raise DataError(f"{path} holds no images; replace it with a fresh copy of the data set")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {len(data)} integer labels, found {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= files.num_classes):
        raise DataError(f"{path}: labels must lie in 0..{files.num_classes - 1}, "
                        f"found {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes R, G, B -> NHWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


META_BYTES = 64 * 1024  # the official meta files are under 2 kB: a larger one is not one of them
CLASS_NAME_CHARS = 64


def read_class_names(path: Path, files: DatasetFiles) -> tuple[str, ...]:
    """The class names of the meta file, one per class (read, like every file, by CifarUnpickler)."""
    names = _unpickle(path, META_BYTES).get(files.names_key)
    if not isinstance(names, list) or len(names) != files.num_classes:
        found = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
        raise DataError(f"{path}: '{files.names_key}' must list the {files.num_classes} class names, found {found}; "
                        "replace it with a fresh copy of the data set")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    bad = next((n for n in names if not 0 < len(n) <= CLASS_NAME_CHARS or not n.isprintable()), None)
    if bad is not None:
        raise DataError(f"{path}: class name {bad[:40]!r}{'...' if len(bad) > 40 else ''} is not allowed (a class "
                        f"name has 1 to {CLASS_NAME_CHARS} printable characters); replace it with a fresh copy")
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: class name {twice!r} is listed twice (each class needs its own name); replace "
                        "it with a fresh copy of the data set")
    return names


def _read_split(folder: Path, names: tuple[str, ...], files: DatasetFiles) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(folder / name, files) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar(dataset: Dataset, root: str | Path, allow_download: bool) -> CifarArrays:
    """Read a data set from `root`/<official folder>, fetching it first when it is missing and allowed."""
    files = DATASETS[dataset]
    root = Path(root).expanduser().resolve()
    if allow_download:
        fetch_if_missing(dataset, root)
    missing = files.missing(root)
    if missing:
        others = [d for d, f in DATASETS.items() if d is not dataset and (root / f.folder).is_dir()]
        hint = "".join(f" ({root} holds {DATASETS[d].folder}/: did you mean data={d.value}?)" for d in others[:1])
        raise DataError(
            f"{dataset.value} not found: expected {', '.join(missing)} in {root / files.folder}{hint}. "
            f"Either set data.root to the folder that holds {files.folder}/, "
            f"or drop data.download=false to fetch it (needs internet)."
        )
    folder = root / files.folder
    train_images, train_labels = _read_split(folder, files.train, files)
    test_images, test_labels = _read_split(folder, (files.test,), files)
    return CifarArrays(train_images, train_labels, test_images, test_labels, files.num_classes,
                       read_class_names(folder / files.meta, files))


def split_validation(labels: np.ndarray, val_size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced hold-out, the same for every run: (train indices, val indices)."""
    if val_size == 0:
        return np.arange(len(labels)), np.arange(0)
    per_class = val_size // num_classes
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < 2:
        raise ConfigError(f"data.val_size={val_size} is not allowed here: class {int(counts.argmin())} has "
                          f"{counts.min()} training image(s), and a class-balanced hold-out needs at least 2 in "
                          "every class (one to hold out, one to train on)")
    if val_size % num_classes or per_class >= counts.min():
        raise ConfigError(
            f"data.val_size={val_size} is not allowed: it must be a multiple of the {num_classes} classes "
            f"and leave training images in every class (at most {(counts.min() - 1) * num_classes} here)"
        )
    rng = np.random.default_rng(VAL_SPLIT_SEED)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)])
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val] = True
    return np.flatnonzero(~is_val), np.sort(val)
