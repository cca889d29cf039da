"""The paper's augmentation on the device, for a whole batch at once: pad 4, random 32x32 crop, random flip.

No PIL, no per-image Python work: a batch's crops and flips are one gather (as in airbench's loader).
"""
from __future__ import annotations

import torch
from torch import Tensor

PAD = 4  # the paper's augmentation: 4 pixels on each side


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
