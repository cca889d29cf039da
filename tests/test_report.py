"""multirun_analysis on synthetic run folders written by the test (no training), and one real sweep."""
import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import run_train
from multirun_analysis.report import MARKERS, main, report

METRICS_HEADER = "iteration,epoch,lr,train_loss,train_error,test_loss,test_error,val_error,elapsed_s,images_per_s\n"


def composed(*overrides: str) -> dict:
    with initialize_config_module(version_base="1.3", config_module="resnet_cifar.conf"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def write_run(folder, overrides, final_error, status="completed", params=269_722, iterations=(32000, 64000)):
    """A run folder as the training command writes it, with a made-up learning curve."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(composed(*overrides)), folder / ".hydra" / "config.yaml")
    rows = [f"{it},{it / 390:.4f},0.1,{0.5 + k},{final_error + 10 * (len(iterations) - 1 - k) + 1},"
            f"{0.4 + k},{final_error + 10 * (len(iterations) - 1 - k)},,{it / 100},900.0\n"
            for k, it in enumerate(iterations)]
    (folder / "metrics.csv").write_text(METRICS_HEADER + "".join(rows))
    summary = {"status": status, "iteration": iterations[-1], "params": params, "wall_time_s": 60.0}
    if status == "completed":
        summary.update(test_error=final_error, test_loss=0.4, train_error=final_error + 1, train_loss=0.5)
    else:
        summary["error"] = "RuntimeError: boom" if status == "failed" else None
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


# depth, arch -> final test errors of seeds 0, 1, 2
GRID = {(20, "resnet"): [8.0, 9.0, 10.0], (20, "plain"): [9.5, 10.5, 11.0],
        (56, "resnet"): [7.0, 7.2, 7.4], (56, "plain"): [13.0, 14.0, 12.0]}


@pytest.fixture
def sweep_dir(tmp_path):
    root = tmp_path / "multirun" / "fig6"
    for (depth, arch), errors in GRID.items():
        for seed, error in enumerate(errors):
            write_run(root / f"arch={arch},depth={depth},seed={seed}", [f"arch={arch}", f"depth={depth}", f"seed={seed}"],
                      error, params=269_722 if depth == 20 else 853_018)
    return root


def table_rows(out):
    lines = (out / "table.md").read_text().split("\n\n")[0].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_table_holds_the_hand_computed_means_and_stds(sweep_dir, tmp_path):
    out = tmp_path / "reports"
    report([sweep_dir], out)
    rows = {(int(r["depth"]), r["model"]): r for r in table_rows(out)}
    assert set(rows) == set(GRID)
    for key, errors in GRID.items():
        mean, std = statistics.mean(errors), statistics.stdev(errors)
        assert rows[key]["test error % (mean ± std)"] == f"{mean:.2f} ± {std:.2f}"
        assert rows[key]["accuracy %"] == f"{100 - mean:.2f}"
        assert rows[key]["runs"] == "3"
    # the paper's Table 6 beside full-budget option-A ResNets only
    assert rows[(20, "resnet")]["paper error %"] == "8.75" and rows[(20, "resnet")]["vs paper"] == "+0.25"
    assert rows[(56, "resnet")]["paper error %"] == "6.97" and rows[(56, "resnet")]["vs paper"] == "+0.23"
    assert rows[(20, "plain")]["paper error %"] == "" and rows[(56, "plain")]["vs paper"] == ""
    assert rows[(56, "plain")]["params"] == "853,018"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 12 and {"arch", "depth", "seed", "optimizer.lr", "status", "test_error"} <= set(runs)
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.columns) == {"run", "iteration", "metric", "value"}
    assert len(curves[curves.metric == "test_error"]) == 24


def test_short_budget_and_other_factors_are_never_compared_with_the_paper(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "a", ["budget=quick"], 30.0, iterations=(782, 1564))
    write_run(root / "b", ["budget=quick", "normalization=imagenet"], 31.0, iterations=(782, 1564))
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [r["normalization.name"] for r in rows] == ["imagenet", "per_pixel_mean"]
    assert all(r["paper error %"] == "" and r["runs"] == "1" for r in rows)
    assert rows[1]["test error % (mean ± std)"] == "30.00"
    assert (out / "normalization.png").stat().st_size > 10_000


def test_every_figure_is_written(sweep_dir, tmp_path):
    out = tmp_path / "reports"
    account = report([sweep_dir], out)
    for name in ("fig6.png", "depth.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert name in account


def test_unfinished_and_broken_runs_are_reported_not_averaged(sweep_dir, tmp_path):
    write_run(sweep_dir / "arch=resnet,depth=110,seed=0", ["depth=110"], 50.0, status="running", iterations=(1000,))
    write_run(sweep_dir / "arch=resnet,depth=32,seed=0", ["depth=32"], 60.0, status="failed", iterations=(1000,))
    truncated = write_run(sweep_dir / "truncated", ["depth=44"], 7.0)
    (truncated / "summary.json").write_text('{"status": "compl')
    cut = write_run(sweep_dir / "cut_metrics", ["depth=44"], 7.0)
    (cut / "metrics.csv").write_text(METRICS_HEADER + "1000,2.5,0.1,0.5\n")
    missing = write_run(sweep_dir / "missing_config", ["depth=44"], 7.0)
    (missing / ".hydra" / "config.yaml").unlink()

    out = tmp_path / "reports"
    account = report([sweep_dir], out)
    for name, why in (("truncated", "summary.json is unreadable"), ("cut_metrics", "metrics.csv is unreadable"),
                      ("missing_config", "config.yaml is missing")):
        assert f"skipped {sweep_dir / name}: {why}" in account
    text = (out / "table.md").read_text()
    assert "| 110 |" not in text.split("Not in the table")[0]  # not mixed into the means
    assert "| running | 1000 |" in text and "| failed | 1000 | RuntimeError: boom |" in text
    curves = pd.read_csv(out / "curves.csv")
    assert (curves.run == str(sweep_dir / "arch=resnet,depth=110,seed=0")).any()  # its curve so far


def test_readme_markers_are_replaced_and_the_rest_untouched(sweep_dir, tmp_path):
    before, after = "# Title\n\nintro text\n\n", "\n\n## After\nmore text\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{before}{MARKERS[0]}\nold table\n{MARKERS[1]}{after}")
    report([sweep_dir], tmp_path / "reports", readme)
    text = readme.read_text()
    assert text.startswith(before + MARKERS[0]) and text.endswith(MARKERS[1] + after)
    assert "old table" not in text and "| depth | model |" in text
    assert "![fig6](reports/fig6.png)" in text and "![depth](reports/depth.png)" in text


@pytest.mark.parametrize("args,message", [
    ([], "no run folders given and none of multirun, outputs/ here"),
    (["nowhere"], "no such folder: nowhere"),
    (["empty"], "no readable run folders under empty"),
])
def test_nothing_to_report_is_a_clear_error(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "multirun_analysis.report", *args], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("text", ["no markers\n", f"{MARKERS[0]}\na\n{MARKERS[1]}\n{MARKERS[0]}\nb\n{MARKERS[1]}\n"])
def test_readme_without_one_marker_pair_is_refused_before_anything_is_written(sweep_dir, tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert main([str(sweep_dir), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 2
    assert readme.read_text() == text and not (tmp_path / "r").exists()


def test_a_real_sweep_reports_end_to_end(tiny_cifar10, tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "multirun" / "s"
    result = run_train("-m", "depth=8", "arch=plain,resnet", "seed=0,1", "data.batch_size=32", "trainer.max_iters=4",
                       "trainer.eval_every=2", "trainer.checkpoint_every=4", "optimizer.milestones=[2]",
                       f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)  # the report's default: multirun/ and outputs/ here
    assert main([]) == 0
    assert "read 4 runs (4 completed)" in capsys.readouterr().out
    rows = table_rows(tmp_path / "reports")
    assert [(r["depth"], r["model"], r["runs"]) for r in rows] == [("8", "plain", "2"), ("8", "resnet", "2")]
    assert (tmp_path / "reports" / "fig6.png").stat().st_size > 10_000


def test_runs_on_several_processes_still_count_as_the_papers_recipe(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "one", ["depth=20"], 8.0)
    write_run(root / "two", ["depth=20", "trainer.nproc_per_node=2"], 9.0)
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [r["trainer.nproc_per_node"] for r in rows] == ["1", "2"]
    assert all(r["paper error %"] == "8.75" for r in rows)
    assert (out / "processes.png").stat().st_size > 10_000


def test_a_key_an_older_run_lacks_counts_as_its_default(tmp_path):
    """Run folders from before trainer.precision existed were fp32: the same group, the paper's recipe."""
    root = tmp_path / "sweep"
    write_run(root / "new", ["depth=20"], 8.0)
    old = write_run(root / "old", ["depth=20", "seed=1"], 9.0)
    config = OmegaConf.load(old / ".hydra" / "config.yaml")
    del config.trainer["precision"]
    OmegaConf.save(config, old / ".hydra" / "config.yaml")
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [(r["model"], r["runs"], r["paper error %"]) for r in rows] == [("resnet", "2", "8.75")]


def test_the_report_says_what_its_numbers_come_from(tmp_path, monkeypatch):
    """Budget, data and seeds under the table and on every figure; the band explained; depth.png from 0;
    runs.csv without binary noise (21.799999999999997)."""
    import multirun_analysis.plots as plots

    root = tmp_path / "sweep"
    for seed in (0, 1):
        run = write_run(root / f"seed={seed}", ["budget=quick", f"seed={seed}"], 100 - 78.2, iterations=(782, 1564))
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "train_images": 50000, "val_images": 0,
                                                      "test_images": 10000}))
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    out = tmp_path / "out"
    report([root], out)
    basis = "From 2 completed runs: 1564 iterations (the paper trained 64000); cifar10 (50000 training, 10000 test images)"
    assert f"{basis} from data; seeds 0, 1. Mean ± sample std over the seeds of a row." in (out / "table.md").read_text()
    assert "21.8," in (out / "runs.csv").read_text() and "21.79999" not in (out / "runs.csv").read_text()
    texts = {figure: " ".join(t.get_text() for t in figure.texts + [figure._suptitle] if t) for figure in figures}
    assert len(figures) == 2 and all(f"{basis}; seeds 0, 1." in text for text in texts.values())
    assert any("band ± 1 std" in text for text in texts.values())  # fig6 says what its band is
    depth = next(f for f in figures if "by depth" in f.axes[0].get_title())
    assert depth.axes[0].get_ylim()[0] == 0


