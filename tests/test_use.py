"""Using what was trained: evaluate a run (to the recorded digit), load it from Python and torch.hub, watch
runs live in TensorBoard, and what summary.json says of the code and the command."""
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import KILL_AT_ITERATION_ENV, TINY_BUDGET, cli, run_train, train_in_process
from resnet_cifar import load_run
from resnet_cifar.errors import ConfigError
from resnet_cifar.evaluate import main as evaluate
from test_train import read_metrics

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tiny_cifar10, tmp_path_factory):
    """A normal run and a run with a held-out split (a DDP run is evaluated in tests/test_ddp.py)."""
    root = tmp_path_factory.mktemp("use")
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=root / "normal")
    train_in_process(*TINY_BUDGET, "data.val_size=20", "normalization=channel_stats", f"data.root={tiny_cifar10}",
                     run_dir=root / "val_size")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("run", ["normal", "val_size"])
def test_evaluate_gives_the_recorded_test_error_to_the_last_digit(trained, tmp_path, run, capsys):
    out, numbers = tmp_path / "out", tmp_path / "eval.json"
    assert evaluate([str(trained / run), "--out", str(out), "--json", str(numbers)]) == 0
    [result] = json.loads(numbers.read_text())
    recorded = json.loads((trained / run / "summary.json").read_text())
    assert result["test_error"] == recorded["test_error"] and result["images"] == 100
    assert result["test_loss"] == pytest.approx(recorded["test_loss"], abs=1e-5)
    assert f"test error {recorded['test_error']:.2f}%" in capsys.readouterr().out
    per_class = pd.read_csv(next(out.glob("*.per_class.csv")))
    assert list(per_class["class"]) == [f"class{c}" for c in range(10)]  # from batches.meta
    confusion = result["confusion"]
    assert sum(map(sum, confusion)) == 100
    wrong = 100 - sum(confusion[i][i] for i in range(10))
    assert wrong == pytest.approx(result["test_error"])  # 100 test images: one image is one percent
    assert next(out.glob("*.confusion.png")).stat().st_size > 10_000
    assert {p.name for p in out.iterdir()} == {f"{run}.per_class.csv", f"{run}.confusion.png"}  # its own name


def test_evaluate_names_each_runs_files_by_its_folder_and_keeps_them_apart(trained, tmp_path):
    """Two sweeps' jobs of the same name: their files do not overwrite each other."""
    for sweep in ("a", "b"):
        shutil.copytree(trained / "normal", tmp_path / sweep / "arch=resnet,depth=8")
    out = tmp_path / "out"
    assert evaluate([str(tmp_path / "a" / "arch=resnet,depth=8"), str(tmp_path / "b" / "arch=resnet,depth=8"),
                     "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.per_class.csv"))
    assert len(names) == 2 and names[0] == "arch=resnet,depth=8.per_class.csv" and all(len(n) < 100 for n in names)


