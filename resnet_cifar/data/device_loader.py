"""data.pipeline=device: the whole training split on the training device, a batch's crops in one gather.

The split lives on the device as one uint8 NHWC tensor (as in airbench's loader); each step indexes a
batch and augments it there (augment.py). No PIL, no DataLoader, no per-image Python work.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .augment import Augmentation
from ..errors import RunFolderError
from .normalization import ModelInput
from .stream import check_batch_fits, own_slice

CROPS_AT_EPOCH_START = "crop_generator_at_epoch_start"  # a checkpoint's key for a run with split seeds


class DeviceLoader:
    """The training stream: a fresh seeded permutation each epoch, full global batches only.

    With several processes every one draws the same permutation and the same
    crops (same seed) for the whole global batch and keeps its own slice
    (`shard` = (rank, processes)): one step consumes one global batch of
    distinct images, augmented exactly as one process would augment it.
    Its state (epoch, position, permutation, generator) goes into checkpoints,
    so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, prepare: ModelInput,
                 generator: torch.Generator, augment: Augmentation | None, shard: tuple[int, int] = (0, 1),
                 crop_generator: torch.Generator | None = None) -> None:
        """`generator` draws the order and the augmentation's draws, on every global batch (augment.py), unless
        `crop_generator` is given (a run that split its seeds by source): then each epoch's views of all images
        are drawn from it at the epoch's start, in the images' own order, so that an image's crop depends on
        seeds.augment and the epoch only, never on where seeds.order put it. `augment`: or None."""
        check_batch_fits(batch_size, len(images))
        self.images, self.labels = images, labels
        self.batch_size, self.prepare = batch_size, prepare
        self.generator, self.augment = generator, augment
        self.crop_generator = crop_generator
        self.own = own_slice(batch_size, shard)
        self.epoch, self.position, self.perm = 0, 0, None
        self.views: Tensor | None = None  # this epoch's augmented images, with a crop generator
        self.crops_at_epoch_start: Tensor | None = None  # its state before them: what a checkpoint keeps

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
            self._draw_views()
        batch = self.perm[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        index = batch[self.own]
        if self.augment is None:
            x = self.images[index]
        elif self.views is not None:
            x = self.views[index]
        else:  # the whole global batch, as every process draws it, then this process's shard
            x = self.augment(self.images[batch], self.generator)[self.own]
        return self.prepare(x), self.labels[index]

    def _draw_views(self) -> None:
        """With a crop generator: every image's view for this epoch, in index order (every process the same)."""
        if self.crop_generator is None or self.augment is None:
            return
        self.crops_at_epoch_start = self.crop_generator.get_state()
        self.views = self.augment(self.images, self.crop_generator)

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position,
                 "perm": None if self.perm is None else self.perm.cpu(),
                 "generator": self.generator.get_state()}
        if self.crop_generator is not None:  # at the epoch's start: a resumed run draws its views again
            at_start = self.crops_at_epoch_start if self.views is not None else self.crop_generator.get_state()
            state[CROPS_AT_EPOCH_START] = at_start
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.perm = None if state["perm"] is None else state["perm"].to(self.images.device)
        self.generator.set_state(state["generator"])
        if self.crop_generator is not None:
            if CROPS_AT_EPOCH_START not in state:
                raise RunFolderError("this checkpoint's run split its seeds by source with a version that drew "
                                      "crops in batch order; resume it with that version")
            self.crop_generator.set_state(state[CROPS_AT_EPOCH_START])
            self.views = None
            if self.perm is not None:
                self._draw_views()
