"""The training loop of section 4.2: step, evaluate, record, checkpoint, stop-check; knows nothing of Hydra.

`TrainingLoop` builds a run from its config (data on the device, the model,
the training step, the schedule) and sequences it; the run folder records
what it reports, and progress goes to a callback. Its state (with the
step's optimizer and running sums, the schedule, the data position, the RNG
and the clock) is what a checkpoint holds, so that a resumed run goes on
exactly as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from .checkpoint import load_model_state
from .config import BaseConfig, RunSeeds
from .data.cifar import CifarArrays, load_cifar
from .data.run_data import build_run_data
from .distributed import World
from .errors import Diverged
from .models import build_model, count_parameters
from .run_folder import RunFolder
from .schedule import LrSchedule
from .scoring import loss_and_error
from .signals import Interrupted, StopRequest
from .step import TrainingStep

log = logging.getLogger(__name__)

Progress = Callable[[int, "dict | None"], None]  # (iterations done, the metrics row just recorded or None)


class RunClock:
    """Wall time of a run, split into training steps and the rest (evaluations, checkpoints)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.elapsed_s = 0.0  # training and evaluation, summed over resumes
        self.train_s = 0.0  # training steps only
        self.interval_train_s = 0.0  # training since the last evaluation
        self._since = time.perf_counter()

    def start(self) -> None:
        self._since = time.perf_counter()

    def _book_training(self) -> float:
        """Book training time up to now, once the device has caught up; return now."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.interval_train_s += now - self._since
        self.train_s += now - self._since
        self.elapsed_s += now - self._since
        return now

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time the block as elapsed but not training (an evaluation, a checkpoint)."""
        start = self._book_training()
        yield
        self._since = time.perf_counter()
        self.elapsed_s += self._since - start


def check_finite(state: dict, iteration: int) -> None:
    """Refuse a state that a NaN or inf has reached: the last checkpoint stays the last good one."""
    if not torch.isfinite(state["running"]["loss_sum"]):
        raise Diverged(f"the training loss became {state['running']['loss_sum'].item()} before iteration "
                       f"{iteration}; the last checkpoint is the last good state")
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    if not torch.stack([torch.isfinite(v).all() for v in weights]).all():
        raise Diverged(f"the weights or BN statistics became non-finite by iteration {iteration}; "
                       "the last checkpoint is the last good state")


