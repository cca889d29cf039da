"""The seams: a model, a normalization, an optimizer and a tracker of the user's own, by `_target_`, with
nothing in the package edited; every plug-in checked before anything runs; a search that tunes on held-out
images only. The guide's "Adding your own model" (docs/guide/your-own.md) is run exactly as written, from a
folder outside the repository."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import KILL_AT_ITERATION_ENV, TINY_BUDGET, cli, composed_spec, run_train, train_in_process
from resnet_cifar.config import validate
from resnet_cifar.errors import ConfigError
from resnet_cifar.checks import check_plugins
from resnet_cifar.plugins import ConfigSource
from test_train import numbers, read_metrics

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide" / "your-own.md"
SECTION = "## Adding your own model"
SMALL_WIDE = ("depth=10", "arch.widen=1")  # the README's net, small enough for many runs on a CPU


def guide_example(heading: str) -> tuple[dict[str, str], list[str] | None]:
    """The files (path -> text: a python or yaml block whose first line is `# PATH`) and the first bash command
    of the guide's section under `heading`, as a user copies them."""
    text = GUIDE.read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)]
    files, command = {}, None
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", section, re.DOTALL):
        first, _, rest = body.partition("\n")
        if lang in ("python", "yaml") and first.startswith("# "):
            files[first[2:].strip()] = rest if lang == "python" else body
        elif lang == "bash" and command is None:
            command = shlex.split(body.strip())
    return files, command


def readme_example() -> tuple[dict[str, str], list[str]]:
    """The files (path -> text) and the command of the guide's section, as a user copies them."""
    files, command = guide_example(SECTION)
    assert set(files) == {"my_nets.py", "my_conf/arch/wide.yaml"} and command[:3] == ["python", "-m",
                                                                                      "resnet_cifar.train"]
    return files, command[3:]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A folder outside the repository holding the README's my_nets.py and my_conf/ and nothing else."""
    folder = tmp_path_factory.mktemp("my_project")
    assert REPO not in folder.parents
    files, _ = readme_example()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    return folder


def user_train(*overrides, folder, env=None):
    """`python -m resnet_cifar.train OVERRIDES` run from the user's folder (whose modules it imports)."""
    return run_train(*overrides, cwd=folder, env=env)


@pytest.mark.slow
def test_the_readmes_own_model_trains_from_a_folder_outside_the_repository(user_folder, tiny_cifar10):
    """The command exactly as the README writes it (plus a budget for a CPU and the test's data)."""
    _, command = readme_example()
    run_dir = user_folder / "readme_run"
    result = user_train(*command, "data.batch_size=16", "trainer.max_iters=2", "trainer.eval_every=2",
                        "trainer.checkpoint_every=2", "schedule.milestones=[1]", "trainer.eval_batch_size=100",
                        f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}", folder=user_folder)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["arch"] == {
        "_target_": "my_nets.WideResNet", "widen": 4, "name": "wide"}
    assert summary["params"] == 5_849_050  # WRN-28-4 (the wide ResNet paper: 5.8M)


def wide_job(sweep_dir: Path, depth: int) -> Path:
    return next(p for p in sweep_dir.iterdir() if "arch=wide" in p.name and f"depth={depth}," in p.name)


@pytest.fixture(scope="module")
def user_sweep(user_folder, tiny_cifar10):
    """The user's net over two depths (its own rule: 6n+4), and the paper's ResNet into the same sweep folder."""
    sweep_dir = user_folder / "multirun" / "mine"
    for grid in (("--config-dir", "my_conf", "arch=wide", "depth=10,16", "arch.widen=1"), ("arch=resnet", "depth=8")):
        result = user_train("-m", *grid, *TINY_BUDGET[1:], f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep_dir}",
                            folder=user_folder)
        assert result.returncode == 0, result.stderr
    return sweep_dir


@pytest.mark.slow
def test_a_grid_the_users_net_refuses_is_refused_before_any_job(user_folder, tiny_cifar10):
    """Its depth rule is its own: a grid that asks it for 6n+2 depths fails in one line before any job."""
    result = user_train("-m", "--config-dir", "my_conf", "arch=wide", "depth=10,14", *TINY_BUDGET[1:],
                        f"data.root={tiny_cifar10}", "hydra.sweep.dir=refused", folder=user_folder)
    assert result.returncode == 2
    assert "job depth=14: arch=wide (" in result.stderr and "my_nets.WideResNet(depth=14, num_classes=10, widen=4) " \
        "failed: ValueError: depth=14: a wide ResNet has depth 6n+4" in result.stderr
    assert not (user_folder / "refused").exists()


