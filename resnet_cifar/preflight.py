"""Refuse an output folder that cannot be written before Hydra creates anything in it.

Hydra makes the run (or sweep) folder and its .hydra/ before the task runs;
a folder that cannot exist there would otherwise end in Hydra's traceback.
Hydra ignores exceptions raised in callbacks, so this one exits itself.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .errors import EXIT_BAD_INPUT



def unwritable_reason(folder: Path) -> str | None:
    """Why `folder` cannot be created and written (None if it can), looking at its nearest existing part."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permissions or a read-only file system)"
    return None


class Preflight(Callback):
    def _check(self, key: str, folder: str) -> None:
        reason = unwritable_reason(Path(folder))
        if reason:
            print(f"error: {key}={folder} cannot be used: {reason}; choose another output folder "
                  f"(e.g. {key}=outputs/run1)", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
