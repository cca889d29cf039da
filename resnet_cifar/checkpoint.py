"""Read a checkpoint file safely, and load a model state from one strictly.

RunFolder writes checkpoints (atomically); analysis code reads models through here too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import filesystem
from .errors import FileProblem, RunFolderError


def load_checkpoint(path: Path, advice: str = "move it aside to start this run again from scratch") -> dict:
    """A file torch.save wrote, read as tensors and plain containers only (weights_only: a pickle that would
    run code is refused), from a regular file (never a FIFO). Anything else is one line: RunFolderError."""
    try:
        with filesystem.opened_for_reading(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except FileProblem as e:
        raise RunFolderError(f"{e} ({advice})") from None
    except Exception as e:  # torch reports a damaged or malicious file as many kinds of error
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RunFolderError(f"{path} is not a readable checkpoint ({type(e).__name__}: {first[:300]}); "
                             f"{advice}") from None


def load_model_state(model: nn.Module, state: dict, source: Path) -> None:
    """Load strictly; a checkpoint of another architecture is refused with the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        what = (f"missing key {missing[0]}" if missing else f"unexpected key {unexpected[0]}" if unexpected
                else f"{shapes[0]} has shape {tuple(state[shapes[0]].shape)}, the model {tuple(own[shapes[0]].shape)}")
        raise RunFolderError(f"{source} was saved from another architecture ({what}); "
                             "it cannot be resumed with this config")
    model.load_state_dict(state)
