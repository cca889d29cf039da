"""The training loop of section 4.2; knows nothing of Hydra.

The hot loop does no host-device synchronisation: running loss and error are
accumulated on the device and read once per evaluation (and, during the
warm-up of deep nets, once per warm-up window).
"""
from __future__ import annotations

import logging
import math
import os
import platform
import time
from bisect import bisect_right
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import BaseConfig, Device, OptimizerConfig, Precision, uses_cuda_graph
from .data import CifarArrays, CifarLoader, Normalize, eval_batches, load_cifar, split_and_normalize
from .distributed import World, convert_sync_batchnorm, init_process_group, share_cores
from . import faults
from .errors import ConfigError, Diverged, RunFolderError
from .models import build_model, count_parameters
from .signals import Interrupted, StopRequest
from .run_folder import (
    CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, MetricsLog, Status, check_same_config, read_summary,
    write_json,
)

log = logging.getLogger(__name__)

def resolve_device(device: Device, world: World) -> torch.device:
    """The device of this process: with several processes on a node, GPU i for local rank i; alone,
    the current GPU (the one job.run_job claimed, see placement.py)."""
    if device is Device.cuda and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda is not allowed here: no CUDA device is available "
                          "(use trainer.device=cpu or auto)")
    if device is Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"{world.local_world_size} processes per node but only {torch.cuda.device_count()} "
                          "GPUs here: lower trainer.nproc_per_node (or torchrun's --nproc_per_node)")
    return torch.device("cuda", world.local_rank if world.distributed else torch.cuda.current_device())


class LrSchedule:
    """lr divided by 1/gamma at each milestone; before that, the paper's warm-up if switched on.

    Warm-up (nets of at least `min_depth` layers; the paper: ResNet-110/1202):
    warmup.lr until the training error over the last `window` iterations falls
    below `until_train_error`, or `max_iters` at most.
    """

    def __init__(self, cfg: OptimizerConfig, depth: int) -> None:
        self.cfg = cfg
        self.warming_up = depth >= cfg.warmup.min_depth
        self.warmup_ended_at: int | None = None

    def lr(self, iteration: int) -> float:
        if self.warming_up:
            return self.cfg.warmup.lr
        return self.cfg.lr * self.cfg.gamma ** bisect_right(self.cfg.milestones, iteration)

    def window_due(self, iterations_done: int) -> bool:
        return self.warming_up and iterations_done % self.cfg.warmup.window == 0

    def end_warmup_if_done(self, iterations_done: int, window_error: float) -> None:
        w = self.cfg.warmup
        if window_error < w.until_train_error or iterations_done >= w.max_iters:
            self.warming_up = False
            self.warmup_ended_at = iterations_done
            log.info("warm-up ended at iteration %d (train error %.1f%% over the last %d iterations)",
                     iterations_done, window_error, w.window)

    def state_dict(self) -> dict:
        return {"warming_up": self.warming_up, "warmup_ended_at": self.warmup_ended_at}

    def load_state_dict(self, state: dict) -> None:
        self.warming_up, self.warmup_ended_at = state["warming_up"], state["warmup_ended_at"]


