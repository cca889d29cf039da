"""What the training loop asks of an input pipeline (TrainingStream), and the evaluation batches.

Both pipelines (device_loader.DeviceLoader, torchvision_loader.TorchvisionLoader) implement the protocol and
import only this module and the leaves (augment, normalization), never each other: run_data.py picks one.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

from torch import Tensor

from ..errors import ConfigError


class TrainingStream(Protocol):
    """A run's training batches: each process's shard of the next global batch, on the device, ready for the
    net; its state goes into checkpoints, so that a resumed run sees the batches an uninterrupted one would."""

    batch_size: int  # the global batch
    num_images: int

    @property
    def batches_per_epoch(self) -> int: ...

    def next_batch(self) -> tuple[Tensor, Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def check_batch_fits(batch_size: int, num_images: int) -> None:
    """Both pipelines train on full global batches only: one must fit in the training split."""
    if batch_size > num_images:
        raise ConfigError(f"data.batch_size gives a global batch of {batch_size}, more than the {num_images} "
                          "training images")


def own_slice(batch_size: int, shard: tuple[int, int]) -> slice:
    """This process's part of a global batch: (rank, processes) -> its contiguous slice."""
    rank, processes = shard
    local = batch_size // processes
    return slice(rank * local, (rank + 1) * local)


def eval_batches(images: Tensor, labels: Tensor, batch_size: int,
                 prepare: Callable[[Tensor], Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """The single original view of every image, in order, last batch included, prepared for the net."""
    for start in range(0, len(images), batch_size):
        yield prepare(images[start:start + batch_size]), labels[start:start + batch_size]
