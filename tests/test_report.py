"""multirun_analysis on synthetic run folders written by the test (no training), and one real sweep."""
import copy
import functools
import json
import statistics
import subprocess

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import cli, composed_spec, run_train
from multirun_analysis.report import MARKERS, main, report

T_975_2DF = 4.302652729911275  # the 97.5% quantile of Student's t, 2 degrees of freedom (a printed table: 4.303)
METRICS_HEADER = "iteration,epoch,lr,train_loss,train_error,test_loss,test_error,val_error,elapsed_s,images_per_s\n"


def composed(*overrides: str) -> dict:
    """The config a run of these overrides records (summary.json's): a copy of one composition per set of
    overrides (Hydra takes ~80 ms a composition, and the fixtures write the same runs test after test)."""
    return copy.deepcopy(_composed(overrides))


@functools.cache
def _composed(overrides: tuple[str, ...]) -> dict:
    return composed_spec(*overrides).recorded


def edit_config(run, change) -> None:
    """Change the config a run folder recorded (summary.json's, which the report reads), as older code
    wrote it."""
    summary = json.loads((run / "summary.json").read_text())
    change(summary["config"])
    (run / "summary.json").write_text(json.dumps(summary))


def write_run(folder, overrides, final_error, status="completed", params=269_722, iterations=(32000, 64000)):
    """A run folder as the training command writes it, with a made-up learning curve."""
    (folder / ".hydra").mkdir(parents=True)
    config = composed(*overrides)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    rows = [f"{it},{it / 390:.4f},0.1,{0.5 + k},{final_error + 10 * (len(iterations) - 1 - k) + 1},"
            f"{0.4 + k},{final_error + 10 * (len(iterations) - 1 - k)},,{it / 100},900.0\n"
            for k, it in enumerate(iterations)]
    (folder / "metrics.csv").write_text(METRICS_HEADER + "".join(rows))
    summary = {"status": status, "iteration": iterations[-1], "params": params, "wall_time_s": 60.0,
               "config": config, "overrides": list(overrides)}
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


@pytest.mark.slow
def test_table_holds_the_hand_computed_means_and_stds(sweep_dir, tmp_path):
    out = tmp_path / "reports"
    report([sweep_dir], out)
    rows = {(int(r["depth"]), r["model"]): r for r in table_rows(out)}
    assert set(rows) == set(GRID)
    for key, errors in GRID.items():
        mean, std = statistics.mean(errors), statistics.stdev(errors)
        assert (rows[key]["test error % (mean)"], rows[key]["std"]) == (f"{mean:.2f}", f"{std:.2f}")
        half = T_975_2DF * std / 3 ** 0.5  # Student's t with 2 degrees of freedom, from a table
        assert rows[key]["95% CI"] == f"[{mean - half:.2f}, {mean + half:.2f}]" and rows[key]["interval"] == "t"
        assert rows[key]["min–max"] == f"{min(errors):.2f}–{max(errors):.2f}"
        assert rows[key]["accuracy %"] == f"{100 - mean:.2f}"
        assert rows[key]["seeds"] == "3"
    # the paper's Table 6 beside full-budget option-A ResNets only
    assert rows[(20, "resnet")]["paper error %"] == "8.75"
    # 9.00 ± 4.303 * 1 / sqrt(3) = [6.52, 11.48], less 8.75
    assert rows[(20, "resnet")]["mean − paper [90% CI]: within ±0.3?"] == "+0.25 [-1.44, 1.94]: cannot tell"
    assert rows[(56, "resnet")]["paper error %"] == "6.97"
    # 7.2 ± t(0.95, 2) 2.92 x 0.2 / sqrt(3) = 0.337: the 90% interval reaches past 0.3 of the paper
    assert rows[(56, "resnet")]["mean − paper [90% CI]: within ±0.3?"] == "+0.23 [-0.11, 0.57]: cannot tell"
    assert rows[(20, "plain")]["paper error %"] == "" and rows[(56, "plain")]["mean − paper [90% CI]: within ±0.3?"] == ""
    assert rows[(56, "plain")]["params"] == "853,018"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 12 and {"arch.name", "depth", "seed", "optimizer.lr", "status", "test_error"} <= set(runs)
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.columns) == {"run", "iteration", "metric", "value"}
    assert len(curves[curves.metric == "test_error"]) == 24