@pytest.mark.parametrize("file,content,why", [
    (".hydra/config.yaml", "- a\n- list\n", "config.yaml holds list, not the mapping"),
    ("summary.json", "[]", "summary.json holds list, not the mapping"),
    ("summary.json", "null", "summary.json holds nothing, not the mapping"),
])
def test_a_run_file_that_is_not_a_mapping_is_skipped_with_the_reason(sweep_dir, tmp_path, file, content, why):
    """It was a TypeError/AttributeError and no report at all."""
    damaged = sweep_dir / "arch=plain,depth=20,seed=0"
    (damaged / file).write_text(content)
    account = report([sweep_dir], tmp_path / "out")
    assert f"skipped {damaged}: {why}" in account
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 11


def test_the_data_study_is_grouped_and_plotted_by_pipeline_and_augmentation(tmp_path):
    """+experiment=pipeline's factors; a run folder written before data.pipeline existed, with augment: true,
    counts as device / random."""
    root = tmp_path / "sweep"
    errors = {("device", "random"): 30.0, ("torchvision", "random"): 31.0, ("device", "static"): 36.0,
              ("torchvision", "static"): 37.0}
    for (pipeline, augment), error in errors.items():
        write_run(root / f"{pipeline}-{augment}", ["budget=quick", f"data.pipeline={pipeline}", f"data.augment={augment}"],
                  error, iterations=(782, 1564))
    old = write_run(root / "old", ["budget=quick"], 32.0, iterations=(782, 1564))
    config = OmegaConf.load(old / ".hydra" / "config.yaml")
    config.data.augment = True
    del config.data["pipeline"], config.data["workers"]
    OmegaConf.save(config, old / ".hydra" / "config.yaml")
    out = tmp_path / "out"
    report([root], out)
    rows = {(r["data.pipeline"], r["data.augment"]): r for r in table_rows(out)}
    assert set(rows) == set(errors) and set(table_rows(out)[0]) >= {"data.pipeline", "data.augment"}
    assert rows[("device", "random")]["runs"] == "2" and rows[("device", "random")]["test error % (mean ± std)"] == \
        f"31.00 ± {statistics.stdev([30.0, 32.0]):.2f}"
    for name in ("pipeline.png", "augment.png"):
        assert (out / name).stat().st_size > 10_000, name