@pytest.mark.slow
def test_a_run_without_its_model_is_evaluated_from_its_checkpoint_when_asked(trained, tmp_path, capsys):
    run = tmp_path / "unfinished"
    shutil.copytree(trained / "normal", run)
    (run / "model.pt").unlink()
    assert evaluate([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "has no model.pt: the run has not completed" in capsys.readouterr().err
    assert evaluate([str(run), "--checkpoint", "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    recorded = json.loads((run / "summary.json").read_text())["test_error"]
    assert f"test error {recorded:.2f}%" in said and "checkpoint.pt at iteration 12" in said


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path):
    """Through the command: a folder that is not a run; data that is not there."""
    (tmp_path / "empty").mkdir()
    for args, message in (([str(tmp_path / "empty")], "is not a run folder"),
                          ([str(trained / "normal"), "--data", str(tmp_path / "nowhere")], "cifar10 not found")):
        result = subprocess.run(cli("resnet_cifar.evaluate", *args, "--out", str(tmp_path / "o")),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_load_run_and_torch_hub_give_the_trained_net_and_its_inputs(trained, tiny_cifar10):
    run = load_run(trained / "val_size")
    assert not run.model.training and run.config.data.val_size == 20 and run.recorded["normalization"]["name"] == "channel_stats"
    images, labels = run.test_set()
    with torch.no_grad():
        error = 100.0 * float((run.model(run.normalize(images)).argmax(1) != labels).sum()) / len(labels)
    assert round(error, 4) == json.loads((trained / "val_size" / "summary.json").read_text())["test_error"]
    hub = torch.hub.load(str(REPO), "from_run", source="local", run_dir=str(trained / "val_size"))
    for a, b in zip(hub.model.state_dict().values(), run.model.state_dict().values()):
        assert torch.equal(a, b)
    fresh = torch.hub.load(str(REPO), "cifar_resnet", source="local", depth=56)
    assert sum(p.numel() for p in fresh.parameters()) == 853_018  # the paper's 0.85M


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_shows_each_job_of_a_sweep_and_a_resumed_run_once(tiny_cifar10, tmp_path):
    from test_sweep import sweep

    sweep_dir = tmp_path / "sweep"
    result = sweep("depth=8", "seed=0,1", "logger=tensorboard", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.parent.parent.name for p in sweep_dir.glob("*/tensorboard/events.out.tfevents.*"))
    assert len(jobs) == 2 and all("seed=" in job for job in jobs)  # named by their overrides under --logdir
    scalars = tensorboard_scalars(next(sweep_dir.glob("*seed=0*")))
    assert set(scalars) == {"error/test", "error/train", "loss/test", "loss/train", "lr", "speed/images_per_s"}

    # killed after iteration 7 (rows 2, 4, 6 written; checkpoint at 4), then resumed: row 6 written again
    run_dir = tmp_path / "run"
    args = [*TINY_BUDGET, "trainer.eval_every=2", "logger=tensorboard", f"data.root={tiny_cifar10}"]
    killed = run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={KILL_AT_ITERATION_ENV: "7"})
    assert killed.returncode < 0
    assert [step for step, _ in tensorboard_scalars(run_dir)["error/test"]] == [2, 4, 6]
    train_in_process(*args, run_dir=run_dir)
    metrics = read_metrics(run_dir)
    test_error = tensorboard_scalars(run_dir)["error/test"]
    assert [step for step, _ in test_error] == [2, 4, 6, 8, 10, 12]  # once each, in order
    assert [value for _, value in test_error] == pytest.approx([float(r["test_error"]) for r in metrics])


def test_tensorboard_asked_for_and_not_installed_is_refused_before_the_run(tiny_cifar10, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ConfigError, match=r"logger=tensorboard: the tensorboard package is not installed; "
                                          r"pip install -e \"\.\[tensorboard\]\""):
        train_in_process(*TINY_BUDGET, "logger=tensorboard", f"data.root={tiny_cifar10}", run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_summary_says_which_code_and_command_ran_and_the_bar_stays_off_the_log(tiny_cifar10, tmp_path):
    result = run_train(*TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "it/s" not in result.stderr and "\r" not in result.stderr  # not a terminal: log lines only
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert summary["source"]["commit"] == head and isinstance(summary["source"]["dirty"], bool)
    assert summary["command"] == shlex.join(["python", "-m", "resnet_cifar.train", *TINY_BUDGET,
                                             f"data.root={tiny_cifar10}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert summary["cuda"] is None  # on the CPU
    from multirun_analysis.report import main as report

    assert report([str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    assert pd.read_csv(tmp_path / "report" / "runs.csv")["commit"].tolist() == [head]


def test_a_resumed_writer_sorts_after_an_attempt_started_in_the_same_second(tmp_path):
    """TensorBoard reads event files in name order (events.out.tfevents.SECOND.HOST.PID...): a quick resume
    in the same second could sort first, and its purge came before the points it should remove (CI caught
    it: steps 6, 8, 10, 12, 2, 4, 6)."""
    import time

    from resnet_cifar.trackers.tensorboard import TensorBoardTracker

    folder = tmp_path / "tensorboard"
    folder.mkdir()
    earlier = folder / f"events.out.tfevents.{int(time.time())}.zzzz.1.0"  # sorts after this host's name
    earlier.write_bytes(b"")
    tracker = TensorBoardTracker(tmp_path, {}, resumed_at=4)
    tracker.close("completed")
    assert sorted(p.name for p in folder.iterdir())[-1] != earlier.name
