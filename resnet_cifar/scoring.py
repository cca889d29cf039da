"""Test (and validation) loss and error of a model: every image once, in its single original view."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Precision
from .data.stream import eval_batches
from .distributed import World
from .step import autocast


def outputs(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
            precision: Precision) -> Iterator[tuple[Tensor, Tensor]]:
    """(logits in fp32, labels) of each batch, in the run's precision: the arithmetic of every evaluation
    (a run's own, and python -m resnet_cifar.evaluate's)."""
    for x, y in batches:
        with autocast(device, precision):
            yield model(x).float(), y


@torch.no_grad()
def loss_and_error(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int,
                   prepare: Callable[[Tensor], Tensor],
                   world: World = World(), precision: Precision = Precision.fp32) -> tuple[float, float]:
    """(mean loss, error %) over every image exactly once.

    Each process evaluates its own contiguous share; the sums are added up.
    """
    model.eval()
    share = -(-len(images) // world.world_size)
    own = slice(world.rank * share, (world.rank + 1) * share)
    totals = torch.zeros(2, dtype=torch.float64, device=images.device)  # loss sum, wrong count
    for out, y in outputs(model, eval_batches(images[own], labels[own], batch_size, prepare), images.device,
                          precision):
        totals[0] += F.cross_entropy(out, y, reduction="sum")
        totals[1] += (out.argmax(1) != y).sum()
    model.train()
    loss, wrong = world.sum_(totals).tolist()
    return loss / len(images), 100.0 * wrong / len(images)
