"""Training end to end on tiny data written by the tests: the command in a real process where its exit
status and files are the point, the same training in this process (train_in_process) where they are not."""
import csv
import json
import subprocess
import sys

import pytest
import torch

from conftest import SHARED_DATA, TINY_BUDGET, run_train, train_in_process
from resnet_cifar.contract import METRIC_COLUMNS
from resnet_cifar.models import count_parameters
from resnet_cifar.models.resnet import cifar_resnet

TIMING_COLUMNS = {"elapsed_s", "images_per_s"}


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def numbers(rows):
    """The rows without wall-clock columns, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def train_ok(*overrides, cwd, env=None):
    result = run_train(*overrides, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_tiny_run_writes_the_whole_run_folder(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(*TINY_BUDGET, f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}", "data.val_size=20",
             cwd=tmp_path)
    for name in ("metrics.csv", "summary.json", "checkpoint.pt", "model.pt", "normalization.pt", "train.log",
                 ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (run_dir / name).is_file(), name
    rows = read_metrics(run_dir)
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["iteration"]) for r in rows] == [4, 8, 12]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.01, 0.001])
    assert all(r["val_error"] != "" and 0 <= float(r["test_error"]) <= 100 for r in rows)
    assert float(rows[0]["epoch"]) == pytest.approx(4 / (300 // 32), abs=1e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iteration"] == 12
    assert summary["test_error"] == float(rows[-1]["test_error"])
    model = cifar_resnet(8, "A", 10)
    assert summary["params"] == count_parameters(model)
    model.load_state_dict(torch.load(run_dir / "model.pt"))  # plain keys, strict
    assert summary["versions"]["torch"] and summary["device"] == "cpu"
    assert summary["cuda_graph"] is False  # the default captures only on a GPU
    assert "iter 12/12" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_the_loss_falls_on_a_learnable_set(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process("depth=8", "data.batch_size=32", "trainer.max_iters=60", "trainer.eval_every=10",
                     "trainer.checkpoint_every=60", "schedule.milestones=[40]", f"data.root={tiny_cifar10}",
                     run_dir=run_dir)
    rows = read_metrics(run_dir)
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert float(rows[-1]["test_error"]) < 30.0  # chance is 90%


@pytest.mark.slow
def test_bf16_autocast_learns_too(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process("depth=8", "data.batch_size=32", "trainer.max_iters=60", "trainer.eval_every=30",
                     "trainer.checkpoint_every=60", "schedule.milestones=[40]", "trainer.precision=bf16",
                     f"data.root={tiny_cifar10}", run_dir=run_dir)
    rows = read_metrics(run_dir)
    assert float(rows[-1]["test_error"]) < 30.0
    # the weights stay fp32: the model loads into an fp32 net as it is
    state = torch.load(run_dir / "model.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


@pytest.mark.slow
def test_the_warm_up_of_deep_nets_runs_at_its_lr_until_the_training_error_drops(tiny_cifar10, tmp_path):
    """The paper's warm-up for ResNet-110/1202, on a depth-8 net by lowering its threshold depth: lr 0.01
    while the running training error over the window is above 80%, then back to 0.1."""
    run_dir = tmp_path / "run"
    summary = train_in_process("depth=8", "data.batch_size=32", "trainer.max_iters=40", "trainer.eval_every=5",
                               "trainer.checkpoint_every=40", "schedule.milestones=[35]",
                               "schedule.warmup.min_depth=8", "schedule.warmup.window=5",
                               f"data.root={tiny_cifar10}", run_dir=run_dir)
    ended = summary["warmup_ended_at"]
    assert ended is not None and ended % 5 == 0 and 5 <= ended < 35, ended  # at the end of a window
    lrs = {int(r["iteration"]): float(r["lr"]) for r in read_metrics(run_dir)}
    # a row's lr is the lr of its last step: iteration `ended`'s step still ran at the warm-up lr
    assert all(lr == 0.01 for it, lr in lrs.items() if it <= ended)
    assert all(lr == 0.1 for it, lr in lrs.items() if ended < it <= 35) and lrs[40] == pytest.approx(0.01)
    # a net below the threshold depth (the default: 110) never warms up
    plain = train_in_process("depth=8", "data.batch_size=32", "trainer.max_iters=5", "trainer.eval_every=2",
                             "trainer.checkpoint_every=5", "schedule.milestones=[4]", f"data.root={tiny_cifar10}",
                             run_dir=tmp_path / "plain")
    assert plain["warmup_ended_at"] is None and float(read_metrics(tmp_path / "plain")[0]["lr"]) == 0.1


@pytest.mark.slow
def test_compiled_training_step_computes_what_the_eager_one_does(tiny_cifar10, tmp_path):
    """trainer.compile changes how the step runs, not what it computes (CPU inductor here)."""
    budget = ["depth=8", "data.batch_size=32", "trainer.max_iters=4", "trainer.eval_every=2",
              "trainer.checkpoint_every=4", "schedule.milestones=[3]", f"data.root={tiny_cifar10}"]
    train_in_process(*budget, run_dir=tmp_path / "eager")
    train_in_process(*budget, "trainer.compile=true", run_dir=tmp_path / "compiled")
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 2
    for a, b in zip(eager, compiled):
        for key in ("train_loss", "test_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-3), key
    # the run folder holds plain keys, loadable into an uncompiled net
    assert not any(k.startswith("_orig_mod") for k in torch.load(tmp_path / "compiled" / "model.pt"))


@pytest.mark.slow
def test_a_completed_run_is_not_run_again(tiny_cifar10, tmp_path, caplog):
    run_dir = tmp_path / "run"
    args = [*TINY_BUDGET, f"data.root={tiny_cifar10}"]
    train_in_process(*args, run_dir=run_dir)
    before = (run_dir / "metrics.csv").read_bytes(), (run_dir / "checkpoint.pt").stat().st_mtime_ns
    caplog.set_level("INFO")
    train_in_process(*args, run_dir=run_dir)
    assert "is already completed" in caplog.text
    assert before == ((run_dir / "metrics.csv").read_bytes(), (run_dir / "checkpoint.pt").stat().st_mtime_ns)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "make_cifar10.py").exists(), reason="needs ../shared/data")
def test_real_cifar10_copy_learns_well_above_chance(tmp_path):
    subprocess.run([sys.executable, str(SHARED_DATA / "make_cifar10.py"), str(tmp_path / "data"),
                    "--train", "5000", "--test", "1000"], check=True, capture_output=True)
    summary = train_in_process("depth=8", "data.batch_size=64", "trainer.max_iters=120", "trainer.eval_every=120",
                               "trainer.checkpoint_every=120", "schedule.milestones=[100]",
                               f"data.root={tmp_path / 'data'}", run_dir=tmp_path / "run")
    assert summary["status"] == "completed"
    # chance: 90%; 65.8% measured on the 2-core Xeon (64.0% with seed=1; 60.8% at batch 128, in twice the time)
    assert summary["test_error"] < 70.0, summary
