"""Input normalizations: fitted on the run's training split, applied to every batch on the device.

A normalization is a plug-in (`normalization._target_`, conf/normalization/): an `nn.Module` with

- `fit(train_images)`: learn what it needs from the run's training split (uint8 numpy, N x 32 x 32 x 3, the
  held-out images excluded), into buffers registered in `__init__` (so that its `state_dict` after `fit`
  loads into a fresh instance: the run folder keeps it, and a resumed run or `evaluate` uses it again
  exactly, see RunFolder.save_normalization);
- `forward(images)`: a batch of uint8 N x 32 x 32 x 3 images on the device -> the net's float N x 3 x 32 x 32
  input (any memory format: ModelInput lays it out as the run trains).

The five built-ins are `AffineNormalization`s ((x - mean) / std per pixel or channel); `ZCAWhitening` shows
one that is not: a 3072 x 3072 matrix fitted on the training split.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ..config import BaseConfig
from ..plugins import ConfigSource, Plugin
from .cifar import IMAGE_SHAPE

PIXELS = int(np.prod(IMAGE_SHAPE))  # 3072 values an image


def pixel_moments(images: np.ndarray, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and mean square (float64, HWC), in chunks to bound memory."""
    total, total_sq = np.zeros(IMAGE_SHAPE), np.zeros(IMAGE_SHAPE)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float64)
        total += part.sum(0)
        total_sq += np.square(part).sum(0)
    return total / len(images), total_sq / len(images)


class AffineNormalization(nn.Module):
    """(x - mean) / std, with mean and std in pixel units (0..255) broadcastable to H x W x C: computed as one
    fused multiply-add with the scale and shift held in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(IMAGE_SHAPE))
        self.register_buffer("scale", torch.ones(IMAGE_SHAPE))

    def statistics(self, train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) in pixel units, from the training split (or fixed)."""
        raise NotImplementedError

    def fit(self, train_images: np.ndarray) -> None:
        mean, std = self.statistics(train_images)
        scale, shift = np.broadcast_to(1.0 / std, IMAGE_SHAPE), np.broadcast_to(-mean / std, IMAGE_SHAPE)
        self.scale.copy_(torch.as_tensor(np.array(scale), dtype=torch.float32))
        self.shift.copy_(torch.as_tensor(np.array(shift), dtype=torch.float32))

    def forward(self, images: Tensor) -> Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale).permute(0, 3, 1, 2)


