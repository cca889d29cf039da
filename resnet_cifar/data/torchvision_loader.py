"""data.pipeline=torchvision: the standard CIFAR input pipeline, made reproducible.

What most reproductions run (and the benchmark's "standard pipeline"): one
PIL image per `__getitem__`, the run's augmentation on it (the paper's:
torchvision's `RandomCrop(32, padding=4)` and `RandomHorizontalFlip`; see
augment.py), the image to a tensor, the run's normalization, a
`DataLoader` with worker processes. Two things differ from a plain
`DataLoader(shuffle=True)`, so that a run is a first-class run here:

- the order and the augmentation depend only on the run's seed, the epoch and
  the position in it (never on the number of workers or on which worker
  draws), so a resumed run sees the batches an uninterrupted one would; a
  run that split its seeds by source seeds an image's crop by seeds.augment,
  the epoch and the image itself, so that seeds.order changes no crop;
- every process of a DDP job draws the same global batch and keeps its own
  shard, as the device pipeline does.

The image becomes a tensor without ToTensor's division by 255: the run's
normalization (normalization.py, on uint8 pixels) does that scaling in the
arithmetic the device pipeline uses, so both pipelines feed the model the same
numbers for the same crop.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import RunSeeds
from .augment import Augmentation, augment_image
from .normalization import ModelInput
from .stream import check_batch_fits, own_slice

SEED_RANGE = 2**63  # torch.manual_seed takes any of these
STATIC_STREAM = 1  # a stream of seeds apart from the epochs' (epoch numbers are >= 0, this key is negative)


def _base_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed for a tuple of small integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([k % SEED_RANGE for k in keys]).generate_state(1, np.uint64)[0]) % SEED_RANGE


class CifarImages(Dataset):
    """CIFAR images as torchvision's CIFAR10 serves them, one PIL image per item; an item is an image index
    and the seed of its augmentation (None: none)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, prepare: ModelInput,
                 augment: Augmentation | None) -> None:
        self.images, self.labels, self.prepare, self.augment = images, labels, prepare, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[Tensor, int]:
        index, seed = item
        image = Image.fromarray(self.images[index])
        if seed is not None and self.augment is not None:
            image = augment_image(self.augment, image, seed)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # H, W, C uint8
        return self.prepare(pixels[None])[0], int(self.labels[index])


class GlobalBatches(Sampler):
    """Each global batch's own shard as (image index, seed) items, forever, from (epoch, position) on: an
    epoch is a seeded permutation cut into full global batches (the rest is left out, as the device
    pipeline does)."""

    def __init__(self, num_images: int, batch_size: int, seeds: RunSeeds, augment: Augmentation | None,
                 own: slice, start: tuple[int, int]) -> None:
        self.num_images, self.batch_size, self.seeds, self.augment = num_images, batch_size, seeds, augment
        self.own, self.start = own, start
        self.static_base = _base_seed(seeds.augment, -STATIC_STREAM)

    def _seeds(self, epoch_base: int, position: int, index: Tensor) -> list[int | None]:
        if self.augment is None:
            return [None] * len(index)
        if self.augment.once:  # one view per image, drawn from the seed alone
            return [(self.static_base + i) % SEED_RANGE for i in index.tolist()]
        if self.seeds.split:  # by the image, so that seeds.order moves no crop from one image to another
            return [(epoch_base + i) % SEED_RANGE for i in index.tolist()]
        first = position + (self.own.start or 0)  # random: a new draw each time an image is used
        return [(epoch_base + first + k) % SEED_RANGE for k in range(len(index))]

    def __iter__(self):
        epoch, position = self.start
        while True:
            epoch_base = _base_seed(self.seeds.order, epoch)
            # the crops' stream is the order's, as always, unless the run split its seeds by source
            crop_base = _base_seed(self.seeds.augment, epoch) if self.seeds.split else epoch_base
            order = torch.randperm(self.num_images, generator=torch.Generator().manual_seed(epoch_base))
            while position + self.batch_size <= self.num_images:
                index = order[position:position + self.batch_size][self.own]
                yield list(zip(index.tolist(), self._seeds(crop_base, position, index)))
                position += self.batch_size
            epoch, position = epoch + 1, 0


class TorchvisionLoader:
    """The training stream of data.pipeline=torchvision (stream.TrainingStream): next_batch() gives this
    process's shard of the next global batch on the device; its state is (epoch, position)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, prepare: ModelInput,
                 seeds: RunSeeds, augment: Augmentation | None, workers: int, device: torch.device,
                 channels_last: bool, shard: tuple[int, int] = (0, 1)) -> None:
        check_batch_fits(batch_size, len(images))
        self.num_images, self.batch_size = len(images), batch_size
        self.own = own_slice(batch_size, shard)
        self.images, self.labels, self.prepare = images, labels, prepare
        self.seeds, self.augment, self.workers = seeds, augment, workers
        self.device, self.channels_last = device, channels_last
        self.epoch, self.position = 0, 0
        self._batches = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_images // self.batch_size

    def _start(self) -> None:
        """The DataLoader from (epoch, position) on; its workers get the normalization as it is now (a resumed
        run has loaded its fitted state into it by then)."""
        dataset = CifarImages(self.images, self.labels, self.prepare.on(torch.device("cpu"), channels_last=False),
                              self.augment)
        sampler = GlobalBatches(self.num_images, self.batch_size, self.seeds, self.augment, self.own,
                                (self.epoch, self.position))
        self._batches = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=self.workers,
                                        pin_memory=self.device.type == "cuda"))

    def next_batch(self) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._start()
        x, y = next(self._batches)
        self.position += self.batch_size
        if self.position + self.batch_size > self.num_images:
            self.epoch, self.position = self.epoch + 1, 0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._batches = None  # started again from there at the next batch