@pytest.mark.slow
def test_short_budget_and_other_factors_are_never_compared_with_the_paper(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "a", ["budget=quick"], 30.0, iterations=(782, 1564))
    write_run(root / "b", ["budget=quick", "normalization=imagenet"], 31.0, iterations=(782, 1564))
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [r["normalization.name"] for r in rows] == ["imagenet", "per_pixel_mean"]
    assert all(r["paper error %"] == "" and r["seeds"] == "1" for r in rows)
    assert rows[1]["test error % (mean)"] == "30.00" and rows[1]["95% CI"] == "" and rows[1]["interval"] == "none: 1 seed"
    assert (out / "normalization.png").stat().st_size > 10_000


@pytest.mark.slow
def test_every_figure_is_written(sweep_dir, tmp_path):
    out = tmp_path / "reports"
    account = report([sweep_dir], out)
    for name in ("fig6.png", "depth.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert name in account


@pytest.mark.slow
def test_unfinished_and_broken_runs_are_reported_not_averaged(sweep_dir, tmp_path):
    write_run(sweep_dir / "arch=resnet,depth=110,seed=0", ["depth=110"], 50.0, status="running", iterations=(1000,))
    write_run(sweep_dir / "arch=resnet,depth=32,seed=0", ["depth=32"], 60.0, status="failed", iterations=(1000,))
    truncated = write_run(sweep_dir / "truncated", ["depth=44"], 7.0)
    (truncated / "summary.json").write_text('{"status": "compl')
    cut = write_run(sweep_dir / "cut_metrics", ["depth=44"], 7.0)
    (cut / "metrics.csv").write_text(METRICS_HEADER + "1000,2.5,0.1,0.5\n")
    missing = write_run(sweep_dir / "missing_config", ["depth=44"], 7.0)
    summary = json.loads((missing / "summary.json").read_text())
    del summary["config"]
    (missing / "summary.json").write_text(json.dumps(summary))
    one_bad_line = write_run(sweep_dir / "one_bad_line", ["depth=44"], 7.0)
    with open(one_bad_line / "metrics.csv", "a") as f:
        f.write("64000,164.1,0.001,0.5,8.0,\"0.4,7.0,,640.0,900.0\n")  # an unbalanced quote: that line only

    out = tmp_path / "reports"
    account = report([sweep_dir], out)
    for name, why in (("truncated", "summary.json is unreadable"), ("cut_metrics", "metrics.csv holds no whole row"),
                      ("missing_config", "summary.json holds no run config")):
        assert f"skipped {sweep_dir / name}: {why}" in account
    # one damaged line of metrics.csv leaves the rest of the run in: the contract's rule, training's too
    assert f"{one_bad_line}: 1 damaged line(s) of metrics.csv left out" in account
    assert str(one_bad_line) in set(pd.read_csv(out / "runs.csv")["run"])
    text = (out / "table.md").read_text()
    assert "| 110 |" not in text.split("Not in the table")[0]  # not mixed into the means
    assert "| running | 1000 |" in text and "| failed | 1000 | RuntimeError: boom |" in text
    curves = pd.read_csv(out / "curves.csv")
    assert (curves.run == str(sweep_dir / "arch=resnet,depth=110,seed=0")).any()  # its curve so far


@pytest.mark.slow
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
    (["nowhere"], "no such folder (or earlier report's runs.csv): nowhere"),
    (["empty"], "no readable run folders under empty"),
    (["empty", "--precision", "0"], "--precision 0.0: must be a positive number of points"),
    (["empty", "--precision", "nan"], "--precision nan: must be a positive number of points"),
])
def test_nothing_to_report_is_a_clear_error(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(cli("multirun_analysis.report", *args), cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("text", ["no markers\n", f"{MARKERS[0]}\na\n{MARKERS[1]}\n{MARKERS[0]}\nb\n{MARKERS[1]}\n"])
def test_readme_without_one_marker_pair_is_refused_before_anything_is_written(sweep_dir, tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert main([str(sweep_dir), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 2
    assert readme.read_text() == text and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_real_sweep_reports_end_to_end(tiny_cifar10, tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "multirun" / "s"
    result = run_train("-m", "depth=8", "arch=plain,resnet", "seed=0,1", "data.batch_size=32", "trainer.max_iters=4",
                       "trainer.eval_every=2", "trainer.checkpoint_every=4", "schedule.milestones=[2]",
                       f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logs = {arch: next(sweep_dir.glob(f"arch={arch},*,seed=0,*/train.log")).read_text() for arch in ("plain", "resnet")}
    assert "plain-8, " in logs["plain"] and "shortcut" not in logs["plain"]  # a plain net has none to name
    assert "resnet-8 (shortcut A), " in logs["resnet"]
    monkeypatch.chdir(tmp_path)  # the report's default: multirun/ and outputs/ here
    assert main([]) == 0
    assert "read 4 runs (4 completed)" in capsys.readouterr().out
    rows = table_rows(tmp_path / "reports")
    assert [(r["depth"], r["model"], r["seeds"]) for r in rows] == [("8", "plain", "2"), ("8", "resnet", "2")]
    assert (tmp_path / "reports" / "fig6.png").stat().st_size > 10_000


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_key_an_older_run_lacks_counts_as_its_default(tmp_path):
    """Run folders from before trainer.precision existed were fp32: the same group, the paper's recipe."""
    root = tmp_path / "sweep"
    write_run(root / "new", ["depth=20"], 8.0)
    old = write_run(root / "old", ["depth=20", "seed=1"], 9.0)
    edit_config(old, lambda config: config["trainer"].pop("precision"))
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [(r["model"], r["seeds"], r["paper error %"]) for r in rows] == [("resnet", "2", "8.75")]


@pytest.mark.slow
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
    assert f"{basis} from data; seeds 0, 1. Mean over the seeds of a row that finished (each seed counted once" in \
        (out / "table.md").read_text()
    assert "21.8," in (out / "runs.csv").read_text() and "21.79999" not in (out / "runs.csv").read_text()
    texts = {figure: " ".join(t.get_text() for t in figure.texts + [figure._suptitle] if t) for figure in figures}
    assert len(figures) == 2 and all(f"{basis}; seeds 0, 1." in text for text in texts.values())
    assert any("band: 95% interval of the mean" in text for text in texts.values())  # fig6 says what its band is
    depth = next(f for f in figures if "by depth" in f._suptitle.get_text())
    assert depth.axes[0].get_ylim()[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("file,content,why", [
    ("summary.json", '{"status": "completed", "config": ["a", "list"]}', "summary.json holds no run config"),
    ("summary.json", "[]", "summary.json is unreadable (it holds [], not a run's summary)"),
    ("summary.json", "null", "summary.json is unreadable (it holds null, not a run's summary)"),
])
def test_a_run_file_that_is_not_a_mapping_is_skipped_with_the_reason(sweep_dir, tmp_path, file, content, why):
    """It was a TypeError/AttributeError and no report at all."""
    damaged = sweep_dir / "arch=plain,depth=20,seed=0"
    (damaged / file).write_text(content)
    account = report([sweep_dir], tmp_path / "out")
    assert f"skipped {damaged}: {why}" in account
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 11


@pytest.mark.slow
def test_the_data_study_is_grouped_and_plotted_by_pipeline_and_augmentation(tmp_path):
    """+experiment=pipeline's factors; a run folder written before data.pipeline existed, with augment: true,
    counts as device / random."""
    root = tmp_path / "sweep"
    errors = {("device", "random"): 30.0, ("torchvision", "random"): 31.0, ("device", "static"): 36.0,
              ("torchvision", "static"): 37.0}
    for (pipeline, augment), error in errors.items():
        write_run(root / f"{pipeline}-{augment}", ["budget=quick", f"data.pipeline={pipeline}", f"augment={augment}"],
                  error, iterations=(782, 1564))
    old = write_run(root / "old", ["budget=quick"], 32.0, iterations=(782, 1564))

    def as_before_the_pipeline_existed(config):
        config["seed"] = 1  # a second seed (seed 0 again would be counted once)
        config["data"]["augment"] = True  # as it was recorded before augmentation was a plug-in
        del config["data"]["pipeline"], config["data"]["workers"], config["augment"]

    edit_config(old, as_before_the_pipeline_existed)
    out = tmp_path / "out"
    report([root], out)
    rows = {(r["data.pipeline"], r["augment.name"]): r for r in table_rows(out)}
    assert set(rows) == set(errors) and set(table_rows(out)[0]) >= {"data.pipeline", "augment.name"}
    assert rows[("device", "random")]["seeds"] == "2" and rows[("device", "random")]["test error % (mean)"] == \
        "31.00" and rows[("device", "random")]["std"] == f"{statistics.stdev([30.0, 32.0]):.2f}"
    for name in ("pipeline.png", "augment.png"):
        assert (out / name).stat().st_size > 10_000, name


@pytest.mark.slow
def test_preact_is_compared_with_the_2016_paper_only_under_its_conditions(tmp_path):
    """references.csv, as Table 6: a pre-activation ResNet-164 (bottleneck, option B) at the full recipe gets
    5.46; ResNet-1001 4.92 at mini-batch 128 and 4.62 at 64 (the abstract's figure); the same net with
    option A, or any net at a short budget, gets nothing. The table says where each number comes from."""
    root = tmp_path / "sweep"
    bottleneck = ["arch=preact", "arch.bottleneck=true"]
    write_run(root / "p164", [*bottleneck, "depth=164", "shortcut=B"], 5.9)
    write_run(root / "p164a", [*bottleneck, "depth=164", "shortcut=A"], 6.0)
    write_run(root / "p1001", [*bottleneck, "depth=1001", "shortcut=B"], 5.0)
    write_run(root / "p1001b64", [*bottleneck, "depth=1001", "shortcut=B", "data.batch_size=64",
                                  "trainer.max_iters=156200", "schedule.milestones=[62480,94501]"], 4.8,
              iterations=(94501, 156200))
    write_run(root / "p1001b64short", [*bottleneck, "depth=1001", "shortcut=B", "data.batch_size=64"], 4.9)
    write_run(root / "p110", ["arch=preact", "depth=110"], 6.5)
    write_run(root / "p110q", ["arch=preact", "depth=110", "budget=quick"], 30.0, iterations=(782, 1564))
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    paper = {(r["depth"], r["model"], r.get("shortcut", ""), r.get("data.batch_size", ""),
              r.get("trainer.max_iters", "")): r["paper error %"] for r in rows}
    assert paper[("164", "preact", "B", "128", "64000")] == "5.46"
    assert paper[("164", "preact", "A", "128", "64000")] == ""
    assert paper[("1001", "preact", "B", "128", "64000")] == "4.92"
    assert paper[("1001", "preact", "B", "64", "156200")] == "4.62"  # the authors' 200 epochs at 64
    assert paper[("1001", "preact", "B", "64", "64000")] == ""  # mini-batch 64 for 82 epochs: not that run
    assert paper[("110", "preact", "A", "128", "64000")] == "6.37"
    assert paper[("110", "preact", "A", "128", "1564")] == ""
    text = (out / "table.md").read_text()
    assert "preact-1001 4.62: He et al. 2016, abstract; the authors' code (KaimingHe/resnet-1k-layers): mini-batch 64" \
        in text


@pytest.mark.slow
def test_every_net_gets_its_row_and_its_panel_never_a_fixed_list(tmp_path):
    """A net the package does not know (a user's) is reported like the built-ins: its own rows, its own
    Figure 6 panel, its own line in depth.png; a key of its own YAML that never varies is part of it."""
    from multirun_analysis.collect import collect
    from multirun_analysis.plots import figure6_panels

    root = tmp_path / "sweep"
    for arch in ("plain", "resnet", "preact"):
        write_run(root / arch, [f"arch={arch}", "depth=20"], 9.0)
    wide = write_run(root / "wide", ["depth=20"], 7.5)

    def as_a_users_net(config):
        config["arch"] = {"_target_": "my_nets.WideResNet", "widen": 4, "name": "wide"}

    edit_config(wide, as_a_users_net)
    out = tmp_path / "out"
    report([root], out)
    rows = table_rows(out)
    assert [r["model"] for r in rows] == ["plain", "preact", "resnet", "wide"]
    assert "arch.widen" not in rows[0] and "arch.bottleneck" not in rows[0]  # part of what the net is
    assert figure6_panels(collect([root]).runs) == ["plain", "preact", "resnet", "wide"]
    assert (out / "fig6.png").stat().st_size > 10_000