def autocast(device: torch.device, precision: Precision):
    """bf16 autocast for the forward pass, or nothing; the loss is taken outside, in fp32.

    No cast cache: each weight is cast once per forward anyway, and a CUDA
    graph capture must not keep casts made outside it.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision is Precision.bf16,
                          cache_enabled=False)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int, normalize: Normalize,
             world: World = World(), precision: Precision = Precision.fp32) -> tuple[float, float]:
    """(mean loss, error %) over every image exactly once, the single original view.

    Each process evaluates its own contiguous share; the sums are added up.
    """
    model.eval()
    share = -(-len(images) // world.world_size)
    own = slice(world.rank * share, (world.rank + 1) * share)
    totals = torch.zeros(2, dtype=torch.float64, device=images.device)  # loss sum, wrong count
    for x, y in eval_batches(images[own], labels[own], batch_size, normalize):
        with autocast(images.device, precision):
            out = model(x).float()
        totals[0] += F.cross_entropy(out, y, reduction="sum")
        totals[1] += (out.argmax(1) != y).sum()
    model.train()
    loss, wrong = world.sum_(totals).tolist()
    return loss / len(images), 100.0 * wrong / len(images)


def gpu_uuids(device: torch.device, world: World) -> list[str] | None:
    """Which physical GPU each process used, by rank (None on the CPU): names and indices depend on
    CUDA_VISIBLE_DEVICES, the UUID does not (`nvidia-smi -L` lists them)."""
    if device.type != "cuda":
        return None
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"  # nvidia-smi's form
    uuids: list = [uuid]
    if world.distributed:
        uuids = [None] * world.world_size
        dist.all_gather_object(uuids, uuid)
    return uuids


def slurm_job() -> dict | None:
    """The SLURM job this run is part of (None outside SLURM): its id as squeue and sacct show it
    (ARRAY_TASK for a sweep's job array), the node, and how many times SLURM requeued it."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {"job": "_".join(array) if all(array) else env["SLURM_JOB_ID"], "job_id": env["SLURM_JOB_ID"],
            "node": env.get("SLURMD_NODENAME"), "restart_count": int(env.get("SLURM_RESTART_COUNT", 0))}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model, for the summary: figures mean little without it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{models[0]} ({os.cpu_count()} logical cores)"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "hydra-core", "omegaconf", "numpy", "resnet-cifar"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


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


