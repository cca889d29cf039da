"""python -m resnet_cifar.train [overrides]: one Hydra-configured training run (or a -m sweep).

Examples:
    python -m resnet_cifar.train                               # ResNet-20, the paper's recipe
    python -m resnet_cifar.train depth=56 arch=plain +experiment=quick
    python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import config as schema
from .engine import train
from .errors import UserError
from .run_folder import ConfigMismatch

log = logging.getLogger(__name__)


def restore_hydra_files(run_dir: Path, summary: dict) -> None:
    """Hydra overwrote .hydra/ with the refused config; put the run's own config back."""
    hydra_dir = run_dir / ".hydra"
    OmegaConf.save(OmegaConf.create(summary["config"]), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(summary.get("overrides", [])), hydra_dir / "overrides.yaml")


@hydra.main(version_base="1.3", config_path="pkg://resnet_cifar.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        typed: schema.BaseConfig = OmegaConf.to_object(cfg)
        schema.validate(typed)
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        train(typed, run_dir, config, list(hydra_cfg.overrides.task))
    except ConfigMismatch as e:
        restore_hydra_files(run_dir, e.summary)
        log.error("error: %s", e)
        sys.exit(2)
    except UserError as e:
        log.error("error: %s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
