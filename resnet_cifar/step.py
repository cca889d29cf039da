"""The training step: one optimizer update on a batch, and what the benchmark times (no run folder needed).

It owns the model as it is trained (DDP, sync BN, torch.compile), the optimizer
(a plug-in: any torch.optim class by `optimizer._target_`) with its learning rate,
autocast, the running loss and error sums, and, on a GPU, the CUDA graph the
step is captured into. The hot path does no host-device synchronisation: the
running sums stay on the device and are read once per evaluation (and, during
the warm-up of deep nets, once per warm-up window).

The paper's SGD keeps the fast path: on a GPU, one fused kernel per step with
its lr in a device tensor, so that the whole step can be captured as a CUDA
graph. Any other optimizer runs the same step eagerly, its lr set in its
param groups.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .config import COMPILE_MODES_WITH_CUDA_GRAPHS, BaseConfig, Pipeline, Precision
from .upgrade import SCHEDULE_KEYS
from .distributed import World, convert_sync_batchnorm
from .errors import ConfigError
from .plugins import ConfigSource, Plugin

CAPTURED_OPTIMIZER = torch.optim.SGD  # the optimizer whose step is fused and captured on a GPU


def optimizer_class(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> type[torch.optim.Optimizer]:
    """The torch.optim class (or a user's subclass of Optimizer) that optimizer._target_ names."""
    plugin = Plugin.of(cfg, "optimizer", sources)
    found = plugin.locate()
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise plugin.fail(f"{plugin.target} is not an optimizer class (a subclass of torch.optim.Optimizer, "
                          "such as torch.optim.AdamW)")
    return found


def build_optimizer(cfg: BaseConfig, parameters: Iterable[Tensor], lr: Tensor | None = None,
                    sources: Iterable[ConfigSource] = ()) -> torch.optim.Optimizer:
    """The run's optimizer over `parameters`, with the YAML's keys; `lr` given as a device tensor makes SGD's
    fused, capturable step (the schedule fills it in place)."""
    plugin = Plugin.of(cfg, "optimizer", sources)
    optimizer_class(cfg, sources)
    moved = [k for k in SCHEDULE_KEYS if k in plugin.keys]
    if moved:
        raise plugin.fail(f"optimizer.{moved[0]} is schedule.{moved[0]} now (the schedule applies to any optimizer): "
                          f"write schedule.{moved[0]}=...")
    return plugin.build(list(parameters), replacing=None if lr is None else {"lr": lr, "fused": True})


def check_optimizer(cfg: BaseConfig, sources: Iterable[ConfigSource] = ()) -> None:
    """Before a run: the optimizer imports, is an Optimizer, takes its keys and values (made for one
    parameter), and can run the step that trainer.cuda_graph=true asks for."""
    cls = optimizer_class(cfg, sources)
    build_optimizer(cfg, [torch.zeros(1, requires_grad=True)], sources=sources)
    if cfg.trainer.cuda_graph is True and cls is not CAPTURED_OPTIMIZER:
        plugin = Plugin.of(cfg, "optimizer", sources)
        raise plugin.fail(f"trainer.cuda_graph=true is not allowed with {plugin.target}: the captured step is "
                          "SGD's (fused, its lr a device tensor); use trainer.cuda_graph=null or false")


def autocast(device: torch.device, precision: Precision):
    """bf16 autocast for the forward pass, or nothing; the loss is taken outside, in fp32.

    No cast cache: each weight is cast once per forward anyway, and a CUDA
    graph capture must not keep casts made outside it.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision is Precision.bf16,
                          cache_enabled=False)


def uses_cuda_graph(cfg: BaseConfig, on_gpu: bool, processes: int, captured_optimizer: bool) -> bool:
    """trainer.cuda_graph=null (the default) captures the step wherever that is possible and the
    result is the same arithmetic: one process on a GPU fed by the device pipeline, an optimizer whose step
    can be captured (SGD: see step.py), no torch.compile mode that captures itself."""
    t = cfg.trainer
    if t.cuda_graph is not None:
        return t.cuda_graph
    return on_gpu and processes == 1 and captured_optimizer and cfg.data.pipeline == Pipeline.device.value and \
        not (t.compile and t.compile_mode in COMPILE_MODES_WITH_CUDA_GRAPHS)

class CapturedStep:
    """A training step run eagerly a few times, then captured once as a CUDA graph and replayed.

    Replay launches the whole forward, backward and optimizer step at once,
    with the very same kernels, so the arithmetic is that of the eager step.
    Everything the step touches must keep its address: the batch is copied
    into static tensors, lr lives in a device tensor, running sums are
    updated in place, and gradients stay allocated between steps.
    """

    EAGER_STEPS = 3  # on a side stream, as torch.cuda.graphs asks, before the capture

    def __init__(self, update: Callable[[Tensor, Tensor], None]) -> None:
        self.update = update
        self.eager_left = self.EAGER_STEPS
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x = self.y = None

    def __call__(self, x: Tensor, y: Tensor) -> None:
        if self.graph is not None:
            self.x.copy_(x)
            self.y.copy_(y)
            self.graph.replay()
        elif self.eager_left:
            self.eager_left -= 1
            current, side = torch.cuda.current_stream(), torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self.update(x, y)
            current.wait_stream(side)
        else:
            self.x, self.y = x.clone(), y.clone()  # clone keeps channels_last strides
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.update(self.x, self.y)
            self.graph.replay()  # capturing ran nothing: this is the step


class TrainingStep:
    """One optimizer step of the recipe on a given batch, with running sums of loss and error.

    `model` is the plain module (what checkpoints hold); `net` is what the step
    calls (the same module, or it wrapped in DDP and/or compiled).
    """

    def __init__(self, model: nn.Module, cfg: BaseConfig, device: torch.device, world: World = World()) -> None:
        t = cfg.trainer
        self.device, self.world, self.precision = device, world, t.precision
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        model.to(device, memory_format=memory_format)
        self.net: nn.Module = model
        if world.distributed:
            if t.sync_bn:
                model = convert_sync_batchnorm(model, device)
            device_ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=device_ids)
        self.model = model
        if t.compile:
            self.net = torch.compile(self.net, mode=t.compile_mode)
        on_gpu = device.type == "cuda"
        captured = optimizer_class(cfg) is CAPTURED_OPTIMIZER
        # SGD on the GPU: one fused kernel per step, and lr as a device tensor so that the step never
        # reads it on the host (and a captured step sees each new value).
        self.lr = torch.tensor(cfg.optimizer["lr"], device=device) if on_gpu and captured else None
        self.optimizer = build_optimizer(cfg, model.parameters(), self.lr)
        self.lr_value: float | None = None  # the lr last set
        if t.cuda_graph and (not on_gpu or world.distributed or not captured):
            raise ConfigError("trainer.cuda_graph=true is not allowed here: it needs one process on a CUDA "
                              f"device and SGD (this run: {world.world_size} process(es) on {device.type}, "
                              f"{type(self.optimizer).__name__})")
        self.graph = (CapturedStep(self._update) if uses_cuda_graph(cfg, on_gpu, world.world_size, captured)
                      else None)
        zero = torch.zeros((), device=device)  # running sums, updated in place (a captured step holds them)
        self.loss_sum, self.wrong, self.window_wrong = zero.clone(), zero.clone(), zero.clone()
        self.steps = 0  # since the sums were last reset

    def __call__(self, x: Tensor, y: Tensor, lr: float) -> None:
        if lr != self.lr_value:
            if self.lr is None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            else:
                self.lr.fill_(lr)
            self.lr_value = lr
        if self.graph is None:
            self._update(x, y)
        else:
            self.graph(x, y)
        self.steps += 1

    def _update(self, x: Tensor, y: Tensor) -> None:
        """Forward, backward, optimizer step and running sums: the part a CUDA graph can capture."""
        with autocast(self.device, self.precision):
            out = self.net(x).float()
        loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        wrong = (out.detach().argmax(1) != y).sum()
        self.loss_sum += loss.detach()
        self.wrong += wrong
        self.window_wrong += wrong  # read (and zeroed) only during the warm-up of deep nets

    # -- the running sums ----------------------------------------------------------------------
    def running_totals(self) -> Tensor:
        """Loss sum, wrong count and warm-up window wrong count, added up over the processes."""
        return self.world.sum_(torch.stack([self.loss_sum, self.wrong, self.window_wrong]).double())

    def reset_running(self) -> None:
        self.loss_sum.zero_()
        self.wrong.zero_()
        self.steps = 0

    def take_window_wrong(self) -> float:
        """Wrong answers in the warm-up window just ended, over all processes; starts the next window."""
        wrong = self.world.sum_(self.window_wrong.clone()).item()
        self.window_wrong.zero_()
        return wrong

    # -- checkpoints ---------------------------------------------------------------------------
    def optimizer_state(self) -> dict:
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a plain number, whatever device trained it
            group["lr"] = float(group["lr"])
        return optimizer

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
        if self.lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            self.lr_value = None

    def load_running(self, loss_sum: Tensor, wrong: Tensor, window_wrong: Tensor, steps: int) -> None:
        """Totals over all processes, as saved: the first process carries them on."""
        keep = 1.0 if self.world.is_main else 0.0
        for running, saved in ((self.loss_sum, loss_sum), (self.wrong, wrong), (self.window_wrong, window_wrong)):
            running.copy_(saved * keep)
        self.steps = steps
