"""Read a checkpoint file safely, and load a model state from one strictly.

RunFolder writes checkpoints (atomically); analysis code reads models through here too.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from . import filesystem
from .errors import FileProblem, RunFolderError

WEIGHTS_ONLY_REFUSAL = "Weights only load failed"  # how torch.load(weights_only=True) says it refused an object


def load_checkpoint(path: Path, advice: str = "move it aside to start this run again from scratch") -> dict:
    """A file torch.save wrote, read as tensors and plain containers only (weights_only: a pickle that would
    run code is refused), from a regular file (never a FIFO). Anything else is one line: RunFolderError."""
    try:
        with filesystem.opened_for_reading(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except FileProblem as e:
        raise RunFolderError(f"{e} ({advice})") from None
    except pickle.UnpicklingError as e:  # weights_only refused an object: torch's advice would be to unpickle it
        wanted = re.search(r"GLOBAL (\S+)", str(e)) if WEIGHTS_ONLY_REFUSAL in str(e) else None
        if wanted:
            what = f"an object of {wanted.group(1)}"
            raise RunFolderError(f"{path} holds {what}, which is never unpickled here (a file of this project holds "
                                 f"tensors and plain containers only; anything else could run code): it was not "
                                 f"loaded; {advice}") from None
        raise RunFolderError(f"{path} is not a readable checkpoint (UnpicklingError: {_refusal_detail(e)}); "
                             f"{advice}") from None
    except Exception as e:  # torch reports a damaged or malicious file as many kinds of error
        raise RunFolderError(f"{path} is not a readable checkpoint ({type(e).__name__}: {_first_line(e)}); "
                             f"{advice}") from None


def _refusal_detail(error: BaseException) -> str:
    """What torch's weights_only refusal says of the file itself, without its advice to load it unrestricted."""
    text = str(error)
    if WEIGHTS_ONLY_REFUSAL not in text:
        return _first_line(error)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text)[1:]]
    detail = next((p for p in paragraphs if p and not p.startswith(("Check the documentation", "Please file"))), "")
    return " ".join(detail.split())[:300] or "not a pickle of tensors and plain containers"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


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
