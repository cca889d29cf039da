"""How the command's log lines look on the console: Hydra's prefix, for Hydra's console handler
(conf/hydra/job_logging/run.yaml), for DDP workers (job.run_worker) and for train.log
(RunFolder.log_to_file). Errors the user can fix are printed by train.main as one bare line.
"""
from __future__ import annotations

import logging

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
