"""python -m resnet_cifar.evaluate RUN_DIR... [--data ROOT] [--checkpoint] [--out DIR] [--json PATH]

Evaluates trained runs on their test set: each net is rebuilt from its run's
config, its weights loaded (model.pt, or with --checkpoint the weights of
checkpoint.pt: a run in progress or interrupted), and the test set normalized
exactly as the run did (statistics of its own training split), on the CPU or
a GPU whatever trained it. Prints test error and loss beside what the run
recorded; writes per-class accuracy (class names from the data set's meta
file) and a confusion-matrix heatmap per run into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from .errors import EXIT_BAD_INPUT, UserError
from .filesystem import safe_name, unwritable_reason, write_figure, write_frame, write_text
from .saved_run import TrainedRun, load_run
from .scoring import outputs
from .trust import add_loading_options


@torch.no_grad()
def predict(run: TrainedRun) -> tuple[np.ndarray, np.ndarray, float]:
    """(predicted class, true class, mean loss) over the test set, in the run's evaluation batches and
    precision: the arithmetic of the run's own evaluation (scoring.outputs)."""
    predicted, truth, loss = [], [], torch.zeros((), dtype=torch.float64, device=run.device)
    for out, y in outputs(run.model, run.test_batches(), run.device, run.config.trainer.precision):
        loss += F.cross_entropy(out, y, reduction="sum")
        predicted.append(out.argmax(1).cpu())
        truth.append(y.cpu())
    predicted, truth = torch.cat(predicted).numpy(), torch.cat(truth).numpy()
    return predicted, truth, float(loss) / len(truth)


def evaluate_run(run: TrainedRun) -> dict:
    """Test error and loss, per-class accuracy and the confusion matrix of one loaded run."""
    predicted, truth, loss = predict(run)
    names = list(run.data.class_names)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {name: round(100.0 * confusion[i, i] / max(1, confusion[i].sum()), 4) for i, name in enumerate(names)}
    return {"run": str(run.run_dir), "weights": run.weights.name, "iteration": run.iteration,
            "device": str(run.device), "images": int(len(truth)),
            "test_error": round(100.0 * float((predicted != truth).sum()) / len(truth), 4),
            "test_loss": round(loss, 6), "recorded_test_error": run.summary.get("test_error"),
            "per_class_accuracy": per_class, "confusion": confusion.tolist(), "classes": names}


SLUG_BYTES = 80  # a run folder's name (its overrides) as a file name: shortened with a hash beyond this


def slug(run_dir: Path, taken: set[str] | None = None) -> str:
    """A file name for a run folder: its own name (its overrides, as a sweep names it), made safe and unique
    among the runs of one call (filesystem.safe_name); the whole path is in the printed line and --json."""
    return safe_name(Path(run_dir).resolve().name, SLUG_BYTES, taken)


def write_figures(result: dict, out: Path, taken: set[str] | None = None) -> list[Path]:
    """RUN.per_class.csv and RUN.confusion.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    name = slug(Path(result["run"]), taken)
    per_class = out / f"{name}.per_class.csv"
    write_frame(pd.DataFrame({"class": list(result["per_class_accuracy"]),
                              "accuracy": list(result["per_class_accuracy"].values())}), per_class, index=False)
    frame = pd.DataFrame(result["confusion"], index=result["classes"], columns=result["classes"])
    with plt.rc_context({"text.parse_math": False}):  # the run's name as it is, never mathtext
        fig, ax = plt.subplots(figsize=(7, 6))
        sns.heatmap(frame, annot=len(frame) <= 10, fmt="d", cmap="Blues", cbar=True, ax=ax)
        ax.set(xlabel="predicted class", ylabel="true class",
               title=f"{Path(result['run']).name}\ntest error {result['test_error']:.2f}% ({result['weights']})")
    figure = out / f"{name}.confusion.png"
    try:
        write_figure(fig, figure, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return [per_class, figure]


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # the command writes files and shows nothing: no display needed
    parser = argparse.ArgumentParser(prog="python -m resnet_cifar.evaluate", description=__doc__.split("\n\n")[1])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--data", help="data.root holding the data set (default: each run's own)")
    parser.add_argument("--checkpoint", action="store_true", help="the weights of checkpoint.pt instead of model.pt")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="where the per-run files go")
    parser.add_argument("--json", type=Path, help="write every number here")
    add_loading_options(parser)
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        "cpu" if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda is not allowed here: no CUDA device is available", file=sys.stderr)
        return EXIT_BAD_INPUT
    for option, path in (("--out", args.out), ("--json", args.json.parent if args.json else None)):
        reason = path is not None and unwritable_reason(path)
        if reason:  # before the evaluation, not after it
            print(f"error: {option} {path} cannot be used: {reason}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.json and args.json.is_dir():
        print(f"error: --json {args.json} is a folder: give a file name", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        evaluate_all(args, device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def evaluate_all(args: argparse.Namespace, device: str) -> None:
    results, taken = [], set()
    for run_dir in args.runs:
        run = load_run(run_dir, device, args.data, args.checkpoint, args.trust_code, args.max_parameters)
        result = evaluate_run(run)
        written = write_figures(result, args.out, taken)
        recorded = result["recorded_test_error"]
        at = "" if result["iteration"] is None else f" at iteration {result['iteration']}"
        print(f"{run_dir}: test error {result['test_error']:.2f}% (loss {result['test_loss']:.4f}) on "
              f"{result['images']} images, {result['weights']}{at}, {device}"
              + ("" if recorded is None else f"; the run recorded {recorded:.2f}%")
              + f"; wrote {', '.join(str(p) for p in written)}")
        results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
