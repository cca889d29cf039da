"""logger=tensorboard: every evaluation's numbers as TensorBoard scalars, beside metrics.csv.

For watching runs while they train: `tensorboard --logdir SWEEP_DIR` shows each job under its folder's
name (its overrides). A resumed run starts its writer with `purge_step` just past the checkpoint's
iteration, so the points that the run writes again replace the ones an interrupted attempt wrote after
it: no duplicates, no points out of order.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError

TENSORBOARD_FOLDER = "tensorboard"
# metrics.csv column -> TensorBoard tag (grouped into panels by the part before the slash)
SCALARS = {"test_error": "error/test", "train_error": "error/train", "val_error": "error/val",
           "test_loss": "loss/test", "train_loss": "loss/train", "lr": "lr", "images_per_s": "speed/images_per_s"}


def wait_past_earlier_files(folder: Path) -> None:
    """TensorBoard reads a run's event files in the order of their names, which begin with the second each was
    created in (events.out.tfevents.SECOND.HOST.PID...). A run resumed within the second its earlier attempt
    started could sort before it, and the purge of the points after the checkpoint would come first and do
    nothing: wait (under a second) until a new file sorts last."""
    seconds = []
    for path in folder.glob("events.out.tfevents.*"):
        try:
            seconds.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class TensorBoardTracker:
    """Scalars of each metrics row, at its iteration, into RUN_DIR/tensorboard/."""

    @staticmethod
    def check_available() -> None:
        """Refuse logger=tensorboard before anything runs when the package is missing."""
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("the tensorboard package is not installed; pip install -e \".[tensorboard]\" "
                              "(or pip install tensorboard), or leave logger=csv") from None

    def __init__(self, run_dir: Path, config: dict, resumed_at: int) -> None:
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(run_dir) / TENSORBOARD_FOLDER
        wait_past_earlier_files(folder)
        self.writer = SummaryWriter(str(folder), purge_step=resumed_at + 1 if resumed_at else None)

    def log(self, row: dict) -> None:
        for column, tag in SCALARS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, row[column], row["iteration"])
        self.writer.flush()  # a live view: written at once

    def close(self, status: str) -> None:
        self.writer.close()