class PerPixelMean(AffineNormalization):
    """The paper: subtract the training split's mean image, on the [0, 1] scale."""

    def statistics(self, train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pixel_moments(train_images)[0], np.full(3, 255.0)


class ChannelStats(AffineNormalization):
    """Per-channel mean and standard deviation of the training split."""

    def statistics(self, train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, mean_sq = (m.mean((0, 1)) for m in pixel_moments(train_images))
        return mean, np.sqrt(mean_sq - mean**2)


class FixedMeanStd(AffineNormalization):
    """Per-channel constants, not fitted (ImageNet's, or none): `mean` and `std` are for pixels / pixel_scale
    (255: the [0, 1] scale the published constants use; 1: raw pixel values)."""

    def __init__(self, mean: list[float], std: list[float], pixel_scale: float = 255) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (one per channel), std > 0; got mean={mean}, std={std}")
        self.mean, self.std, self.pixel_scale = np.array(mean), np.array(std), pixel_scale

    def statistics(self, train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.mean * self.pixel_scale, self.std * self.pixel_scale


class ZCAWhitening(nn.Module):
    """ZCA whitening of the whole image: x -> W (x - mean), W = U diag(1 / sqrt(lambda + epsilon)) U^T from the
    eigen-decomposition of the training split's pixel covariance (on the [0, 1] scale), so that the whitened
    training images have (nearly) identity covariance while staying as close as possible to the originals.
    Not an elementwise map: each output pixel mixes all 3072 input values."""

    def __init__(self, epsilon: float = 0.01) -> None:
        super().__init__()
        if not epsilon > 0:
            raise ValueError(f"epsilon={epsilon} must be > 0 (it keeps the near-zero eigenvalues from exploding)")
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(PIXELS))
        self.register_buffer("whitening", torch.eye(PIXELS))

    def fit(self, train_images: np.ndarray, chunk: int = 5_000) -> None:
        n = len(train_images)
        total, gram = np.zeros(PIXELS), np.zeros((PIXELS, PIXELS))
        for start in range(0, n, chunk):
            x = train_images[start:start + chunk].reshape(-1, PIXELS).astype(np.float64) / 255.0
            total += x.sum(0)
            gram += x.T @ x
        mean = total / n
        covariance = (gram - n * np.outer(mean, mean)) / max(1, n - 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        whitening = (eigenvectors / np.sqrt(np.clip(eigenvalues, 0, None) + self.epsilon)) @ eigenvectors.T
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.whitening.copy_(torch.as_tensor(whitening, dtype=torch.float32))

    def forward(self, images: Tensor) -> Tensor:
        x = images.reshape(len(images), PIXELS).float() / 255.0 - self.mean
        return (x @ self.whitening).reshape(len(images), *IMAGE_SHAPE).permute(0, 3, 1, 2)


class ModelInput:
    """uint8 N x H x W x C images -> the net's input: the run's normalization, laid out as the run trains
    (channels_last strides unless asked otherwise). What training, evaluation and a loaded run all use."""

    def __init__(self, normalization: nn.Module, channels_last: bool) -> None:
        self.normalization, self.channels_last = normalization, channels_last

    def __call__(self, images: Tensor) -> Tensor:
        x = self.normalization(images)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def on(self, device: torch.device, channels_last: bool) -> ModelInput:
        """The same normalization elsewhere (the torchvision pipeline's workers normalize on the CPU)."""
        return ModelInput(copy.deepcopy(self.normalization).to(device), channels_last)


def build_normalization(cfg: BaseConfig, sources: Iterable[ConfigSource] = (), trust: Any = None) -> nn.Module:
    """The run's normalization, not fitted yet (`trust`: a recorded config's, trust.CodeTrust)."""
    plugin = Plugin.of(cfg, "normalization", sources, trust)
    normalization = plugin.build()
    if not isinstance(normalization, nn.Module) or not callable(getattr(normalization, "fit", None)):
        raise plugin.fail(f"{plugin.target} made a {type(normalization).__name__}: a normalization is an nn.Module "
                          "with a fit(train_images) method (resnet_cifar/data/normalization.py)")
    return normalization


def non_finite(state: dict) -> str | None:
    """The first tensor of a state that holds NaN or infinity (None if there is none)."""
    return next((name for name, value in state.items() if isinstance(value, Tensor) and value.is_floating_point()
                 and not bool(torch.isfinite(value).all())), None)


def fitted_normalization(cfg: BaseConfig, train_images: np.ndarray, state: dict | None = None,
                         trust: Any = None) -> nn.Module:
    """The run's normalization, fitted on its training split, or with the state it was fitted to (its run
    folder's normalization.pt: exactly the numbers it trained with). A state with NaN or infinity is refused,
    naming the plug-in, before it is saved or used: every image would become NaN, and a saved one would be
    reused by every resume."""
    plugin = Plugin.of(cfg, "normalization")
    normalization = build_normalization(cfg, trust=trust)
    if state is None:
        normalization.fit(train_images)
        bad = non_finite(normalization.state_dict())
        if bad:
            raise plugin.fail(f"{plugin.target}.fit() stored non-finite values ({bad} holds NaN or infinity) on the "
                              f"{len(train_images)} training images: nothing was saved; fix the plug-in and run "
                              "again")
    else:
        bad = non_finite(state)
        if bad:
            raise plugin.fail(f"the saved normalization state holds non-finite values ({bad}: NaN or infinity), "
                              "saved by a plug-in or a version that did not check it: delete the run folder's "
                              "normalization.pt and its checkpoint.pt to start the run again")
        normalization.load_state_dict(state)
    return normalization


def check_normalization(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> None:
    """Before a run: the normalization imports, takes its keys, and is a module with fit()."""
    build_normalization(cfg, sources)
