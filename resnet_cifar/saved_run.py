"""A saved run, loaded back: its net with its weights, the input normalization it was trained with, its
config and its data set. The one loader that evaluation (evaluate.py), Figure 7
(multirun_analysis.responses), `load_run` and torch.hub use, so that a model is never fed inputs prepared
differently from training (the most common cause of a reloaded CIFAR model scoring far below its run).

The net is built through its arch plug-in (so a user's own model loads as the built-ins do, its module
importable and trusted: trust.py; nothing a folder names outside the package is imported otherwise); the
normalization takes the state the run saved (normalization.pt), or, for a folder from
before that file, is fitted again on the run's own training split. Either way the data set the run
trained on must be at hand (its test set, and its split): its config's `data.root`, or `data_root`.
Weights are read with `weights_only=True`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, load_model_state
from .config import BaseConfig, Dataset, validate
from .upgrade import default_max_parameters
from .contract import CHECKPOINT_FILE, MODEL_FILE, SUMMARY_FILE, read_summary, recorded_config
from .data.cifar import CifarArrays, load_cifar
from .data.normalization import ModelInput
from .data.run_data import split_and_prepare
from .data.stream import eval_batches
from .errors import DataError, UserError
from .models import build_model
from .run_folder import RunFolder
from .run_spec import RunSpec
from .trust import CodeTrust, check_recorded_code


class NotATrainedRun(UserError):
    """A folder that is not a run, or a run without the weights asked for."""


@dataclass
class TrainedRun:
    run_dir: Path
    config: BaseConfig  # the run's typed config
    recorded: dict  # the same, as summary.json holds it
    summary: dict  # summary.json: how the run ended, what it recorded
    model: nn.Module  # in eval mode, on `device`
    normalize: ModelInput  # uint8 NHWC images -> the model's input, as in training
    data: CifarArrays
    weights: Path  # model.pt, or checkpoint.pt
    iteration: int | None  # of the checkpoint; None for model.pt (the end of training)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The test images (uint8 NHWC) and labels on the model's device."""
        return (torch.from_numpy(self.data.test_images).to(self.device),
                torch.from_numpy(self.data.test_labels).to(self.device))

    def test_batches(self, batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The normalized test set in the run's evaluation batches."""
        return eval_batches(*self.test_set(), batch_size or self.config.trainer.eval_batch_size, self.normalize)


@lru_cache(maxsize=4)
def _dataset(name: str, root: str) -> CifarArrays:
    try:
        return load_cifar(Dataset(name), root, allow_download=False)
    except DataError as e:
        raise DataError(f"the run's test set cannot be read from {root} ({e}); give the folder that holds "
                        f"{name} as data_root= (load_run) or --data (evaluate, the report)") from None


def _data_root(root: str, summary: dict) -> Path:
    """The run's data.root; a relative one as the run resolved it (summary.json's data_root, recorded from
    where it was started), not against today's working folder; for a folder from before that record, the path
    as given (data_root= says where the data is)."""
    path = Path(root).expanduser()
    recorded = summary.get("data_root")
    if not path.is_absolute() and isinstance(recorded, str) and Path(recorded).is_absolute():
        return Path(recorded)
    return path


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", data_root: str | Path | None = None,
             checkpoint: bool = False, trust_code: Iterable[str] | str = (),
             max_parameters: int | None = None) -> TrainedRun:
    """Load a run folder's net (model.pt, or with `checkpoint` the weights of checkpoint.pt, so that a run in
    progress or interrupted can be used) in eval mode on `device`, with the normalization it trained with.

    A net or normalization the folder names outside this package is imported only from a module of
    `trust_code` (or of the user's allow-list, trust.py): a run folder is data, and a received one could
    name any callable. A net of more than `max_parameters` parameters and buffers is refused while it is
    built (default: trainer.max_parameters of conf/, never the limit the folder recorded).

    >>> run = load_run("multirun/fig6/arch=resnet,depth=20", device="cuda")
    >>> logits = run.model(run.normalize(uint8_nhwc_images.to(run.device)))
    """
    run_dir, device = Path(run_dir), torch.device(device)
    if not run_dir.is_dir():
        raise NotATrainedRun(f"{run_dir}: no such folder")
    summary = read_summary(run_dir)
    if summary is None or not isinstance(summary.get("config"), dict):
        raise NotATrainedRun(f"{run_dir} is not a run folder (it has no summary.json with the run's config)")
    config = recorded_config(summary, run_dir)  # older folders too
    trust = CodeTrust.of(trust_code)
    check_recorded_code(config, run_dir, trust)  # before anything it names is imported
    spec = RunSpec.from_dict(config, summary.get("overrides", []))
    weights = run_dir / (CHECKPOINT_FILE if checkpoint else MODEL_FILE)
    if not weights.is_file():
        hint = ("the run has not saved a checkpoint yet" if checkpoint else
                f"the run has not completed (status: {summary.get('status')}); add --checkpoint (checkpoint=True) "
                "to use its last checkpoint")
        raise NotATrainedRun(f"{run_dir} has no {weights.name}: {hint}")
    cfg = spec.config
    try:
        validate(cfg)
    except UserError as e:
        raise NotATrainedRun(f"{run_dir / SUMMARY_FILE} records a config that is not allowed ({e})") from None
    data = _dataset(cfg.data.name.value, str(data_root or _data_root(cfg.data.root, summary)))
    advice = "it is not a file this project saved: train the run again, or use another run"
    *_, normalize = split_and_prepare(data, cfg, device, RunFolder(run_dir).load_normalization(advice), trust)
    limit = default_max_parameters() if max_parameters is None else max_parameters
    model = build_model(cfg, data.num_classes, max_parameters=limit, trust=trust)
    state = load_checkpoint(weights, advice)
    weights_state, iteration = state, None  # model.pt: the weights themselves
    if checkpoint and isinstance(state, dict):  # checkpoint.pt: the weights among the training state
        weights_state, iteration = state.get("model"), state.get("iteration")
    if not isinstance(weights_state, dict):
        raise NotATrainedRun(f"{weights} holds no model weights ({advice})")
    load_model_state(model, weights_state, weights)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).eval()
    return TrainedRun(run_dir, cfg, spec.recorded, summary, model, normalize, data, weights, iteration)
