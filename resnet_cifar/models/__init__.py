"""The nets: any callable that returns an nn.Module, named by `arch._target_` (conf/arch/NAME.yaml, or a YAML
of the user's own --config-dir).

The callable is called as `factory(depth=..., num_classes=..., [shortcut="A"|"B"|"C"], **the YAML's keys)`:
`shortcut` only if it takes one (the nets with shortcuts), and the depths it accepts are its own rule (it
refuses others by raising). The built-ins use the same seam: resnet.py (He et al. 2015) and the other nets
of this folder, each named only by its own YAML in conf/arch/.

A net may say which of its layers are its "responses" (Figure 7 of the 2015 paper): a method
`response_layers()` returning the modules whose outputs they are, in forward order. A net that does not say
so is left out of Figure 7, with a line saying why, never measured at guessed layers.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..config import BaseConfig, Shortcut
from ..data.files import DATASETS
from ..plugins import ConfigSource, Plugin, takes

CHECK_BATCH = 2  # images of the forward pass that checks a net before a run (two: BatchNorm needs more than one)
RESPONSES_METHOD = "response_layers"


def build_model(cfg: BaseConfig, num_classes: int, sources: Iterable[ConfigSource] = ()) -> nn.Module:
    """The run's net, freshly initialised from the current RNG state (the caller seeds it)."""
    arch = Plugin.of(cfg, "arch", sources)
    model = arch.build(depth=cfg.depth, num_classes=num_classes, optional={"shortcut": cfg.shortcut.value})
    if not isinstance(model, nn.Module):
        raise arch.fail(f"{arch.target} returned a {type(model).__name__}, not an nn.Module")
    return model


def check_model(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> None:
    """The net a run will train, checked before it runs: it imports, takes the keys it is given, accepts the
    depth (and the shortcut, if it is not a net with shortcuts), returns an nn.Module, and maps one batch of
    CIFAR images to one score per class, as it trains (train mode) and as it is evaluated (eval mode)."""
    arch = Plugin.of(cfg, "arch", sources)
    num_classes = DATASETS[cfg.data.name].num_classes
    if not takes(arch.locate(), "shortcut") and cfg.shortcut is not Shortcut.A:
        raise arch.fail(f"shortcut={cfg.shortcut.value} has no meaning for arch={arch.name}: {arch.target} takes no "
                        "shortcut (a net without shortcuts); use a net with shortcuts, or keep the default "
                        "shortcut=A")
    model = build_model(cfg, num_classes, sources)
    batch = torch.randn(CHECK_BATCH, 3, 32, 32)
    for mode in ("train", "eval"):
        try:
            with torch.no_grad():
                out = model.train(mode == "train")(batch)
        except Exception as e:
            raise arch.fail(f"the net of {arch.target} (depth={cfg.depth}) fails a forward pass in {mode} mode on a "
                            f"batch of {CHECK_BATCH} CIFAR images {tuple(batch.shape)}: {type(e).__name__}: {e}") \
                from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (CHECK_BATCH, num_classes):
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise arch.fail(f"the net of {arch.target} maps a batch of {CHECK_BATCH} images to {found}, not to "
                            f"{(CHECK_BATCH, num_classes)} (one score per class of {cfg.data.name.value})")


def response_layers(model: nn.Module) -> list[nn.Module] | None:
    """The modules whose outputs are the net's responses (Figure 7), or None if the net does not say."""
    method = getattr(model, RESPONSES_METHOD, None)
    return list(method()) if callable(method) else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
