"""Read a checkpoint file safely, and load a model state from one strictly.

RunFolder writes checkpoints (atomically); analysis code reads models through here too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import RunFolderError


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunFolderError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
                             "move it aside to start this run again from scratch") from e


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
