"""A run's data on its device: the split, its fitted normalization, and the training stream of data.pipeline.

The one place that turns a loaded data set (cifar.CifarArrays) into what a run trains and evaluates on, for
training (loop.py) and for a trained run loaded back (saved_run.py), so that a net is never fed inputs
prepared differently from its training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import BaseConfig, Pipeline, RunSeeds
from ..contract import DATA_SIZES
from ..cores import usable_cores
from ..distributed import World
from .augment import augmented_once, build_augment
from .cifar import CifarArrays, split_validation
from .device_loader import DeviceLoader
from .normalization import ModelInput, fitted_normalization
from .stream import TrainingStream

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """A run's data on its device: the training stream, the held-out and test sets, their preparation."""

    loader: TrainingStream
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    prepare: ModelInput  # uint8 images -> the net's input (the fitted normalization in `prepare.normalization`)
    num_classes: int

    @property
    def normalization(self) -> nn.Module:
        return self.prepare.normalization

    @property
    def global_batch(self) -> int:
        return self.loader.batch_size

    def sizes(self) -> dict[str, int]:
        """Images in each split, for summary.json (the report says which data its numbers come from)."""
        return dict(zip(DATA_SIZES, (self.loader.num_images, len(self.val[0]), len(self.test[0]))))


def default_workers(world: World) -> int:
    """data.workers=null: the cores this process may use, shared with the other processes of its node, less
    one for the training process itself (at most 8: CIFAR's small images need no more)."""
    return max(0, min(8, usable_cores() // world.local_world_size - 1))


def worker_count(requested: int | None, world: World) -> int:
    """The DataLoader workers to start: data.workers, at most the cores this process may use (each worker
    holds a copy of the training images: more workers than cores only exhaust the memory). The number of
    workers does not change the images drawn (torchvision_loader.py), so a cap is said in the log, not refused."""
    if requested is None:
        return default_workers(world)
    cores = max(1, usable_cores() // world.local_world_size)  # the node's cores, shared by its processes
    if requested > cores:
        log.warning("data.workers=%d is more than the %d cores this process may use: starting %d workers",
                    requested, cores, cores)
        return cores
    return requested


def split_and_prepare(data: CifarArrays, cfg: BaseConfig, device: torch.device,
                      normalization_state: dict | None = None,
                      trust: Any = None) -> tuple[np.ndarray, np.ndarray, ModelInput]:
    """A run's split and its input preparation: the normalization fitted on its own training split (or
    given the state it was fitted to), on `device` (`trust`: a recorded config's, trust.CodeTrust)."""
    train_idx, val_idx = split_validation(data.train_labels, cfg.data.val_size, data.num_classes)
    normalization = fitted_normalization(cfg, data.train_images[train_idx], normalization_state, trust).to(device)
    return train_idx, val_idx, ModelInput(normalization, cfg.trainer.channels_last)


def build_run_data(data: CifarArrays, cfg: BaseConfig, device: torch.device, world: World = World(),
                   normalization_state: dict | None = None) -> RunData:
    """Split, normalize (fitting the normalization, or with the state it was fitted to) and move a loaded data
    set to the device as the run's config says, with the training stream of data.pipeline and the run's
    augmentation (augment.py): every process draws the same order and augmentation (the run's seeds) and keeps
    its shard of each global batch."""
    t, d = cfg.trainer, cfg.data
    train_idx, val_idx, prepare = split_and_prepare(data, cfg, device, normalization_state)

    def on_device(array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(device)

    per_process = t.batch_semantics == "per_process"
    global_batch = d.batch_size * (world.world_size if per_process else 1)
    augment, shard, seeds = build_augment(cfg), (world.rank, world.world_size), RunSeeds.of(cfg)
    loader: TrainingStream
    if Pipeline(d.pipeline) is Pipeline.torchvision:
        from .torchvision_loader import TorchvisionLoader  # torchvision and PIL only where they are used

        workers = worker_count(d.workers, world)
        loader = TorchvisionLoader(data.train_images[train_idx], data.train_labels[train_idx], global_batch,
                                   prepare, seeds, augment, workers, device, t.channels_last, shard)
    else:
        images = on_device(data.train_images[train_idx])
        if augment is not None and augment.once:  # one view per image, drawn now, reused every epoch
            images, augment = augmented_once(images, augment, seeds.augment), None
        order = torch.Generator(device).manual_seed(seeds.order)  # the same on every process
        # one generator for order and augmentation, as always, unless the run split its seeds by source
        crops = torch.Generator(device).manual_seed(seeds.augment) if seeds.split else None
        loader = DeviceLoader(images, on_device(data.train_labels[train_idx]), global_batch, prepare, order,
                              augment, shard, crops)
    return RunData(loader, (on_device(data.train_images[val_idx]), on_device(data.train_labels[val_idx])),
                   (on_device(data.test_images), on_device(data.test_labels)), prepare, data.num_classes)