@pytest.mark.slow
def test_the_users_net_sweeps_resumes_and_reports_like_a_built_in(user_sweep, user_folder, tiny_cifar10, tmp_path):
    wide = wide_job(user_sweep, 10)
    uninterrupted = read_metrics(wide)
    # resumes: the same job killed after iteration 5 and run again ends with the uninterrupted metrics
    run_dir = user_folder / "killed"
    args = ("--config-dir", "my_conf", "arch=wide", *SMALL_WIDE, *TINY_BUDGET[1:], f"data.root={tiny_cifar10}",
            f"hydra.run.dir={run_dir}")
    killed = user_train(*args, folder=user_folder, env={KILL_AT_ITERATION_ENV: "5"})
    assert killed.returncode < 0
    resumed = user_train(*args, folder=user_folder)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    assert numbers(read_metrics(run_dir)) == numbers(uninterrupted)
    # reports: its own rows and Figure 6 panel; Figure 7 leaves it out, saying why: its module is not trusted
    # (a run folder is data), and once it is, the net does not say which layers are its responses
    out = tmp_path / "report"
    result = subprocess.run(cli("multirun_analysis.report", str(user_sweep), "--out", str(out)),
                            cwd=user_folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Figure 7 leaves out arch=wide (2 runs): it cannot be loaded here: " in result.stdout
    assert "names arch._target_: my_nets.WideResNet, which is not one of this package's arch plug-ins" in \
        result.stdout
    result = subprocess.run(cli("multirun_analysis.report", str(user_sweep), "--out", str(out), "--trust-code",
                                "my_nets"), cwd=user_folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["arch.name"]) == ["resnet", "wide", "wide"]
    table = (out / "table.md").read_text()
    assert "| 8 | resnet |" in table and "| 10 | wide |" in table and "| 16 | wide |" in table
    assert "Figure 7 leaves out arch=wide (2 runs): WideResNet has no response_layers() method" in result.stdout
    assert set(pd.read_csv(out / "responses.csv")["arch"]) == {"resnet"}
    from multirun_analysis.collect import collect
    from multirun_analysis.plots import figure6_panels

    assert figure6_panels(collect([user_sweep]).runs) == ["resnet", "wide"]


@pytest.mark.slow
def test_the_users_net_evaluates_and_loads_as_a_built_in(user_sweep, user_folder, monkeypatch):
    wide = wide_job(user_sweep, 16)
    recorded = json.loads((wide / "summary.json").read_text())["test_error"]
    result = subprocess.run(cli("resnet_cifar.evaluate", str(wide), "--out", str(user_folder / "evaluation")),
                            cwd=user_folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--trust-code my_nets" in result.stderr, result.stderr  # a folder is data
    result = subprocess.run(cli("resnet_cifar.evaluate", str(wide), "--out", str(user_folder / "evaluation"),
                                "--trust-code", "my_nets"), cwd=user_folder, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"test error {recorded:.2f}%" in result.stdout and f"the run recorded {recorded:.2f}%" in result.stdout
    monkeypatch.syspath_prepend(str(user_folder))  # my_nets importable, as from the user's folder
    from resnet_cifar import load_run

    run = load_run(wide, trust_code=["my_nets"])
    assert type(run.model).__name__ == "WideResNet"
    hub = torch.hub.load(str(REPO), "from_run", source="local", run_dir=str(wide), trust_code="my_nets")
    images, labels = run.test_set()
    with torch.no_grad():
        error = 100.0 * float((hub.model(hub.normalize(images)).argmax(1) != labels).sum()) / len(labels)
    assert error == pytest.approx(recorded)


# -- every plug-in is checked before anything runs -------------------------------------------------------------

@pytest.mark.slow
def test_a_plugin_that_cannot_be_used_is_one_line_exit_2_and_no_folder(user_folder, tiny_cifar10, tmp_path):
    """Through the command once: a YAML of the user's whose _target_ does not import."""
    broken = user_folder / "broken_conf" / "arch"
    broken.mkdir(parents=True)
    (broken / "gone.yaml").write_text("_target_: my_nets_v2.WideResNet\n")
    result = user_train("--config-dir", "broken_conf", "arch=gone", f"data.root={tiny_cifar10}", folder=user_folder)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: arch=gone ({broken / 'gone.yaml'}): _target_: my_nets_v2.WideResNet cannot be "
                     "imported (ModuleNotFoundError: No module named 'my_nets_v2'); is its module on PYTHONPATH "
                     "(run from the folder that holds it)?"]
    assert not (user_folder / "outputs").exists()


class NotAModule:
    def __init__(self, depth, num_classes):
        pass


class WrongOutput(torch.nn.Module):
    def __init__(self, depth, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, num_classes + 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


class FailsForward(torch.nn.Module):
    def __init__(self, depth, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(10, num_classes)

    def forward(self, x):
        return self.fc(x)


class Shapeless(torch.nn.Module):
    """A normalization without fit()."""


def checked(*overrides, sources=()):
    spec = composed_spec(*overrides)
    validate(spec.config)
    check_plugins(spec.config, sources)


@pytest.mark.parametrize("overrides,message", [
    (["arch._target_=test_plugins.NotAModule"], "arch=resnet: test_plugins.NotAModule returned a NotAModule, not an "
                                                "nn.Module"),
    (["arch._target_=test_plugins.WrongOutput"], "maps a batch of 3 images to (3, 11) in forward pass 1 (train "
                                                 "mode), not to (3, 10) (one score per class of cifar10)"),
    (["arch._target_=test_plugins.FailsForward"], "the net of test_plugins.FailsForward (depth=20) fails forward "
                                                  "pass 1 in train mode on a batch of 3 CIFAR images (3, 3, 32, 32): "
                                                  "RuntimeError"),
    (["+arch.widen=4"], "arch=resnet: key widen is not accepted by resnet_cifar.models.resnet.cifar_resnet (it takes "
                        "depth, shortcut, num_classes)"),
    (["+arch.depth=20"], "arch=resnet: key depth is the run's to give (depth=20), not arch's: remove arch.depth"),
    (["logger=tensorboard", "+logger.run_dir=elsewhere"], "logger=tensorboard: key run_dir is the run's to give"),
    (["optimizer=adamw", "depth=110"], "schedule.warmup.lr=0.01 is not allowed with optimizer.lr=0.001: a depth-110 "
                                       "net warms up"),
    (["depth=21"], "arch=resnet: depth=21 is not allowed: depth must be 6n+2"),
    (["arch=preact", "arch.bottleneck=true", "depth=1000"], "arch=preact: depth=1000 is not allowed: depth must be "
                                                            "9n+2"),
    (["arch=plain", "shortcut=C"], "arch=plain: shortcut=C has no meaning for arch=plain"),
    (["normalization._target_=test_plugins.Shapeless"], "normalization=per_pixel_mean: test_plugins.Shapeless made a "
                                                        "Shapeless: a normalization is an nn.Module with a fit("),
    (["normalization=imagenet", "normalization.std=[0.2,0.2]"], "normalization=imagenet: resnet_cifar.data."
                                                                "normalization.FixedMeanStd("),
    (["optimizer._target_=torch.nn.Linear"], "optimizer=sgd: torch.nn.Linear is not an optimizer class"),
    (["+optimizer.momentun=0.9"], "optimizer=sgd: key momentun is not accepted by torch.optim.SGD"),
    (["+optimizer.milestones=[1,2]"], "optimizer.milestones is schedule.milestones now"),
    (["optimizer=adamw", "trainer.cuda_graph=true"], "optimizer=adamw: trainer.cuda_graph=true is not allowed with "
                                                     "torch.optim.AdamW"),
    (["logger=mlflow", "+logger.uri=x"], "logger=mlflow: key uri is not accepted by resnet_cifar.trackers.mlflow."
                                         "MLflowTracker"),
])
def test_each_plugin_refusal_names_the_option_and_the_key(overrides, message):
    with pytest.raises(ConfigError) as refused:
        checked(*overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("group,node", [("logger", {"project": "demo"}), ("optimizer", {"target": "torch.optim.Adam",
                                                                                        "lr": 0.001})])
def test_a_yaml_of_todays_that_names_no_callable_is_refused_never_taken_for_a_built_in(group, node):
    """Only a run folder from before plug-ins gets its node read as a built-in (config.upgrade): a YAML of
    today without _target_ (or with a typo in it) is an error naming it, not a silent csv logger or SGD."""
    from resnet_cifar.config import typed
    from resnet_cifar.run_spec import named_run_config

    spec = composed_spec()
    config = named_run_config({**spec.recorded, group: node}, {group: "mine"})
    assert config[group] == {**node, "name": "mine"}
    with pytest.raises(ConfigError, match=rf"^{group}=mine: it names no callable: the YAML needs _target_:"):
        check_plugins(typed(config))


def test_torchrun_processes_agree_on_a_folder_composed_with_the_users_config_dir(user_folder, monkeypatch):
    """Under torchrun the first process composes the run folder before Hydra runs: with --config-dir the
    user's options are found (before, the flag's value was taken for an override and ranks > 0 exited)."""
    from resnet_cifar.torchrun import configured_run_dir, overrides_and_config_dirs

    args = ["--config-dir", "my_conf", "arch=wide", "depth=28", "hydra.run.dir=runs/${arch.widen}"]
    assert overrides_and_config_dirs(args) == (["arch=wide", "depth=28", "hydra.run.dir=runs/${arch.widen}"],
                                               ["my_conf"])
    monkeypatch.chdir(user_folder)
    assert configured_run_dir(args) == "runs/4"  # the user's arch/wide.yaml was composed
    with pytest.raises(Exception, match="Could not find 'arch/wide'"):
        configured_run_dir(args[2:])


def test_preacts_model_file_is_a_plugin_like_any_users(tmp_path, monkeypatch):
    """The same file, copied out of the package as a user's module and named by a YAML of theirs, builds the
    same net, weight for weight: it needs nothing from the package but its public pieces."""
    (tmp_path / "my_preact.py").write_text((REPO / "resnet_cifar" / "models" / "preact.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    from resnet_cifar.config import typed
    from resnet_cifar.models import build_model

    spec = composed_spec("arch=preact", "arch.bottleneck=true", "depth=164", "shortcut=B")
    users = typed({**spec.recorded, "arch": {**spec.recorded["arch"], "_target_": "my_preact.preact_resnet"}})
    check_plugins(users)
    torch.manual_seed(0)
    ours = build_model(spec.config, 10).state_dict()
    torch.manual_seed(0)
    theirs = build_model(users, 10).state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_refusal_names_the_yaml_file_the_option_came_from():
    from resnet_cifar.plugins import option_file

    sources = (ConfigSource("file", str(REPO / "tests")), ConfigSource("pkg", "resnet_cifar.conf"))
    assert option_file("arch", "plain", sources) == "conf/arch/plain.yaml"
    with pytest.raises(ConfigError, match=r"^arch=plain \(conf/arch/plain.yaml\): shortcut=B has no meaning"):
        checked("arch=plain", "shortcut=B", sources=sources)


# -- normalization, optimizer, tracker ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_whitening_normalization_is_fitted_once_and_reproduced_by_resume_and_evaluate(tiny_cifar10, tmp_path):
    """normalization=zca (not a mean and a std): the run keeps its fitted state; killed and resumed it ends
    with the uninterrupted run's metrics, and evaluate gives its test error to the digit."""
    args = [*TINY_BUDGET, "normalization=zca", f"data.root={tiny_cifar10}"]
    whole = train_in_process(*args, run_dir=tmp_path / "whole")
    assert whole["status"] == "completed" and (tmp_path / "whole" / "normalization.pt").is_file()
    run_dir = tmp_path / "killed"
    assert run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={KILL_AT_ITERATION_ENV: "5"}).returncode < 0
    train_in_process(*args, run_dir=run_dir)
    assert numbers(read_metrics(run_dir)) == numbers(read_metrics(tmp_path / "whole"))
    from resnet_cifar.evaluate import evaluate_run
    from resnet_cifar.saved_run import load_run

    run = load_run(run_dir)
    saved = torch.load(run_dir / "normalization.pt", weights_only=True)
    assert torch.equal(run.normalize.normalization.whitening, saved["whitening"])
    assert evaluate_run(run)["test_error"] == whole["test_error"]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [("optimizer=adamw",), ("optimizer._target_=torch.optim.RMSprop",
                                                               "optimizer.lr=0.001")])
def test_any_torch_optimizer_trains_with_the_runs_schedule(tiny_cifar10, tmp_path, optimizer):
    summary = train_in_process(*TINY_BUDGET, *optimizer, f"data.root={tiny_cifar10}", run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    base = summary["config"]["optimizer"]["lr"]
    lrs = [float(r["lr"]) for r in read_metrics(tmp_path / "run")]  # milestones 6 and 9 of 12, gamma 0.1
    assert lrs == pytest.approx([base, base / 10, base / 100])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["optimizer"]
    assert ("exp_avg" in next(iter(state["state"].values()))) == (optimizer == ("optimizer=adamw",))


def mlflow_runs(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    return {run.info.run_name: (run, {m: [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, m)]
                                      for m in ("test_error", "lr")}) for run in runs}


@pytest.mark.slow
def test_mlflow_holds_each_job_of_a_sweep_and_a_resumed_run_once(tiny_cifar10, tmp_path, monkeypatch):
    """logger=mlflow with the real package and a local store (no server): each job one run named by its
    folder, in one experiment named by the sweep's folder, its config as params, every row as metrics; a
    run killed and resumed has each step once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    sweep_dir = tmp_path / "multirun" / "mine"
    result = run_train("-m", *TINY_BUDGET, "seed=0,1", "logger=mlflow", f"data.root={tiny_cifar10}",
                       f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    runs = mlflow_runs(uri, "multirun/mine")
    jobs = {p.name: p for p in sweep_dir.iterdir() if p.is_dir()}
    assert set(runs) == set(jobs) and len(jobs) == 2
    seed0 = next(name for name in jobs if ",seed=0," in name)
    run, metrics = runs[seed0]
    assert run.info.status == "FINISHED" and run.data.params["arch.name"] == "resnet"
    assert run.data.params["schedule.milestones"] == "[6, 9]" and run.data.params["seed"] == "0"
    rows = read_metrics(jobs[seed0])
    assert metrics["test_error"] == [(int(r["iteration"]), float(r["test_error"])) for r in rows]

    run_dir = tmp_path / "single" / "run"
    args = [*TINY_BUDGET, "trainer.eval_every=2", "logger=mlflow", f"data.root={tiny_cifar10}"]
    killed = run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={**env, KILL_AT_ITERATION_ENV: "7"})
    assert killed.returncode < 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert train_in_process(*args, run_dir=run_dir)["status"] == "completed"  # resumed
    (run, metrics), = mlflow_runs(uri, "single").values()
    assert run.info.status == "FINISHED"
    assert [step for step, _ in metrics["test_error"]] == [2, 4, 6, 8, 10, 12]  # once each
    assert [value for _, value in metrics["test_error"]] == pytest.approx(
        [float(r["test_error"]) for r in read_metrics(run_dir)])


# -- a search minimizes the held-out error, never the test error -----------------------------------------------

def test_an_optuna_search_on_the_test_set_is_refused_before_any_trial(tiny_cifar10, tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_train("-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.01,0.3)", "hydra.sweeper.n_trials=2",
                       *TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: hydra/sweeper=optuna with data.val_size=0 is not allowed: it minimizes the final "
                     "val_error, and without held-out images it would tune on the test set; set data.val_size=5000 "
                     "(the paper's 45k/5k split)"]
    assert not sweep_dir.exists()


@pytest.mark.slow
def test_an_optuna_search_minimizes_the_validation_error_in_ordinary_run_folders(tiny_cifar10, tmp_path):
    """Each trial a DDP job of two processes: its objective is read from what its workers recorded."""
    sweep_dir = tmp_path / "search"
    result = run_train("-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.01,0.3)", "hydra.sweeper.n_trials=2",
                       "hydra.sweeper.sampler.seed=0", "data.val_size=20", "trainer.nproc_per_node=2", *TINY_BUDGET,
                       f"data.root={tiny_cifar10}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    assert "\x1b" not in result.stderr and "alembic" not in result.stderr  # no colour codes, no library chatter
    import yaml

    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(s["val_error"] for s in summaries)
    from multirun_analysis.report import report

    account = report([sweep_dir], tmp_path / "report")
    assert "read 2 runs (2 completed)" in account
    header = (tmp_path / "report" / "table.md").read_text().splitlines()[0]
    assert "optimizer.lr" in header and "held-out error % (mean)" in header  # the objective it tuned, beside test


# -- the shape of the package ---------------------------------------------------------------------------------

def test_adding_preact_touched_no_file_of_the_package_but_its_own():
    """The proof of the seam: the package's code and config name `preact` only in its model file and YAML (and
    the preset and published numbers that are about it, which are data)."""
    own = {"resnet_cifar/models/preact.py", "conf/arch/preact.yaml", "conf/experiment/preact.yaml",
           "multirun_analysis/references.csv"}
    mentions = {str(p.relative_to(REPO)) for root in ("resnet_cifar", "multirun_analysis", "conf")
                for p in (REPO / root).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and "preact" in p.read_text(errors="ignore").lower()}
    mentions |= {"hubconf.py"} if "preact" in (REPO / "hubconf.py").read_text().lower() else set()
    assert mentions == own


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (anywhere in it, lazy imports included)."""
    import ast

    root = REPO / package
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        is_package = parts[-1] == "__init__"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[:len(name.split(".")) - node.level + (1 if is_package else 0)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if node.module:  # `from . import x` imports x, not the package's __init__ as a dependency
                    imported.add(target)
                imported.update(f"{target}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = imported
    return {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}


@pytest.mark.parametrize("package", ["resnet_cifar", "multirun_analysis"])
def test_no_module_imports_one_that_imports_it_back(package):
    graph = import_graph(package)
    assert len(graph) > 5
    for module in graph:
        seen, todo = set(), list(graph[module])
        while todo:
            current = todo.pop()
            assert current != module, f"import cycle through {module}"
            if current not in seen:
                seen.add(current)
                todo.extend(graph.get(current, ()))


@pytest.mark.slow
def test_the_run_folder_contract_and_the_reports_reader_need_no_torch():
    code = ("import sys; import resnet_cifar.contract, multirun_analysis.collect, multirun_analysis.table; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


# -- an augmentation of the user's own --------------------------------------------------------------------------

AUGMENT_SECTION = "## Your own augmentation"


def augment_example() -> tuple[dict[str, str], list[str]]:
    """The files and the command of the guide's augmentation section, as a user copies them."""
    files, command = guide_example(AUGMENT_SECTION)
    assert set(files) == {"my_augment.py", "my_conf/augment/cutout.yaml"}, files
    return files, command[3:]


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["device", "torchvision"])
def test_the_guides_own_augmentation_trains_killed_and_resumed_to_the_uninterrupted_metrics(tiny_cifar10, tmp_path,
                                                                                           pipeline):
    files, command = augment_example()
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    args = [*command, *TINY_BUDGET, f"data.pipeline={pipeline}", "data.workers=0", f"data.root={tiny_cifar10}"]
    straight = user_train(*args, f"hydra.run.dir={tmp_path / 'straight'}", folder=tmp_path)
    assert straight.returncode == 0, straight.stderr
    assert json.loads((tmp_path / "straight" / "summary.json").read_text())["config"]["augment"] == {
        "_target_": "my_augment.Cutout", "size": 8, "name": "cutout"}
    killed = user_train(*args, f"hydra.run.dir={tmp_path / 'killed'}", folder=tmp_path,
                        env={KILL_AT_ITERATION_ENV: "5"})
    assert killed.returncode < 0
    resumed = user_train(*args, f"hydra.run.dir={tmp_path / 'killed'}", folder=tmp_path)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    assert numbers(read_metrics(tmp_path / "killed")) == numbers(read_metrics(tmp_path / "straight"))
    plain = user_train(*[a for a in args if a != "augment=cutout"], "augment=random",
                       f"hydra.run.dir={tmp_path / 'plain'}", folder=tmp_path)
    assert plain.returncode == 0
    assert numbers(read_metrics(tmp_path / "plain")) != numbers(read_metrics(tmp_path / "straight"))  # it is used


def test_an_augmentation_that_cannot_be_used_is_refused_naming_it(tmp_path, monkeypatch):
    (tmp_path / "bad_augment.py").write_text(
        "import torch\n"
        "class Shrinks:\n    once = False\n    def __call__(self, images, generator):\n        return images[:, :16]\n"
        "class Unseeded:\n    once = False\n"
        "    def __call__(self, images, generator):\n        return torch.randint_like(images, 0, 255)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"augment=none: bad_augment.Shrinks maps 3 images \(3, 32, 32, 3\) "
                                          r"uint8 to \(\(3, 16, 32, 3\)"):
        checked("augment=none", "augment._target_=bad_augment.Shrinks")
    with pytest.raises(ConfigError, match="gives other images for the same generator state"):
        checked("augment=none", "augment._target_=bad_augment.Unseeded")
