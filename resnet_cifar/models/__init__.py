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

import time
from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

from ..config import BaseConfig, Shortcut
from ..errors import ConfigError
from ..plugins import ConfigSource, Plugin, takes

# The forward passes that check a net before a run: an odd batch (a net that only works for a batch of 2, or
# of any even size, fails here, not at its first step), several calls in a row (a net whose output changes
# shape after its first calls), then the run's own batch where that takes under FULL_BATCH_CHECK_S.
CHECK_BATCH = 3
CHECK_CALLS = 3
FULL_BATCH_CHECK_S = 1.0
RESPONSES_METHOD = "response_layers"


@contextmanager
def parameter_budget(limit: int, what: str) -> Iterator[None]:
    """While a net is built, count the values of every parameter and buffer it registers, and stop the
    build as soon as they exceed `limit`: a depth of 100004 is refused after a fraction of the net is made,
    before it exhausts the memory (and without building it twice to count)."""
    counted = 0

    def count(module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        nonlocal counted
        counted += tensor.numel() if tensor is not None else 0
        if counted > limit:
            raise ConfigError(f"{what} has more than {limit:,} parameters and buffers (trainer.max_parameters): "
                              "refused before it was built whole, so that it cannot exhaust the memory; raise "
                              "trainer.max_parameters (evaluate, the report: --max-parameters) if it is meant")

    handles = [register_module_parameter_registration_hook(count), register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def build_model(cfg: BaseConfig, num_classes: int, sources: Iterable[ConfigSource] = (),
                max_parameters: int | None = None, trust: Any = None) -> nn.Module:
    """The run's net, freshly initialised from the current RNG state (the caller seeds it). Its parameters
    and buffers are counted first on the meta device (nothing allocated, no random number drawn), and a net
    of more than `max_parameters` values is refused there, as soon as the count passes the limit
    (trainer.max_parameters unless given: a loaded run is built under its loader's limit, never the one a folder
    recorded); a net that cannot be made on the meta device is counted as it is built for real instead.
    `trust`: a recorded config's (trust.CodeTrust), whose plug-in is imported only where trusted."""
    arch = Plugin.of(cfg, "arch", sources, trust)
    limit = cfg.trainer.max_parameters if max_parameters is None else max_parameters
    what = f"the net (depth={cfg.depth})"

    def make() -> nn.Module:
        return arch.build(depth=cfg.depth, num_classes=num_classes, optional={"shortcut": cfg.shortcut.value})

    try:
        with torch.device("meta"), parameter_budget(limit, what):
            make()
        counted = True
    except ConfigError as e:
        if "trainer.max_parameters" in str(e):
            raise
        counted = False  # a refusal of its own is made again below, where it says so on the real device
    except Exception:  # noqa: BLE001 - a net that cannot be made on the meta device: counted for real below
        counted = False
    with parameter_budget(limit, what) if not counted else nullcontext():
        model = make()
    if not isinstance(model, nn.Module):
        raise arch.fail(f"{arch.target} returned a {type(model).__name__}, not an nn.Module")
    return model


def takes_shortcut(cfg: BaseConfig) -> bool:
    """Whether the run's net is one with shortcuts (its callable takes `shortcut`): a plain net has none."""
    return takes(Plugin.of(cfg, "arch").locate(), "shortcut")


def per_process_batch(cfg: BaseConfig) -> int:
    """The training batch each process of the run feeds its net (data.batch_size over the processes where it
    is the global batch)."""
    t = cfg.trainer
    processes = t.nproc_per_node * t.nnodes
    return cfg.data.batch_size // processes if t.batch_semantics == "global" else cfg.data.batch_size


def check_model(cfg: BaseConfig, num_classes: int, sources: Iterable[ConfigSource] = ()) -> None:
    """The net a run will train, checked before it runs: it imports, takes the keys it is given, accepts the
    depth (and the shortcut, if it is not a net with shortcuts), stays within trainer.max_parameters, returns
    an nn.Module, and maps batches of CIFAR images to one score per class, as it trains (train mode, several
    calls, an odd batch and the run's own where cheap) and as it is evaluated (eval mode)."""
    arch = Plugin.of(cfg, "arch", sources)
    if not takes(arch.locate(), "shortcut") and cfg.shortcut is not Shortcut.A:
        raise arch.fail(f"shortcut={cfg.shortcut.value} has no meaning for arch={arch.name}: {arch.target} takes no "
                        "shortcut (a net without shortcuts); use a net with shortcuts, or keep the default "
                        "shortcut=A")
    model = build_model(cfg, num_classes, sources)

    def forward(mode: str, size: int, call: int) -> float:
        batch = torch.randn(size, 3, 32, 32)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                out = model.train(mode == "train")(batch)
        except Exception as e:
            raise arch.fail(f"the net of {arch.target} (depth={cfg.depth}) fails forward pass {call} in {mode} mode "
                            f"on a batch of {size} CIFAR images {tuple(batch.shape)}: {type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (size, num_classes):
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise arch.fail(f"the net of {arch.target} maps a batch of {size} images to {found} in forward pass "
                            f"{call} ({mode} mode), not to {(size, num_classes)} (one score per class of "
                            f"{cfg.data.name.value})")
        return time.perf_counter() - start

    seconds = max(forward("train", CHECK_BATCH, call) for call in range(1, CHECK_CALLS + 1))
    forward("eval", CHECK_BATCH, CHECK_CALLS + 1)
    batch = per_process_batch(cfg)
    if batch != CHECK_BATCH and seconds * batch / CHECK_BATCH < FULL_BATCH_CHECK_S:
        forward("train", batch, CHECK_CALLS + 2)


def response_layers(model: nn.Module) -> list[nn.Module] | None:
    """The modules whose outputs are the net's responses (Figure 7), or None if the net does not say."""
    method = getattr(model, RESPONSES_METHOD, None)
    return list(method()) if callable(method) else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
