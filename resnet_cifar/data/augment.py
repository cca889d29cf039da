"""Augmentation: a plug-in (`augment=`, conf/augment/), the same on both input pipelines.

An augmentation is a callable named by `augment._target_`, called with its YAML's keys, that returns an object:

- `__call__(images, generator) -> images`: uint8 N x H x W x C images on their device in, the same shape and
  dtype out, every random draw from `generator` (so that the run's seed, its `seeds.augment`, and a resumed
  run's saved generator state decide it). The device pipeline calls it on each global batch (every process
  the same draws, then its own shard); the torchvision pipeline on each image, as a batch of one, with a
  generator seeded by the image's place in the run (seed, epoch, position).
- `once`: False draws anew each time an image is used (the paper); True draws once per image when the run
  starts and reuses that view every epoch (the seed README's first loader, which transformed its data set once).
- optionally `image(pil_image, seed) -> pil_image`: what the torchvision pipeline applies instead of
  `__call__` (the paper's crop and flip use torchvision's own transforms there: the standard pipeline).

`augment=none` makes nothing (`_target_: null`): the images as they are. The built-in `random` and `static` are
CropFlip: pad 4, a random 32 x 32 crop and a horizontal flip, a whole batch in one gather (airbench's way).
"""
from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np
import torch
from torch import Tensor

from ..config import BaseConfig
from ..plugins import ConfigSource, Plugin

PAD = 4  # the paper's augmentation: 4 pixels on each side
CHECK_IMAGES = 3  # the batch an augmentation is checked on before a run
ONCE_CHUNK = 10_000  # images augmented at a time when a run draws its views once


class Augmentation(Protocol):
    once: bool

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


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


class CropFlip:
    """The paper's augmentation: zero-pad `pad` pixels, a random crop of the original size, a random horizontal
    flip (`once`: drawn once per image for the whole run)."""

    def __init__(self, pad: int = PAD, once: bool = False) -> None:
        if not (isinstance(pad, int) and pad >= 0):
            raise ValueError(f"pad={pad} must be a whole number of pixels >= 0")
        self.pad, self.once = pad, once
        self._torchvision = None

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        crops = draw_crops(len(images), generator, images.device, self.pad)  # all draws first: then chunks
        return torch.cat([crop_flip(images[i:i + ONCE_CHUNK], *(c[i:i + ONCE_CHUNK] for c in crops), pad=self.pad)
                          for i in range(0, len(images), ONCE_CHUNK)]) if len(images) else images

    def image(self, image, seed: int):
        """The torchvision pipeline's path: torchvision's RandomCrop and RandomHorizontalFlip on a PIL image,
        drawing from the global generator seeded with the image's seed (the standard pipeline)."""
        if self._torchvision is None:
            from torchvision import transforms as T  # the torchvision pipeline's only

            self._torchvision = T.Compose([T.RandomCrop(image.size[0], padding=self.pad), T.RandomHorizontalFlip()])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._torchvision(image)


def build_augment(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> Augmentation | None:
    """The run's augmentation (None for augment=none)."""
    plugin = Plugin.of(cfg, "augment", sources)
    if plugin.makes_nothing:
        return None
    made = plugin.build()
    if not callable(made) or not isinstance(getattr(made, "once", None), bool):
        raise plugin.fail(f"{plugin.target} made a {type(made).__name__}: an augmentation is callable as "
                          "(images, generator) and says whether it draws `once` (True or False): "
                          "resnet_cifar/data/augment.py")
    return made


def augmented_once(images: Tensor, augment: Augmentation, seed: int) -> Tensor:
    """A run's training images, each given one view drawn from `seed` (augmentations with `once`)."""
    return augment(images, torch.Generator(images.device).manual_seed(seed))


def augment_image(augment: Augmentation, image, seed: int):
    """One PIL image augmented for the torchvision pipeline: the plug-in's own `image` path, else its tensor
    path on the image as a batch of one, drawing from a generator seeded by the image's seed."""
    own = getattr(augment, "image", None)
    if callable(own):
        return own(image, seed)
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())[None]
    return Image.fromarray(augment(pixels, torch.Generator().manual_seed(seed))[0].numpy())


def check_augment(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> None:
    """Before a run: the augmentation imports, takes its keys, and maps a batch of CIFAR images to images of the
    same shape and dtype, drawing from the generator it is given (the same draws give the same images)."""
    plugin = Plugin.of(cfg, "augment", sources)
    augment = build_augment(cfg, sources)
    if augment is None:
        return
    images = torch.randint(0, 256, (CHECK_IMAGES, 32, 32, 3), dtype=torch.uint8)
    try:
        first = augment(images, torch.Generator().manual_seed(0))
        again = augment(images, torch.Generator().manual_seed(0))
    except Exception as e:
        raise plugin.fail(f"{plugin.target} fails on a batch of {CHECK_IMAGES} CIFAR images {tuple(images.shape)} "
                          f"(uint8, N x H x W x C): {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    if not isinstance(first, Tensor) or first.shape != images.shape or first.dtype != torch.uint8:
        found = (tuple(first.shape), first.dtype) if isinstance(first, Tensor) else type(first).__name__
        raise plugin.fail(f"{plugin.target} maps {CHECK_IMAGES} images {tuple(images.shape)} uint8 to {found}: an "
                          "augmentation gives back images of the same shape and dtype")
    if not torch.equal(first, again):
        raise plugin.fail(f"{plugin.target} gives other images for the same generator state: every random draw "
                          "must come from the generator it is given (a resumed run must see what an uninterrupted "
                          "one would)")
