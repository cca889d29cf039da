"""The report's time over many synthetic completed runs (no models, so no Figure 7): python bench/report_500.py

Writes RUNS run folders (depth x arch x normalization x seeds, each with a 4-point learning curve, in the
run-folder contract) into a temporary folder, then times multirun_analysis.report.report over them, twice
(the first pays imports and seaborn's start). Not a test: a number for the README.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from resnet_cifar.hydra_setup import compose_run

from multirun_analysis.report import report
from resnet_cifar.run_spec import composed_run_config

HEADER = "iteration,epoch,lr,train_loss,train_error,test_loss,test_error,val_error,elapsed_s,images_per_s\n"
DEPTHS, ARCHS = (20, 32, 44, 56, 110), ("plain", "resnet")
NORMALIZATIONS = ("per_pixel_mean", "imagenet", "channel_stats", "unit", "raw")


def config_of(overrides: list[str]) -> dict:
    return composed_run_config(compose_run(overrides))


def write_runs(root: Path, seeds: int) -> int:
    rng = np.random.default_rng(0)
    count = 0
    for depth, arch, norm in itertools.product(DEPTHS, ARCHS, NORMALIZATIONS):
        base = [f"depth={depth}", f"arch={arch}", f"normalization={norm}", "budget=quick"]
        config = config_of(base)
        for seed in range(seeds):
            folder = root / ",".join([*base, f"seed={seed}"])
            folder.mkdir(parents=True)
            error = 30 + depth / 10 * (arch == "plain") + rng.normal(0, 1)
            rows = "".join(f"{it},{it / 391:.2f},0.1,1.0,{error + 5 * (3 - k) + 1:.3f},0.9,{error + 5 * (3 - k):.3f},,"
                           f"{it / 50},600\n" for k, it in enumerate((391, 782, 1173, 1564)))
            (folder / "metrics.csv").write_text(HEADER + rows)
            summary = {"status": "completed", "iteration": 1564, "params": 269_722, "wall_time_s": 600.0,
                       "config": {**config, "seed": seed}, "overrides": [*base, f"seed={seed}"],
                       "test_error": error, "test_loss": 0.9, "train_error": error + 1, "train_loss": 1.0}
            (folder / "summary.json").write_text(json.dumps(summary))
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per cell (50 cells; default 10: 500 runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        count = write_runs(root, args.seeds)
        for attempt in (1, 2):
            start = time.perf_counter()
            report([root], Path(tmp) / f"out{attempt}")
            print(f"report over {count} runs, attempt {attempt}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
