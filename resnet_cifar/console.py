"""How the command talks: log lines with Hydra's prefix, and errors the user can fix as one bare line.

The console handler (conf/hydra/job_logging/run.yaml) formats records with
Hydra's prefix, except those logged with `extra=BARE`: the `error: ...` line the
README shows. The run's train.log (RunFolder.log_to_file) keeps the prefix on
every line.
"""
from __future__ import annotations

import logging

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's
BARE = {"bare": True}  # log.error("error: %s", e, extra=BARE): the message alone on the console


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if getattr(record, "bare", False) else super().format(record)