class TrainingLoop:
    """One run's training, built from its config: data, model, step and schedule on this process."""

    # With several processes, they agree on a stop with one small all_reduce: about every STOP_CHECK_S seconds
    # of training, and at least every STOP_CHECK_MAX_STEPS steps. A fixed number of steps was too slow under
    # load: a signal that came just after an agreement waited 20 slow steps, past the grace period torchrun
    # (--shutdown_timeout, 30 s) and SLURM (KillWait, 30 s) give before SIGKILL, and the other processes failed.
    STOP_CHECK_S = 1.0
    STOP_CHECK_MAX_STEPS = 20

    def __init__(self, cfg: BaseConfig, device: torch.device, world: World = World(), data: CifarArrays | None = None,
                 normalization_state: dict | None = None) -> None:
        """On `device`, in a process its caller prepared (distributed.prepare_process: the process group, the
        threads). `data`: the data set of cfg.data already loaded (the benchmark builds many loops from one
        load); `normalization_state`: the normalization as the run fitted it when it started (not fitted again)."""
        self.cfg, self.world, self.device = cfg, world, device
        self.data = build_run_data(data or load_cifar(cfg.data.name, cfg.data.root, cfg.data.download), cfg,
                             self.device, world, normalization_state)
        torch.manual_seed(RunSeeds.of(cfg).init)  # the same initial weights on every device
        model = build_model(cfg, self.data.num_classes)
        self.params = count_parameters(model)
        self.step = TrainingStep(model, cfg, self.device, world)
        self.schedule = LrSchedule(cfg.schedule, cfg.optimizer["lr"], cfg.depth)
        self.clock = RunClock(self.device)
        self._stop_check: tuple[float, int, int] | None = None  # (time, iteration) of the last agreement, next
        self.iteration = 0

    @property
    def model(self) -> torch.nn.Module:
        """The plain module (what checkpoints and model.pt hold)."""
        return self.step.model

    def train_one(self, lr: float) -> None:
        """One step on the next global batch (sampling, augmentation, update): what the benchmark times."""
        x, y = self.data.loader.next_batch()
        self.step(x, y, lr)

    def evaluate_test(self) -> tuple[float, float]:
        """(loss, error %) on the test set now."""
        t = self.cfg.trainer
        return loss_and_error(self.model, *self.data.test, t.eval_batch_size, self.data.prepare, self.world,
                              t.precision)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The whole state (collective: every process must call it); plain keys, no `module.`."""
        loss_sum, wrong, window_wrong = self.step.running_totals().float()
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "iteration": self.iteration, "model": self.model.state_dict(),
            "optimizer": self.step.optimizer_state(), "schedule": self.schedule.state_dict(),
            "loader": self.data.loader.state_dict(), "rng": rng,
            "running": {"loss_sum": loss_sum, "wrong": wrong, "window_wrong": window_wrong,
                        "steps": self.step.steps, "interval_train_s": self.clock.interval_train_s},
            "elapsed_s": self.clock.elapsed_s, "train_s": self.clock.train_s,
        }

    def load_state_dict(self, state: dict, source) -> None:
        load_model_state(self.model, state["model"], source)
        self.step.load_optimizer_state(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.data.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        r = state["running"]
        self.step.load_running(r["loss_sum"], r["wrong"], r["window_wrong"], r["steps"])
        self.clock.interval_train_s = r["interval_train_s"]
        self.iteration, self.clock.elapsed_s, self.clock.train_s = state["iteration"], state["elapsed_s"], state["train_s"]

    def resume_from(self, folder: RunFolder) -> None:
        """Go on from the folder's checkpoint, if it has one; drop metrics rows past it (all of them
        without one: they will be written again)."""
        state = folder.load_checkpoint()
        if state is not None:
            self.load_state_dict(state, folder.checkpoint_path)
            log.info("resuming from %s at iteration %d", folder.checkpoint_path, self.iteration)
        if self.world.is_main:
            folder.metrics.keep_until(self.iteration)

    def save_checkpoint(self, folder: RunFolder) -> None:
        state = self.state_dict()
        check_finite(state, self.iteration)
        if self.world.is_main:
            folder.save_checkpoint(state)

    # -- the loop --------------------------------------------------------------------------------
    def _metrics_row(self, lr: float) -> dict:
        """Evaluate now: the metrics row of this iteration (running training means since the last row)."""
        world, t = self.world, self.cfg.trainer
        loss_sum, wrong, _ = self.step.running_totals().tolist()
        steps = self.step.steps
        train_loss = loss_sum / (steps * world.world_size)  # each process's loss is a mean over its share
        if not math.isfinite(train_loss):
            raise Diverged(f"the training loss became {train_loss} before iteration {self.iteration}")
        if world.distributed:  # evaluate everywhere with the first process's BN statistics, as saved
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

        def evaluate(images, labels) -> tuple[float, float]:
            return loss_and_error(self.model, images, labels, t.eval_batch_size, self.data.prepare, world,
                                  t.precision)

        test_loss, test_error = evaluate(*self.data.test)
        if not math.isfinite(test_loss):  # finite weights can still give infinite logits: not a row to record
            raise Diverged(f"the test loss became {test_loss} at iteration {self.iteration}")
        val_error = evaluate(*self.data.val)[1] if len(self.data.val[0]) else None
        return {
            "iteration": self.iteration,
            "epoch": round(self.iteration / self.data.loader.batches_per_epoch, 4),
            "lr": float(f"{lr:.10g}"),  # no 0.010000000000000002 in the CSV
            "train_loss": round(train_loss, 6),
            "train_error": round(100.0 * wrong / (steps * self.data.global_batch), 4),
            "test_loss": round(test_loss, 6),
            "test_error": round(test_error, 4),
            "val_error": None if val_error is None else round(val_error, 4),
            "elapsed_s": None,  # filled in once the evaluation is timed
            "images_per_s": round(steps * self.data.global_batch / self.clock.interval_train_s, 1),
        }

    def _log_row(self, row: dict) -> None:
        val = "" if row["val_error"] is None else f" val err {row['val_error']:.2f}%"
        log.info("iter %d/%d (epoch %.2f) lr %g | train loss %.4f err %.2f%% | test loss %.4f err %.2f%%%s | %.0f img/s",
                 row["iteration"], self.cfg.trainer.max_iters, row["epoch"], row["lr"], row["train_loss"],
                 row["train_error"], row["test_loss"], row["test_error"], val, row["images_per_s"])

    def _stop_requested(self, stop: StopRequest) -> bool:
        """A stop signal arrived; with several processes, every one stops at the same step. They agree at
        steps they chose together at their last agreement: as many as the slowest of them trains in
        STOP_CHECK_S (evaluations and checkpoints counted), so that a stop comes within about that time of
        training after the signal, however slow the steps (at most STOP_CHECK_MAX_STEPS apart)."""
        if not self.world.distributed:
            return stop.signum is not None
        now = time.monotonic()
        if self._stop_check is None:  # the first step of this start: agree from here on
            self._stop_check = (now, self.iteration, self.iteration + 1)
        last_time, last_iteration, due = self._stop_check
        if self.iteration < due:
            return False
        seconds_per_step = (now - last_time) / max(1, self.iteration - last_iteration)
        agreed = torch.tensor([float(stop.signum or 0), seconds_per_step], dtype=torch.float64, device=self.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # any signal, and the slowest process's pace
        signum, slowest = agreed.tolist()
        steps = min(self.STOP_CHECK_MAX_STEPS, max(1, int(self.STOP_CHECK_S / max(slowest, 1e-9))))
        self._stop_check = (now, self.iteration, self.iteration + steps)
        stop.signum = int(signum) or None
        return stop.signum is not None

    def fit(self, folder: RunFolder, stop: StopRequest, progress: Progress = lambda done, row: None) -> dict:
        """Train to trainer.max_iters; return the last metrics row. A stop signal ends it after the step in
        flight with a checkpoint (Interrupted)."""
        t, warmup = self.cfg.trainer, self.cfg.schedule.warmup
        row: dict = {}
        self.clock.start()
        while self.iteration < t.max_iters:
            lr = self.schedule.lr(self.iteration)
            self.train_one(lr)
            self.iteration += 1
            if self.schedule.window_due(self.iteration):
                window_error = 100.0 * self.step.take_window_wrong() / (warmup.window * self.data.global_batch)
                self.schedule.end_warmup_if_done(self.iteration, window_error)
            done = self.iteration == t.max_iters
            recorded = None
            if done or self.iteration % t.eval_every == 0:
                with self.clock.paused():
                    row = self._metrics_row(lr)
                row["elapsed_s"] = round(self.clock.elapsed_s, 2)
                if self.world.is_main:
                    folder.append_metrics(row)
                self._log_row(row)
                self.step.reset_running()
                self.clock.interval_train_s = 0.0
                recorded = row
            progress(self.iteration, recorded)
            if done or self.iteration % t.checkpoint_every == 0:
                with self.clock.paused():
                    self.save_checkpoint(folder)
            if not done and self._stop_requested(stop):  # a run that just finished ends as completed
                with self.clock.paused():
                    self.save_checkpoint(folder)
                raise Interrupted(stop.signum, self.iteration)
        return row
