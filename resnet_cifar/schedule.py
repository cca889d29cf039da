"""The learning-rate schedule of section 4.2, for any optimizer: steps at milestones, and the warm-up of deep nets."""
from __future__ import annotations

import logging
from bisect import bisect_right

from .config import ScheduleConfig

log = logging.getLogger(__name__)


class LrSchedule:
    """The base lr (optimizer.lr) times gamma at each milestone; before that, the paper's warm-up if switched on.

    Warm-up (nets of at least `min_depth` layers; the paper: ResNet-110/1202):
    warmup.lr until the training error over the last `window` iterations falls
    below `until_train_error`, or `max_iters` at most.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, depth: int) -> None:
        self.cfg, self.base_lr = cfg, base_lr
        self.warming_up = depth >= cfg.warmup.min_depth
        self.warmup_ended_at: int | None = None

    def lr(self, iteration: int) -> float:
        if self.warming_up:
            return self.cfg.warmup.lr
        return self.base_lr * self.cfg.gamma ** bisect_right(self.cfg.milestones, iteration)

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
