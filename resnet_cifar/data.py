"""CIFAR from the official python pickles to normalized batches on the training device.

The whole split lives on the device as one uint8 NHWC tensor (as in airbench's
loader); each step indexes a batch and does the paper's augmentation (pad 4,
random 32x32 crop, random horizontal flip) for the whole batch in one gather.
No PIL, no per-image Python work. (data.pipeline=torchvision, the standard
pipeline with PIL transforms and a DataLoader, is torchvision_pipeline.py.)
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch import Tensor

from .config import Augment, BaseConfig, Dataset, Normalization, Pipeline
from .datasets import DATASETS, DatasetFiles
from .distributed import World
from .errors import ConfigError, DataError
from .fetch import fetch_if_missing

if TYPE_CHECKING:
    from .torchvision_pipeline import TorchvisionLoader

IMAGE_SHAPE = (32, 32, 3)  # H, W, C as held on the device
PAD = 4  # the paper's augmentation: 4 pixels on each side
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, encoding="latin1").load()
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


def read_class_names(path: Path, files: DatasetFiles) -> tuple[str, ...]:
    """The class names of the meta file, one per class (read, like every file, by CifarUnpickler)."""
    names = _unpickle(path).get(files.names_key)
    if not isinstance(names, list) or len(names) != files.num_classes:
        found = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
        raise DataError(f"{path}: '{files.names_key}' must list the {files.num_classes} class names, found {found}; "
                        "replace it with a fresh copy of the data set")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


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


def _pixel_moments(images: np.ndarray, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and mean square (float64, HWC), in chunks to bound memory."""
    total, total_sq = np.zeros(IMAGE_SHAPE), np.zeros(IMAGE_SHAPE)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float64)
        total += part.sum(0)
        total_sq += np.square(part).sum(0)
    return total / len(images), total_sq / len(images)


def normalization_stats(kind: Normalization, train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) in pixel units (0..255), broadcastable to HWC; from the training split only."""
    if kind is Normalization.per_pixel_mean:
        return _pixel_moments(train_images)[0], np.full(3, 255.0)
    if kind is Normalization.channel_stats:
        mean, mean_sq = (m.mean((0, 1)) for m in _pixel_moments(train_images))
        return mean, np.sqrt(mean_sq - mean**2)
    if kind is Normalization.imagenet:
        return np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    if kind is Normalization.unit:
        return np.zeros(3), np.full(3, 255.0)
    return np.zeros(3), np.ones(3)  # raw


class Normalize:
    """uint8 NHWC batch -> float NCHW model input (channels_last strides unless asked otherwise)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, device: torch.device, channels_last: bool) -> None:
        self.scale = torch.as_tensor(1.0 / std, dtype=torch.float32, device=device)
        self.shift = torch.as_tensor(-mean / std, dtype=torch.float32, device=device)
        self.channels_last = channels_last

    def __call__(self, images: Tensor) -> Tensor:
        x = torch.addcmul(self.shift, images.float(), self.scale).permute(0, 3, 1, 2)
        return x if self.channels_last else x.contiguous()

    def on(self, device: torch.device, channels_last: bool) -> Normalize:
        """The same normalization elsewhere (the torchvision pipeline's workers normalize on the CPU)."""
        moved = Normalize.__new__(Normalize)
        moved.scale, moved.shift, moved.channels_last = self.scale.to(device), self.shift.to(device), channels_last
        return moved


def draw_crops(n: int, generator: torch.Generator, device: torch.device,
               pad: int = PAD) -> tuple[Tensor, Tensor, Tensor]:
    """Random (row offset, column offset, flip) for n images, each (n, 1)."""
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    flip = torch.rand(n, 1, generator=generator, device=device) < 0.5
    return dy, dx, flip


