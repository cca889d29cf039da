"""Every plug-in of a run checked as it will be used, before anything runs: for a run (command.py) and for
every job of a sweep before the first starts (sweep.CheckJobs)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from .config import BaseConfig
from .data.augment import check_augment
from .data.files import DATASETS
from .data.normalization import check_normalization
from .models import check_model
from .plugins import ConfigSource
from .step import check_optimizer
from .trackers import check_tracker


def check_plugins(cfg: BaseConfig, sources: Iterable[ConfigSource] = (), run_dir: Path | None = None) -> None:
    """The model built and run forward on CIFAR batches, the normalization made, the augmentation made and run
    on a batch, the optimizer made for
    one parameter, the tracker's package present and its store usable (for the run folder `run_dir`, where
    it is known). Raises PluginError (one line) for the first that fails."""
    sources = tuple(sources)
    with torch.random.fork_rng(devices=[]):  # the run's own seeding is untouched
        check_model(cfg, DATASETS[cfg.data.name].num_classes, sources)
        check_normalization(cfg, sources)
        check_augment(cfg, sources)
        check_optimizer(cfg, sources)
        check_tracker(cfg, sources, run_dir)
