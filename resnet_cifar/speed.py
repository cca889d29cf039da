"""python -m resnet_cifar.speed: training and evaluation throughput, ours against the standard pipeline.

"Ours" is the training step of resnet_cifar.train itself (TrainingLoop.train_one:
batch sampling, augmentation on the device, forward, backward, SGD step). The
standard pipeline is what most reproductions run, and the same code as
data.pipeline=torchvision: PIL images with torchvision's transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip) through a DataLoader with
workers, per-channel normalization, the model in NCHW eager fp32. Both train
on the same images; their timed windows alternate, so a busy machine slows
both alike. The ratio ours/standard is the figure to report. Evaluation is the
same code for both (the test set on the device).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checks import check_plugins
from .config import BaseConfig, typed, validate
from .hydra_setup import compose_run
from .run_spec import composed_run_config
from .config import Dataset as DatasetName
from .data.cifar import CifarArrays, load_cifar
from .data.files import DATASETS
from .cores import free_cores
from .distributed import World, prepare_process
from .loop import TrainingLoop
from .models import build_model
from .errors import EXIT_BAD_INPUT, ConfigError, UserError
from .filesystem import unwritable_reason, write_text
from .provenance import device_name
from .roofline import MATMUL_SIZE, matmul_rate, training_flops_per_image

# The standard pipeline: resnet_cifar.train's own run with data.pipeline=torchvision and no fast path.
STANDARD = "standard"
STANDARD_OVERRIDES = ["data.pipeline=torchvision", "normalization=channel_stats", "trainer.precision=fp32",
                      "trainer.cuda_graph=false", "trainer.compile=false", "trainer.channels_last=false"]


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: a fixed number of decimals lost most of a small model's GFLOP/s
    (2.2506 written as 2.3), and the JSON's products must agree with its factors."""
    return float(f"{value:.{digits}g}")


def write_synthetic_cifar10(root: Path, n_train: int = 50_000, n_test: int = 10_000) -> Path:
    """Random images in the official layout, for machines without the data set."""
    rng = np.random.default_rng(0)
    folder = root / DATASETS[DatasetName.cifar10].folder
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, n: int) -> None:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)

    for i in range(1, 6):
        dump(f"data_batch_{i}", n_train // 5)
    dump("test_batch", n_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(c) for c in range(10)]}, f)
    return root


def variant_overrides(variant: str) -> list[str]:
    """'bf16+graph' -> the overrides of resnet_cifar.train that make it (every fast path named, on
    or off, so that no default decides); refuses an unknown part."""
    precision, *extras = variant.split("+")
    if precision not in ("fp32", "bf16") or not set(extras) <= {"graph", "compile"}:
        raise argparse.ArgumentTypeError(
            f"variant {variant!r} is not allowed: it is fp32 or bf16, then optionally +graph and/or +compile "
            "(e.g. bf16+graph)")
    return [f"trainer.precision={precision}", f"trainer.cuda_graph={'graph' in extras}".lower(),
            f"trainer.compile={'compile' in extras}".lower()]


def bench_config(root: Path, depth: int, variant: str, batch: int, device: str,
                 workers: int | None = None, threads: int | None = None) -> BaseConfig:
    """The validated config of `python -m resnet_cifar.train` for one of our variants, or STANDARD (the
    torchvision pipeline with `workers`); `threads`: trainer.threads (None: the cores free at the start)."""
    overrides = [f"depth={depth}", f"data.root={root}", f"data.batch_size={batch}", f"trainer.device={device}",
                 f"trainer.threads={'null' if threads is None else threads}",
                 *(STANDARD_OVERRIDES + [f"data.workers={'null' if workers is None else workers}"] if variant == STANDARD
                   else variant_overrides(variant))]
    cfg: BaseConfig = typed(composed_run_config(compose_run(overrides)))
    validate(cfg)
    return cfg


def prepared(cfg: BaseConfig) -> torch.device:
    """This process set up as a run's is (distributed.prepare_process: its threads from the cores free now)."""
    device, chosen = prepare_process(cfg.trainer.device, cfg.trainer.threads, World(), free_cores())
    print(f"# {chosen}", flush=True)
    return device


def ours(root: Path, depth: int, variant: str, batch: int, device: str, data: CifarArrays | None = None,
         workers: int | None = None) -> TrainingLoop:
    """A training loop built exactly as `python -m resnet_cifar.train` builds it (from `data` when loaded
    already; see bench_config); no run folder: only its step and evaluation are timed."""
    cfg = bench_config(root, depth, variant, batch, device, workers)
    return TrainingLoop(cfg, prepared(cfg), data=data)


