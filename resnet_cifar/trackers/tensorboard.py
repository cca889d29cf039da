"""logger=tensorboard: every evaluation's numbers as TensorBoard scalars, beside metrics.csv.

For watching runs while they train: `tensorboard --logdir SWEEP_DIR` shows each job under its folder's
name (its overrides). A resumed run starts its writer with `purge_step` just past the checkpoint's
iteration, so the points that the run writes again replace the ones an interrupted attempt wrote after
it: no duplicates, no points out of order.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..errors import ConfigError, FileProblem

log = logging.getLogger(__name__)

TENSORBOARD_FOLDER = "tensorboard"
# metrics.csv column -> TensorBoard tag (grouped into panels by the part before the slash)
SCALARS = {"test_error": "error/test", "train_error": "error/train", "val_error": "error/val",
           "test_loss": "loss/test", "train_loss": "loss/train", "lr": "lr", "images_per_s": "speed/images_per_s"}


FUTURE_SLACK_S = 2  # an event file named up to this far ahead of the clock is waited past; further, not


def earlier_event_seconds(folder: Path) -> list[int]:
    """The second each earlier event file of the folder was created in (from its name)."""
    seconds = []
    for path in folder.glob("events.out.tfevents.*"):
        try:
            seconds.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    return seconds


def wait_past_earlier_files(folder: Path, seconds: list[int]) -> None:
    """TensorBoard reads a run's event files in the order of their names, which begin with the second each was
    created in (events.out.tfevents.SECOND.HOST.PID...). A run resumed within the second its earlier attempt
    started could sort before it, and the purge of the points after the checkpoint would come first and do
    nothing: wait (under a second) until a new file sorts last. A file named further ahead than
    FUTURE_SLACK_S (another machine's clock, or a copied file) is not waited for: said in the log."""
    latest = max(seconds, default=0)
    if latest > time.time() + FUTURE_SLACK_S:
        log.warning("%s holds an event file named %d s ahead of this machine's clock: TensorBoard may show its "
                    "points after this run's", folder, latest - int(time.time()))
        return
    while int(time.time()) <= latest:
        time.sleep(0.05)


def quiet_writer_thread_errors() -> None:
    """TensorBoard writes its events from a thread of its own; a full disk ends that thread with an OSError,
    which Python prints as an "Exception in thread" traceback, though the next write raises it again here,
    where the tracker turns it into one line (log). Such errors of that thread are left to that line; every
    other thread's exception is printed as before. Installed once."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        previous(args)

    hook.quiets_tensorboard = True
    threading.excepthook = hook


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
        if os.path.lexists(folder) and (folder.is_symlink() or not folder.is_dir()):
            raise FileProblem(f"{folder} is not a folder: logger=tensorboard writes its event files there; "
                              "move it aside and run again")
        try:
            folder.mkdir(exist_ok=True)
        except OSError as e:
            raise FileProblem(f"could not make {folder} ({e.strerror}): fix the folder, then run again") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FileProblem(f"{folder} is not writable: logger=tensorboard writes its event files there; fix "
                              "its permissions, then run again")
        earlier = earlier_event_seconds(folder)
        wait_past_earlier_files(folder, earlier)
        # a resumed run replaces every point after its checkpoint (at 0 too: killed before its first checkpoint)
        self.folder = folder
        quiet_writer_thread_errors()
        try:
            self.writer = SummaryWriter(str(folder), purge_step=resumed_at + 1 if earlier else None)
        except OSError as e:  # a read-only or full file system that the permissions did not tell of
            raise FileProblem(f"could not write the TensorBoard events in {folder} ({e.strerror or e}): free space "
                              "or fix the folder, then run again") from None

    def log(self, row: dict) -> None:
        try:
            for column, tag in SCALARS.items():
                if row.get(column) is not None:
                    self.writer.add_scalar(tag, row[column], row["iteration"])
            self.writer.flush()  # a live view: written at once
        except OSError as e:  # a full disk, the folder made read-only meanwhile: as for the run's own files
            raise FileProblem(f"could not write the TensorBoard events in {self.folder} ({e.strerror or e}): free "
                              "space or fix the folder, then resume the run") from None

    def close(self, status: str) -> None:
        self.writer.close()
