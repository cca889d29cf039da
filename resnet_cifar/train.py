"""python -m resnet_cifar.train [overrides]: one Hydra-configured training run, or a -m sweep of them.

Examples:
    python -m resnet_cifar.train                                # ResNet-20, the paper's recipe
    python -m resnet_cifar.train depth=56 arch=plain budget=quick
    python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet
    python -m resnet_cifar.train -m +experiment=table6 hydra.sweep.dir=multirun/table6
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import config as schema
from .engine import train
from .errors import Diverged, UserError
from .run_folder import ConfigMismatch, exclusive, record_failure

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def restore_hydra_files(run_dir: Path, summary: dict) -> None:
    """Hydra overwrote .hydra/ with the refused config; put the run's own config back."""
    hydra_dir = run_dir / ".hydra"
    OmegaConf.save(OmegaConf.create(summary["config"]), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(summary.get("overrides", [])), hydra_dir / "overrides.yaml")


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One run. In a sweep a failed job is recorded and logged and the sweep goes on
    (the sweep's callback fails the command at the end); alone it exits non-zero."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    overrides = list(hydra_cfg.overrides.task)
    exit_code = 0
    try:
        with exclusive(run_dir):
            try:
                typed: schema.BaseConfig = OmegaConf.to_object(cfg)
                schema.validate(typed)
                train(typed, run_dir, config, overrides)
            except ConfigMismatch as e:  # the folder belongs to another run: touch nothing
                restore_hydra_files(run_dir, e.summary)
                raise
            except Exception as e:
                if in_sweep:  # alone, the exit status and the message say it; bad input leaves the folder as it was
                    record_failure(run_dir, e, config, overrides)
                raise
    except UserError as e:
        log.error("error: %s", e)
        exit_code = EXIT_BAD_INPUT
    except Diverged as e:  # engine.train has recorded it
        log.error("diverged: %s", e)
        exit_code = EXIT_DIVERGED
    except Exception:
        if not in_sweep:
            raise
        log.exception("job failed (recorded in %s/summary.json)", run_dir)
    if exit_code and not in_sweep:
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
