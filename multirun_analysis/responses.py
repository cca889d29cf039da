"""python -m multirun_analysis.responses: Figure 7 of He et al. 2015, the layer responses.

Usage: python -m multirun_analysis.responses [RUN_OR_SWEEP_DIR ...] [--out DIR] [--data ROOT]

For every completed run that kept its model.pt, the net is rebuilt from the
run's config (load_run: its arch plug-in, its weights, its normalization) and
the test set is run through it once in eval mode. Which layers are its
responses the net says itself (its `response_layers()`; for the paper's nets
the BN after each 3x3 conv, before the ReLU and the addition, the paper's
definition); a net that does not say is left out, with a line saying so. Each
response's standard deviation is taken per channel over all test images and
positions, then averaged over the channels. Writes responses.csv (run, arch,
depth, seed, layer, std) and fig7.png: std by layer index, and sorted by
magnitude, as in the paper.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor, nn
from tqdm import tqdm

from resnet_cifar.config import NAME_KEY
from resnet_cifar.contract import MODEL_FILE
from resnet_cifar.errors import DataError, UserError
from resnet_cifar.filesystem import write_figure, write_frame
from resnet_cifar.models import RESPONSES_METHOD, response_layers
from resnet_cifar.saved_run import load_run
from resnet_cifar.trust import CodeTrust, add_loading_options

from .collect import ARCH, DEFAULT_DIRS, FLOATS, collect, finished
from .plots import LITERAL_TEXT, add_caption, interval_of_spread

RESPONSES_FILE = "responses.csv"
FIGURE_FILE = "fig7.png"


class NoResponses(Exception):
    """A net that does not say which of its layers are its responses."""


ROWS_PER_CHUNK = 65536  # positions summed in float32 at a time (pairwise, so exact enough), then in float64


def _shifted_sums(output: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Per channel, in float64: the sum of (x - shift) and of its square over images and positions. One pass
    over the response in its own layout (a view of channels_last output as rows of channels; NCHW by image),
    a chunk of at most ROWS_PER_CHUNK positions at a time."""
    x = output.float()
    channels = x.shape[1]
    if x.is_contiguous(memory_format=torch.channels_last):
        chunks = (c - shift for c in x.permute(0, 2, 3, 1).reshape(-1, channels).split(ROWS_PER_CHUNK))
        dims: tuple[int, ...] = (0,)
    else:
        per_chunk = max(1, ROWS_PER_CHUNK // (x.shape[2] * x.shape[3]))
        chunks = (c - shift.view(1, -1, 1, 1) for c in x.split(per_chunk))
        dims = (0, 2, 3)
    total = torch.zeros(channels, dtype=torch.float64, device=x.device)
    squares = torch.zeros(channels, dtype=torch.float64, device=x.device)
    for d in chunks:
        total += d.sum(dims).double()
        squares += (d * d).sum(dims).double()
    return total.cpu(), squares.cpu()


@torch.no_grad()
def layer_response_std(model: nn.Module, batches) -> list[float]:
    """Per response layer: std of its output per channel over images and positions, mean over channels.

    One pass over each response per batch, in float32 sums of at most ROWS_PER_CHUNK positions added up in
    float64, of the values less a per-channel shift taken from the first batch (the shifted-data algorithm:
    no cancellation when a channel's mean is large against its spread). About the cost of the evaluation pass
    itself; a float64 copy of every response, as before, cost about as much again."""
    layers = response_layers(model)
    if layers is None:
        raise NoResponses(f"{type(model).__name__} has no {RESPONSES_METHOD}() method, so its responses are not "
                          "known")
    shifts: list[Tensor | None] = [None] * len(layers)  # per channel, from the first batch
    sums: list[Tensor | float] = [0.0] * len(layers)
    squares: list[Tensor | float] = [0.0] * len(layers)
    counts = [0] * len(layers)

    def hook(index: int):
        def record(module, inputs, output: Tensor) -> None:  # before an in-place ReLU that follows
            if shifts[index] is None:
                shifts[index] = output[:64].float().mean((0, 2, 3))
            total, square = _shifted_sums(output, shifts[index])
            sums[index] = sums[index] + total
            squares[index] = squares[index] + square
            counts[index] += output.numel() // output.shape[1]
        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        model.eval()
        for x, _ in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    stds = []
    for total, square, n in zip(sums, squares, counts):
        mean = total / n
        stds.append(float((square / n - mean.square()).clamp_min(0).sqrt().mean()))
    return stds


def run_responses(run_dir: Path, data_root: str | None = None, device: torch.device = torch.device("cpu"),
                  trust_code: list[str] = (), max_parameters: int | None = None) -> pd.DataFrame:
    """The layer responses of one run's model on its test set, loaded as evaluate loads it (load_run: the
    net from its config, model.pt, the test set normalized as the run trained); NoResponses for a net that
    does not say which its responses are."""
    run = load_run(run_dir, device, data_root, trust_code=trust_code, max_parameters=max_parameters)
    stds = layer_response_std(run.model, run.test_batches(1000))
    config = run.recorded
    return pd.DataFrame({"run": str(run_dir), "arch": config["arch"][NAME_KEY], "depth": config["depth"],
                         "seed": config.get("seed"), "layer": range(1, len(stds) + 1), "std": stds})


def runs_with_models(runs: pd.DataFrame) -> list[Path]:
    """The completed runs of a report's one list of readable runs (collect.collect) that kept their final
    weights: a run the report skipped as unreadable is not read here either."""
    if runs.empty:
        return []
    completed = runs.loc[finished(runs), "run"]
    return [Path(run) for run in completed if (Path(run) / MODEL_FILE).is_file()]


def figure7(responses: pd.DataFrame, path: Path, caption: str = "") -> Path:
    """Two panels like the paper's: by layer index, and each net's layers sorted by magnitude; a colour per
    depth that reads on white, a line style per architecture, a band of the 95% interval of the mean over seeds
    (the table's; none for one seed)."""
    with plt.rc_context(LITERAL_TEXT):
        return _figure7(responses, path, caption)


def _figure7(responses: pd.DataFrame, path: Path, caption: str) -> Path:
    frame = responses.copy()
    frame["rank"] = frame.groupby("run")["std"].rank(ascending=False, method="first").astype(int)
    fig, axes = plt.subplots(2, 1, figsize=(8, 7))
    depths = sorted(frame["depth"].unique())
    frame["depth"] = frame["depth"].astype(str)
    style = {"hue": "depth", "hue_order": [str(d) for d in depths], "style": "arch", "palette": "deep",
             "errorbar": interval_of_spread, "markers": False}
    sns.lineplot(data=frame, x="layer", y="std", ax=axes[0], **style)
    sns.lineplot(data=frame, x="rank", y="std", ax=axes[1], legend=False, **style)
    ylabel = "std of the response\n(of each of the net's response layers)"
    axes[0].set(xlabel="layer index (original)", ylabel=ylabel,
                title="Layer responses on the test set (Fig. 7); band: 95% interval of the mean over seeds"
                + ("; 1 seed: no interval" if (frame.groupby(["arch", "depth"])["run"].nunique() <= 1).any() else ""))
    axes[1].set(xlabel="layer index (sorted by magnitude)", ylabel=ylabel, ylim=(0, None))
    axes[0].set(ylim=(0, None))  # a std is never below 0, nor its band
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the curves, not over them
    add_caption(fig, caption)
    fig.tight_layout()
    write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def left_out_line(runs: pd.DataFrame, left_out: dict[str, str]) -> str:
    """One line per net left out of Figure 7, with how many runs and why."""
    by_arch: dict[str, list[str]] = {}
    names = dict(zip(runs["run"].astype(str), runs[ARCH].astype(str))) if ARCH in runs else {}
    for run, why in left_out.items():
        by_arch.setdefault(names.get(run, "?"), []).append(why)
    return "\n".join(f"Figure 7 leaves out arch={arch} ({len(whys)} run{'s' if len(whys) > 1 else ''}): {whys[0]}"
                     for arch, whys in sorted(by_arch.items()))


def write_responses(runs: pd.DataFrame, out: Path, data_root: str | None = None, caption: str = "",
                    trust_code: list[str] = (), max_parameters: int | None = None,
                    ) -> tuple[pd.DataFrame | None, Path | None, dict[str, str]]:
    """responses.csv and fig7.png in `out` for the completed runs of `runs` that kept a model, can be loaded
    here, and whose net says which its responses are: (responses, figure, {run left out: why}); no figure
    when none could be measured. One run that cannot be loaded (its net's module not importable here or not
    trusted, its data not found) is left out, saying why, not all of them: its numbers are still reported."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    measured, left_out = [], {}
    models = runs_with_models(runs)
    # a progress bar per model where it takes a while (on a terminal: tqdm's disable=None)
    for run_dir in tqdm(models, desc="Figure 7: layer responses", unit="model", disable=None if models else True):
        try:
            measured.append(run_responses(run_dir, data_root, device, trust_code, max_parameters))
        except NoResponses as e:
            left_out[str(run_dir)] = str(e)
        except UserError as e:
            hint = " (give the data folder with --data)" if isinstance(e, DataError) else ""
            left_out[str(run_dir)] = f"it cannot be loaded here: {e}{hint}"
    if not measured:
        return None, None, left_out
    responses = pd.concat(measured, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    write_frame(responses, out / RESPONSES_FILE, index=False, float_format=FLOATS)
    return responses, figure7(responses, out / FIGURE_FILE, caption), left_out


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # the command writes files and shows nothing: no display needed
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.responses",
                                     description="Figure 7: std of the 3x3 layers' responses on the test set.")
    parser.add_argument("dirs", nargs="*", type=Path, help="run or sweep folders (default: multirun/ and outputs/)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where to write (default: reports/)")
    parser.add_argument("--data", help="data.root to read the test set from (default: each run's own)")
    add_loading_options(parser)
    args = parser.parse_args(argv)
    dirs = args.dirs or [Path(d) for d in DEFAULT_DIRS if Path(d).is_dir()]
    missing = [d for d in dirs if not d.is_dir()]
    if not dirs or missing:
        print(f"error: no such folder: {', '.join(map(str, missing or DEFAULT_DIRS))}", file=sys.stderr)
        return 2
    found = collect(dirs)
    for run, why in found.broken.items():
        print(f"skipped {run}: {why}", file=sys.stderr)
    try:
        CodeTrust.of(args.trust_code)  # a bad module path: one line before any run is read
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    responses, figure, left_out = write_responses(found.runs, args.out, args.data, trust_code=args.trust_code,
                                                  max_parameters=args.max_parameters)
    if left_out:
        print(left_out_line(found.runs, left_out), file=sys.stderr)
    if responses is None:
        print(f"error: no completed run with a model.pt whose net says its responses, under "
              f"{', '.join(map(str, dirs))}", file=sys.stderr)
        return 2
    print(f"{responses['run'].nunique()} runs, {len(responses)} layers: wrote {args.out / RESPONSES_FILE}, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