def crop_flip(images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int = PAD) -> Tensor:
    """Zero-pad each side by `pad` and cut each image's window, flipped where asked.

    One gather for the whole batch: row and column indices per image, the
    column indices reversed for the flipped ones.
    """
    b, h, w, _ = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))
    rows = dy + torch.arange(h, device=device)
    cols = dx + torch.arange(w, device=device)
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(b, device=device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def augment_once(images: Tensor, seed: int, chunk: int = 10_000) -> Tensor:
    """data.augment=static on the device: one crop and flip per image, drawn once from the run's seed (the
    seed README's first loader, which transformed the data set once and reused it every epoch)."""
    generator = torch.Generator(images.device).manual_seed(seed)
    crops = draw_crops(len(images), generator, images.device)
    return torch.cat([crop_flip(images[i:i + chunk], *(c[i:i + chunk] for c in crops))
                      for i in range(0, len(images), chunk)])


def split_and_normalize(data: CifarArrays, val_size: int, kind: Normalization, device: torch.device,
                        channels_last: bool) -> tuple[np.ndarray, np.ndarray, Normalize]:
    """A run's split and its input normalization (statistics of its own training split): what
    training uses, and what an analysis of its model must use again."""
    train_idx, val_idx = split_validation(data.train_labels, val_size, data.num_classes)
    mean, std = normalization_stats(kind, data.train_images[train_idx])
    return train_idx, val_idx, Normalize(mean, std, device, channels_last)


def check_batch_fits(batch_size: int, num_images: int) -> None:
    """Both pipelines train on full global batches only: one must fit in the training split."""
    if batch_size > num_images:
        raise ConfigError(f"data.batch_size gives a global batch of {batch_size}, more than the {num_images} "
                          "training images")


class CifarLoader:
    """The training stream: a fresh seeded permutation each epoch, full global batches only.

    With several processes every one draws the same permutation and the same
    crops (same seed) for the whole global batch and keeps its own slice
    (`shard` = (rank, processes)): one step consumes one global batch of
    distinct images, augmented exactly as one process would augment it.
    Its state (epoch, position, permutation, generator) goes into checkpoints,
    so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, normalize: Normalize,
                 generator: torch.Generator, augment: bool, shard: tuple[int, int] = (0, 1)) -> None:
        check_batch_fits(batch_size, len(images))
        self.images, self.labels = images, labels
        self.batch_size, self.normalize = batch_size, normalize
        self.generator, self.augment = generator, augment
        rank, processes = shard
        local = batch_size // processes
        self.own = slice(rank * local, (rank + 1) * local)
        self.epoch, self.position, self.perm = 0, 0, None

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def next_batch(self) -> tuple[Tensor, Tensor]:
        if self.perm is None or self.position + self.batch_size > len(self.images):
            if self.perm is not None:
                self.epoch += 1
            self.perm = torch.randperm(len(self.images), generator=self.generator, device=self.images.device)
            self.position = 0
        index = self.perm[self.position:self.position + self.batch_size][self.own]
        self.position += self.batch_size
        x = self.images[index]
        if self.augment:
            crops = draw_crops(self.batch_size, self.generator, x.device)
            x = crop_flip(x, *(c[self.own] for c in crops))
        return self.normalize(x), self.labels[index]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position,
                "perm": None if self.perm is None else self.perm.cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.perm = None if state["perm"] is None else state["perm"].to(self.images.device)
        self.generator.set_state(state["generator"])


def eval_batches(images: Tensor, labels: Tensor, batch_size: int, normalize: Normalize) -> Iterator[tuple[Tensor, Tensor]]:
    """The single original view of every image, in order, last batch included."""
    for start in range(0, len(images), batch_size):
        yield normalize(images[start:start + batch_size]), labels[start:start + batch_size]


@dataclass
class RunData:
    """A run's data on its device: the training stream, the held-out and test sets, their normalization."""

    loader: CifarLoader | TorchvisionLoader
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    normalize: Normalize
    num_classes: int

    @property
    def global_batch(self) -> int:
        return self.loader.batch_size

    def sizes(self) -> dict[str, int]:
        """Images in each split, for summary.json (the report says which data its numbers come from)."""
        return {"train_images": self.loader.num_images, "val_images": len(self.val[0]),
                "test_images": len(self.test[0])}


def default_workers(world: World) -> int:
    """data.workers=null: the cores this process may use, shared with the other processes of its node, less
    one for the training process itself (at most 8: CIFAR's small images need no more)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, cores // world.local_world_size - 1))


def run_data(data: CifarArrays, cfg: BaseConfig, device: torch.device, world: World = World()) -> RunData:
    """Split, normalize and move a loaded data set to the device as the run's config says, with the training
    stream of data.pipeline: every process draws the same order and crops (the run's seed) and keeps its
    shard of each global batch."""
    t, d = cfg.trainer, cfg.data
    train_idx, val_idx, normalize = split_and_normalize(data, d.val_size, cfg.normalization.name, device,
                                                        t.channels_last)

    def on_device(array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(device)

    per_process = t.batch_semantics == "per_process"
    global_batch = d.batch_size * (world.world_size if per_process else 1)
    augment, shard = Augment(d.augment), (world.rank, world.world_size)
    if Pipeline(d.pipeline) is Pipeline.torchvision:
        from .torchvision_pipeline import TorchvisionLoader  # torchvision and PIL only where they are used

        workers = default_workers(world) if d.workers is None else d.workers
        loader = TorchvisionLoader(data.train_images[train_idx], data.train_labels[train_idx], global_batch,
                                   normalize, cfg.seed, augment, workers, device, t.channels_last, shard)
    else:
        images = on_device(data.train_images[train_idx])
        if augment is Augment.static:
            images = augment_once(images, cfg.seed)
        generator = torch.Generator(device).manual_seed(cfg.seed)  # the same on every process
        loader = CifarLoader(images, on_device(data.train_labels[train_idx]), global_batch, normalize, generator,
                             augment is Augment.random, shard)
    return RunData(loader, (on_device(data.train_images[val_idx]), on_device(data.train_labels[val_idx])),
                   (on_device(data.test_images), on_device(data.test_labels)), normalize, data.num_classes)