class Trainer:
    """One run: data on the device, model, optimizer, schedule, and the run folder it writes."""

    def __init__(self, cfg: BaseConfig, run_dir: Path, world: World = World(),
                 data: CifarArrays | None = None) -> None:
        """`data`: the data set of cfg.data already loaded (the benchmark builds many Trainers from one load)."""
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        t = cfg.trainer
        self.device = resolve_device(t.device, world)
        init_process_group(world)
        if self.device.type == "cpu":
            share_cores(world)
        else:  # fixed shapes: let cuDNN time its algorithms once and keep the fastest
            torch.backends.cudnn.benchmark = True
        data = data or load_cifar(cfg.data.name, cfg.data.root, cfg.data.download)
        train_idx, val_idx, self.normalize = split_and_normalize(
            data, cfg.data.val_size, cfg.normalization.name, self.device, t.channels_last)

        def on_device(array) -> Tensor:
            return torch.from_numpy(array).to(self.device)

        self.val = (on_device(data.train_images[val_idx]), on_device(data.train_labels[val_idx]))
        self.test = (on_device(data.test_images), on_device(data.test_labels))
        generator = torch.Generator(self.device).manual_seed(cfg.seed)  # the same on every process
        per_process = t.batch_semantics == "per_process"
        self.global_batch = cfg.data.batch_size * (world.world_size if per_process else 1)
        self.loader = CifarLoader(on_device(data.train_images[train_idx]), on_device(data.train_labels[train_idx]),
                                  self.global_batch, self.normalize, generator, cfg.data.augment,
                                  shard=(world.rank, world.world_size))

        torch.manual_seed(cfg.seed)  # the same initial weights on every device
        self.model = build_model(cfg.arch, cfg.depth, cfg.shortcut, data.num_classes)
        self.params = count_parameters(self.model)
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=memory_format)
        self.net: nn.Module = self.model  # what the training step calls
        if world.distributed:
            if t.sync_bn:
                self.model = convert_sync_batchnorm(self.model, self.device)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)
        if t.compile:
            self.net = torch.compile(self.net, mode=t.compile_mode)
        o = cfg.optimizer
        on_gpu = self.device.type == "cuda"
        # On the GPU: one fused kernel per step, and lr as a device tensor so that the step never
        # reads it on the host (and a captured step sees each new value).
        self.lr = torch.tensor(o.lr, device=self.device) if on_gpu else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr if on_gpu else o.lr,
                                         momentum=o.momentum, weight_decay=o.weight_decay, fused=on_gpu or None)
        self.lr_value: float | None = None  # the lr last set
        self.schedule = LrSchedule(o, cfg.depth)
        self.metrics = MetricsLog(run_dir / METRICS_FILE)
        if t.cuda_graph and (not on_gpu or world.distributed):
            raise ConfigError("trainer.cuda_graph=true is not allowed here: it needs one process on a CUDA "
                              f"device (this run: {world.world_size} process(es) on {self.device.type})")
        self.graph = CapturedStep(self._update) if uses_cuda_graph(t, on_gpu, world.world_size) else None

        self.stop = StopRequest()  # train() installs its signal handlers around fit()
        self.iteration = 0
        self.elapsed_s = 0.0  # wall time of training and evaluation, summed over resumes
        self.train_s = 0.0  # wall time of training steps only
        zero = torch.zeros((), device=self.device)  # running sums, updated in place (a captured step holds them)
        self.loss_sum, self.wrong, self.window_wrong = zero.clone(), zero.clone(), zero.clone()
        self._reset_running()

    def _reset_running(self) -> None:
        self.loss_sum.zero_()
        self.wrong.zero_()
        self.steps = 0  # since the last evaluation
        self.interval_train_s = 0.0

    def _running_totals(self) -> Tensor:
        """Loss sum, wrong count and warm-up window wrong count, added up over the processes."""
        return self.world.sum_(torch.stack([self.loss_sum, self.wrong, self.window_wrong]).double())

    # -- checkpoints -------------------------------------------------------
    def state_dict(self) -> dict:
        """The whole state (collective: every process must call it); plain keys, no `module.`."""
        loss_sum, wrong, window_wrong = self._running_totals().float()
        # never save a state that a NaN or inf has reached: the last checkpoint stays the last good one
        if not torch.isfinite(loss_sum):
            raise Diverged(f"the training loss became {loss_sum.item()} before iteration {self.iteration}; "
                           "the last checkpoint is the last good state")
        model = self.model.state_dict()
        if not torch.stack([torch.isfinite(v).all() for v in model.values() if v.is_floating_point()]).all():
            raise Diverged(f"the weights or BN statistics became non-finite by iteration {self.iteration}; "
                           "the last checkpoint is the last good state")
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a plain number, whatever device trained it
            group["lr"] = float(group["lr"])
        return {
            "iteration": self.iteration, "model": model,
            "optimizer": optimizer, "schedule": self.schedule.state_dict(),
            "loader": self.loader.state_dict(), "rng": rng,
            "running": {"loss_sum": loss_sum, "wrong": wrong, "window_wrong": window_wrong,
                        "steps": self.steps, "interval_train_s": self.interval_train_s},
            "elapsed_s": self.elapsed_s, "train_s": self.train_s,
        }

    def load_state_dict(self, state: dict, source: Path) -> None:
        load_model_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            self.lr_value = None
        self.schedule.load_state_dict(state["schedule"])
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        r = state["running"]  # totals over all processes: the first process carries them on
        keep = 1.0 if self.world.is_main else 0.0
        for running, name in ((self.loss_sum, "loss_sum"), (self.wrong, "wrong"), (self.window_wrong, "window_wrong")):
            running.copy_(r[name] * keep)
        self.steps, self.interval_train_s = r["steps"], r["interval_train_s"]
        self.iteration, self.elapsed_s, self.train_s = state["iteration"], state["elapsed_s"], state["train_s"]

    def save_checkpoint(self) -> None:
        state = self.state_dict()
        if self.world.is_main:
            save_checkpoint(state, self.run_dir / CHECKPOINT_FILE)

    def resume_if_possible(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        if path.exists():
            self.load_state_dict(load_checkpoint(path), path)
            log.info("resuming from %s at iteration %d", path, self.iteration)
        if self.world.is_main:  # rows past the checkpoint (all of them without one) will be written again
            self.metrics.keep_until(self.iteration)

    # -- the loop ------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, lr: float) -> None:
        """One SGD step on the next global batch (also what the benchmark times)."""
        if lr != self.lr_value:
            if self.lr is None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            else:
                self.lr.fill_(lr)
            self.lr_value = lr
        x, y = self.loader.next_batch()
        if self.graph is None:
            self._update(x, y)
        else:
            self.graph(x, y)

    def _update(self, x: Tensor, y: Tensor) -> None:
        """Forward, backward, SGD update and running sums: the part a CUDA graph can capture."""
        with autocast(self.device, self.cfg.trainer.precision):
            out = self.net(x).float()
        loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        wrong = (out.detach().argmax(1) != y).sum()
        self.loss_sum += loss.detach()
        self.wrong += wrong
        self.window_wrong += wrong  # read (and zeroed) only during the warm-up of deep nets

    def evaluate(self, images: Tensor, labels: Tensor) -> tuple[float, float]:
        t = self.cfg.trainer
        return evaluate(self.model, images, labels, t.eval_batch_size, self.normalize, self.world, t.precision)

    def _evaluate(self, lr: float) -> dict:
        world = self.world
        loss_sum, wrong, _ = self._running_totals().tolist()
        train_loss = loss_sum / (self.steps * world.world_size)  # each process's loss is a mean over its share
        if not math.isfinite(train_loss):
            raise Diverged(f"the training loss became {train_loss} before iteration {self.iteration}")
        if world.distributed:  # evaluate everywhere with the first process's BN statistics, as saved
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
        test_loss, test_error = self.evaluate(*self.test)
        val_error = self.evaluate(*self.val)[1] if len(self.val[0]) else None
        return {
            "iteration": self.iteration,
            "epoch": round(self.iteration / self.loader.batches_per_epoch, 4),
            "lr": float(f"{lr:.10g}"),  # no 0.010000000000000002 in the CSV
            "train_loss": round(train_loss, 6),
            "train_error": round(100.0 * wrong / (self.steps * self.global_batch), 4),
            "test_loss": round(test_loss, 6),
            "test_error": round(test_error, 4),
            "val_error": None if val_error is None else round(val_error, 4),
            "elapsed_s": None,  # filled in after the evaluation is timed
            "images_per_s": round(self.steps * self.global_batch / self.interval_train_s, 1),
        }

    def _lap(self, clock: float) -> float:
        """Book training time up to now (after the device caught up); return now."""
        self._sync()
        now = time.perf_counter()
        self.interval_train_s += now - clock
        self.train_s += now - clock
        self.elapsed_s += now - clock
        return now

    STOP_CHECK_EVERY = 20  # with several processes: steps between agreeing on a stop (one small all_reduce)

    def _stop_requested(self) -> bool:
        """A stop signal arrived; with several processes, every one stops at the same step."""
        if not self.world.distributed:
            return self.stop.signum is not None
        if self.iteration % self.STOP_CHECK_EVERY:
            return False
        signum = torch.tensor(self.stop.signum or 0, device=self.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        self.stop.signum = int(signum) or None
        return self.stop.signum is not None

    def fit(self, progress: tqdm) -> dict:
        t, warmup = self.cfg.trainer, self.cfg.optimizer.warmup
        kill_at = faults.kill_iteration(self.world.rank)
        row: dict = {}
        clock = time.perf_counter()
        while self.iteration < t.max_iters:
            lr = self.schedule.lr(self.iteration)
            self.step(lr)
            self.iteration += 1
            self.steps += 1
            progress.update()
            if self.schedule.window_due(self.iteration):
                window_wrong = self.world.sum_(self.window_wrong.clone()).item()
                window_error = 100.0 * window_wrong / (warmup.window * self.global_batch)
                self.window_wrong.zero_()
                self.schedule.end_warmup_if_done(self.iteration, window_error)
            done = self.iteration == t.max_iters
            if done or self.iteration % t.eval_every == 0:
                clock = self._lap(clock)
                row = self._evaluate(lr)
                self.elapsed_s += time.perf_counter() - clock
                row["elapsed_s"] = round(self.elapsed_s, 2)
                if self.world.is_main:
                    self.metrics.append(row)
                self._log_row(row)
                progress.set_postfix(test_error=f"{row['test_error']:.2f}%", refresh=False)
                self._reset_running()
                clock = time.perf_counter()
            if done or self.iteration % t.checkpoint_every == 0:
                clock = self._lap(clock)
                self.save_checkpoint()
                self.elapsed_s += time.perf_counter() - clock
                clock = time.perf_counter()
            if self.iteration == kill_at:
                faults.kill()
            if not done and self._stop_requested():  # a run that just finished ends as completed
                clock = self._lap(clock)
                self.save_checkpoint()
                raise Interrupted(self.stop.signum, self.iteration)
        return row

    def _log_row(self, row: dict) -> None:
        val = "" if row["val_error"] is None else f" val err {row['val_error']:.2f}%"
        log.info("iter %d/%d (epoch %.2f) lr %g | train loss %.4f err %.2f%% | test loss %.4f err %.2f%%%s | %.0f img/s",
                 row["iteration"], self.cfg.trainer.max_iters, row["epoch"], row["lr"], row["train_loss"],
                 row["train_error"], row["test_loss"], row["test_error"], val, row["images_per_s"])


def previous_summary(run_dir: Path, config: dict) -> dict | None:
    """What `run_dir` holds of an earlier start of this run (None if nothing); refuses another config."""
    summary = read_summary(run_dir)
    if summary:
        check_same_config(summary, config, run_dir)
    return summary


def already_completed(summary: dict | None, run_dir: Path) -> bool:
    if summary and summary.get("status") == Status.completed:
        log.info("%s is already completed (test error %.2f%%); nothing to do", run_dir, summary["test_error"])
        return True
    return False


def train(cfg: BaseConfig, run_dir: Path, config: dict, overrides: list[str], world: World = World()) -> dict:
    """Train (or resume, or skip if completed) the run in `run_dir`; return its summary.

    Every process of a data-parallel run calls it; only the first writes the
    run folder. The caller holds the folder (run_folder.exclusive).
    """
    summary = previous_summary(run_dir, config)
    if already_completed(summary, run_dir):
        return summary
    trainer = Trainer(cfg, run_dir, world)
    trainer.resume_if_possible()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {
        "status": Status.running, "iteration": trainer.iteration, "max_iters": cfg.trainer.max_iters,
        "params": trainer.params, "device": str(trainer.device), "device_name": device_name(trainer.device),
        "processes": world.world_size, "global_batch": trainer.global_batch, "cuda_graph": trainer.graph is not None,
        "num_threads": torch.get_num_threads(), "versions": library_versions(), "slurm": slurm_job(),
        "gpus": gpu_uuids(trainer.device, world),
        "started_at": (summary or {}).get("started_at", started), "config": config, "overrides": overrides,
    }

    def record(**changes) -> None:
        summary.update(changes)
        if world.is_main:
            write_json(run_dir / SUMMARY_FILE, summary)

    record()
    log.info("%s-%d (shortcut %s), %d parameters, on %s x %d; run folder %s", cfg.arch.value, cfg.depth,
             cfg.shortcut.value, trainer.params, trainer.device, world.world_size, run_dir)
    try:
        with trainer.stop, logging_redirect_tqdm(), tqdm(
                total=cfg.trainer.max_iters, initial=trainer.iteration, disable=None if world.is_main else True,
                dynamic_ncols=True, desc="train", unit="it") as progress:
            final = trainer.fit(progress)
        if not final and world.is_main:  # it had trained to the end; a crash kept that from being recorded
            final = trainer.metrics.last_row()
    except BaseException as e:
        status = (Status.diverged if isinstance(e, Diverged)
                  else Status.interrupted if isinstance(e, (Interrupted, KeyboardInterrupt)) else Status.failed)
        try:
            record(status=status, iteration=trainer.iteration, error=f"{type(e).__name__}: {e}")
        except RunFolderError as not_recorded:  # e.g. the disk that failed the run is still full
            log.warning("%s", not_recorded)
        if isinstance(e, Interrupted):
            log.warning("%s", e)  # here: the handler passed on may end the process (submitit's exits)
            trainer.stop.pass_on()  # e.g. submitit's handler, which requeues the job
        raise
    if world.is_main:
        torch.save(trainer.model.state_dict(), run_dir / MODEL_FILE)
    record(
        status=Status.completed, iteration=trainer.iteration,
        **{k: final.get(k) for k in ("test_error", "test_loss", "train_error", "train_loss", "val_error")},
        wall_time_s=round(trainer.elapsed_s, 2),
        images_per_s=round(trainer.iteration * trainer.global_batch / trainer.train_s, 1),
        warmup_ended_at=trainer.schedule.warmup_ended_at,
        ended_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    log.info("completed: test error %s%% after %d iterations, %.1f min", final.get("test_error"),
             trainer.iteration, trainer.elapsed_s / 60)
    return summary