def time_windows(steps: dict[str, Callable[[], None]], batch: int, per_window: int, windows: int,
                 warmup: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """images/s of each step function, windows alternating between them, warm-up excluded."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(windows):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_window):
                step()
            sync()
            rates[name].append(batch * per_window / (time.perf_counter() - start))
    return rates


def eval_rate(evaluate: Callable[[], None], images: int, sync: Callable[[], None], warmup: bool,
              repeats: int = 2) -> float:
    if warmup:  # untimed: on a GPU, cuDNN picks its algorithms for the evaluation shapes here
        evaluate()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate()
        sync()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 1024


def concurrent_worker(args: tuple) -> tuple[float, float]:
    """One of N training processes started together: (start, end) of its timed steps, wall clock."""
    root, depth, variant, batch, device, steps, warmup, barrier = args
    loop = ours(root, depth, variant, batch, device)
    sync = (lambda: torch.cuda.synchronize(loop.device)) if loop.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        loop.train_one(0.1)
    sync()
    barrier.wait()
    start = time.time()
    for _ in range(steps):
        loop.train_one(0.1)
    sync()
    return start, time.time()


def concurrent_rate(n: int, root: Path, depth: int, variant: str, batch: int, device: str, steps: int,
                    warmup: int) -> float:
    """Aggregate images/s of n separate training processes on one device, timed from the first
    start to the last end (the way several sweep jobs would share a GPU)."""
    context = mp.get_context("spawn")
    with context.Manager() as manager, context.Pool(n) as pool:
        barrier = manager.Barrier(n)
        spans = pool.map(concurrent_worker, [(root, depth, variant, batch, device, steps, warmup, barrier)] * n)
    return n * steps * batch / (max(end for _, end in spans) - min(start for start, _ in spans))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m resnet_cifar.speed", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110], help="net depths to time (6n+2)")
    parser.add_argument("--variants", nargs="+", default=None, type=str,
                        help="our training step in these forms: fp32 or bf16, optionally +graph (trainer.cuda_graph) "
                             "and +compile (trainer.compile), e.g. bf16+graph (default: fp32 bf16, and on a CPU "
                             "without native bf16 fp32 alone)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (trainer.threads; default: the cores free when it starts, as a run)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="folder holding cifar-10-batches-py/ (random images of that shape if missing)")
    parser.add_argument("--batch", type=int, default=128, help="images per training step")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per pipeline; the median is reported")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers of the standard pipeline")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the GPU where there is one, else the CPU")
    parser.add_argument("--no-standard", action="store_true", help="time our variants only (no ratio)")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[],
                        help="also: aggregate images/s of this many separate training processes at once "
                             "(first depth, first variant), e.g. 1 2 4")
    parser.add_argument("--concurrent-steps", type=int, default=500, help="timed steps of each concurrent process")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.variants is None:
        emulated = args.device != "cuda" and not torch.cuda.is_available() and not native_bf16()
        args.variants = ["fp32"] if emulated else ["fp32", "bf16"]
        if emulated:
            print("# bf16 left out: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 would be emulated, "
                  "many times slower than fp32 (--variants fp32 bf16 times it anyway)", flush=True)
    elif any(v.startswith("bf16") for v in args.variants) and not torch.cuda.is_available() and not native_bf16():
        print("# warning: this CPU has no native bf16 (AVX-512 BF16 or AMX): its bf16 steps are emulated and "
              "slow; this takes a while", flush=True)
    for name in ("batch", "steps", "windows", "concurrent_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    reason = args.json and unwritable_reason(args.json.parent)
    if reason:
        parser.error(f"--json {args.json}: {reason}")
    try:
        report = measure(args)
    except UserError as e:  # a depth the net does not take, a data file that is refused, ...
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    return report


def measure(args: argparse.Namespace) -> dict:
    """Time every depth and pipeline asked for; the numbers main prints."""
    for variant in args.variants:
        try:
            variant_overrides(variant)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(str(e)) from None
    pipelines = ([] if args.no_standard else [STANDARD]) + args.variants
    with tempfile.TemporaryDirectory() as tmp:
        found = (args.data / DATASETS[DatasetName.cifar10].folder).is_dir()
        root = args.data if found else Path(tmp) / "data"
        # every setting composed and refused before data is loaded or 60,000 random images written
        configs = [{v: bench_config(root, depth, v, args.batch, args.device, args.workers, args.threads)
                    for v in pipelines} for depth in args.depths]
        for by_variant in configs:  # the net of each depth built and run forward (its depth rule is its own)
            check_plugins(next(iter(by_variant.values())))
        data_desc = f"CIFAR-10 files in {args.data}" if found else "random images (no data set found)"
        if not found:
            write_synthetic_cifar10(root)
        data = load_cifar(DatasetName.cifar10, root, allow_download=False)
        results = []
        peaks: dict[str, float] = {}  # the machine's matmul rate in each precision, FLOP/s
        on = prepared(next(iter(configs[0].values())))
        for depth, by_variant in zip(args.depths, configs):
            loops = {v: TrainingLoop(cfg, on, data=data) for v, cfg in by_variant.items()}
            device = next(iter(loops.values())).device
            if not peaks:  # measured once, on the device the steps run on, before any step is timed
                peaks = {"fp32": matmul_rate(torch.float32, device), "bf16": matmul_rate(torch.bfloat16, device)}
            first = next(iter(loops.values()))
            flops = training_flops_per_image(build_model(first.cfg, data.num_classes), data.num_classes)
            sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
            steps = {v: (lambda loop=loop: loop.train_one(0.1)) for v, loop in loops.items()}
            print(f"# depth {depth}: timing {', '.join(steps)} ({args.windows} windows of {args.steps} steps each, "
                  f"{args.warmup} untimed first), then evaluation", flush=True)
            rates = time_windows(steps, args.batch, args.steps, args.windows, args.warmup, sync)
            train = {name: statistics.median(r) for name, r in rates.items()}
            n_test = len(data.test_images)
            on_gpu = device.type == "cuda"
            evals = {v: eval_rate(loop.evaluate_test, n_test, sync, on_gpu) for v, loop in loops.items()}
            print("# depth {}: {}".format(depth, ", ".join(f"{n} {train[n]:.0f} train img/s, {evals[n]:.0f} eval img/s"
                                                         for n in steps)), flush=True)
            for name in steps:
                achieved = train[name] * flops
                results.append({
                    "depth": depth, "pipeline": name, "train_images_per_s": round(train[name], 1),
                    "train_windows": [round(r, 1) for r in rates[name]],
                    "ratio_vs_standard": round(train[name] / train[STANDARD], 3) if STANDARD in train else None,
                    "eval_images_per_s": round(evals[name], 1),
                    "train_gflop_per_image": significant(flops / 1e9), "train_gflop_per_s": significant(achieved / 1e9),
                    "of_matmul_rate": significant(achieved / peaks[precision_of(name)]),
                })
            del loops
        concurrent = []
        for n in args.concurrent:
            rate = concurrent_rate(n, root, args.depths[0], args.variants[0], args.batch, args.device,
                                   args.concurrent_steps, args.warmup)
            concurrent.append({"processes": n, "depth": args.depths[0], "variant": args.variants[0],
                               "aggregate_images_per_s": round(rate, 1)})
        report = {
            "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "data": data_desc,
            "batch": args.batch, "steps_per_window": args.steps, "windows": args.windows,
            "workers": args.workers, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_mb_now": round(rss_mb()),
            "peak_device_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
            "matmul_gflop_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "matmul_size": MATMUL_SIZE,
            "results": results, "concurrent": concurrent,
        }
    return report


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere torch emulates it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_of(pipeline: str) -> str:
    """The precision a pipeline's step computes in (the standard pipeline: fp32)."""
    return "fp32" if pipeline == STANDARD else pipeline.split("+")[0]


def print_table(report: dict) -> None:
    print(f"{report['device_name']} ({report['device']}), torch {report['torch']}, {report['threads']} threads; "
          f"{report['data']}; batch {report['batch']}, "
          + (f"the median of {report['windows']} timed windows" if report["windows"] > 1 else "one timed window")
          + f" of {report['steps_per_window']} steps")
    rates = report["matmul_gflop_per_s"]
    print(f"matmul rate ({report['matmul_size']}x{report['matmul_size']}): fp32 {rates['fp32']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s; a step's FLOPs: forward and backward, counted from the model")
    print(f"{'depth':>5} {'pipeline':>18} {'train img/s':>12} {'x standard':>11} {'eval img/s':>11} "
          f"{'GFLOP/s':>9} {'of matmul':>10}")
    for r in report["results"]:
        ratio = "" if r["ratio_vs_standard"] is None else f"{r['ratio_vs_standard']:.2f}x"
        print(f"{r['depth']:>5} {r['pipeline']:>18} {r['train_images_per_s']:>12.0f} "
              f"{ratio:>11} {r['eval_images_per_s']:>11.0f} {r['train_gflop_per_s']:>9.1f} "
              f"{100 * r['of_matmul_rate']:>9.1f}%")
    for c in report["concurrent"]:
        print(f"{c['processes']} concurrent processes (depth {c['depth']}, {c['variant']}): "
              f"{c['aggregate_images_per_s']:.0f} img/s in all")
    device = f", device peak {report['peak_device_mb']} MB" if report["peak_device_mb"] is not None else ""
    print(f"host RSS peak {report['peak_rss_mb']} MB{device}")


if __name__ == "__main__":
    main()
