"""Checks that cannot be fooled and cannot exhaust the machine: a net too large is refused while it is built, a
net that works only for some batches is refused before the run, a normalization that fits NaN is never saved,
an Optuna search space is checked whole, a lock's holder is named as far as the kernel tells, and a refused
pickle never comes with the advice to unpickle it."""
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TINY_BUDGET, cli, composed_spec, run_train, train_env, train_in_process
from resnet_cifar.checks import check_plugins
from resnet_cifar.errors import ConfigError, UserError
from resnet_cifar.evaluate import main as evaluate
from resnet_cifar.filesystem import MachineLock

ODD_NETS = '''
import torch
from torch import nn


class PairsOnly(nn.Module):
    """Works for a batch of 2 only (the old check's batch)."""
    def __init__(self, depth, num_classes):
        super().__init__()
        self.fc = nn.Linear(2 * 3 * 32 * 32 // 2, num_classes)
    def forward(self, x):
        return self.fc(x.reshape(2, -1))


class Changes(nn.Module):
    """Right for its first two calls, then one score too many."""
    def __init__(self, depth, num_classes):
        super().__init__()
        self.fc, self.calls = nn.Linear(3 * 32 * 32, num_classes + 1), 0
    def forward(self, x):
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out if self.calls > 2 else out[:, :-1]


class BigBatchOnly(nn.Module):
    """Fails on the run's own batch of 32 only."""
    def __init__(self, depth, num_classes):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)
    def forward(self, x):
        if len(x) == 32:
            raise RuntimeError("out of shared memory for a batch of 32")
        return self.fc(x.flatten(1))
'''

NAN_NORMALIZATION = '''
import torch
from resnet_cifar.data.normalization import PerPixelMean


class Broken(PerPixelMean):
    def fit(self, train_images):
        super().fit(train_images)
        self.scale.fill_(float("nan"))
'''


def one_line_exit_2(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("error: ") == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_a_net_past_max_parameters_is_refused_while_it_is_built(tiny_cifar10, tmp_path):
    """preact-100004 (1.6 G parameters): the old check built it whole and the OOM killer ended it after 99 s."""
    run_dir = tmp_path / "run"
    result = run_train("arch=preact", "depth=100004", f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    one_line_exit_2(result, "arch=preact (conf/arch/preact.yaml): the net (depth=100004) has more than 100,000,000 "
                            "parameters and buffers (trainer.max_parameters): refused before it was built whole")
    assert not run_dir.exists()
    with pytest.raises(UserError, match="more than 300,000 parameters"):  # a limit the user sets
        check_plugins(composed_spec("depth=56", "trainer.max_parameters=300000").config)
    check_plugins(composed_spec("depth=56", "trainer.max_parameters=900000").config)  # 853,018 and buffers fit


@pytest.mark.slow
def test_a_received_folder_cannot_raise_its_own_limit(tiny_cifar10, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"].update(arch={"_target_": "resnet_cifar.models.preact.preact_resnet", "bottleneck": False,
                                   "name": "preact"}, depth=100004)
    summary["config"]["trainer"]["max_parameters"] = 10**12
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert evaluate([str(run_dir), "--out", str(tmp_path / "out")]) == 2
    assert "has more than 100,000,000 parameters and buffers" in capsys.readouterr().err
    assert evaluate([str(run_dir), "--out", str(tmp_path / "out"), "--max-parameters", "1000"]) == 2
    assert "has more than 1,000 parameters" in capsys.readouterr().err
    with pytest.raises(UserError, match="has more than 1,000 parameters"):  # through torch.hub too
        torch.hub.load(str(Path(__file__).resolve().parent.parent), "from_run", source="local", run_dir=str(run_dir),
                       max_parameters=1000)


@pytest.mark.parametrize("net, message", [
    ("PairsOnly", "fails forward pass 1 in train mode on a batch of 3 CIFAR images (3, 3, 32, 32): RuntimeError"),
    ("Changes", "maps a batch of 3 images to (3, 11) in forward pass 3 (train mode), not to (3, 10)"),
    ("BigBatchOnly", "fails forward pass 5 in train mode on a batch of 32 CIFAR images (32, 3, 32, 32): RuntimeError: "
                     "out of shared memory for a batch of 32"),
])
def test_a_net_that_works_only_for_some_batches_or_calls_is_refused_before_the_run(tmp_path, monkeypatch, net,
                                                                                    message):
    (tmp_path / "odd_nets.py").write_text(ODD_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = composed_spec(f"arch._target_=odd_nets.{net}", "data.batch_size=32")
    with pytest.raises(UserError, match="arch=resnet") as refused:
        check_plugins(spec.config)
    assert message in str(refused.value)


@pytest.mark.slow
def test_a_normalization_that_fits_nan_is_refused_and_never_saved(tiny_cifar10, tmp_path):
    (tmp_path / "nan_norm.py").write_text(NAN_NORMALIZATION)
    run_dir = tmp_path / "run"
    result = run_train(*TINY_BUDGET, "normalization._target_=nan_norm.Broken", f"data.root={tiny_cifar10}",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_exit_2(result, "normalization=per_pixel_mean: nan_norm.Broken"
                            ".fit() stored non-finite values (scale holds NaN or infinity) on the 320 training images:"
                            " nothing was saved")
    assert not run_dir.exists()
    (tmp_path / "nan_norm.py").write_text(NAN_NORMALIZATION.replace('self.scale.fill_(float("nan"))', "pass"))
    result = run_train(*TINY_BUDGET, "normalization._target_=nan_norm.Broken", f"data.root={tiny_cifar10}",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert torch.isfinite(torch.load(run_dir / "normalization.pt", weights_only=True)["scale"]).all()


SEARCH_PRESET = """# @package _global_
hydra:
  sweeper:
    params:
      optimizer.lr: interval(0.01,0.3)
      data.val_size: choice(0)
"""


def test_a_search_space_that_would_tune_on_the_test_set_is_refused_from_a_preset(tiny_cifar10, tmp_path):
    """The refusal read only the command line's overrides: a preset's params got past it."""
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "search.yaml").write_text(SEARCH_PRESET)
    result = run_train("-m", "--config-dir", "my_conf", "+experiment=search", "hydra/sweeper=optuna",
                       "hydra.sweeper.n_trials=2", *TINY_BUDGET, f"data.root={tiny_cifar10}", "hydra.sweep.dir=search",
                       cwd=tmp_path)
    one_line_exit_2(result, "hydra/sweeper=optuna with data.val_size=0 is not allowed")
    assert not (tmp_path / "search").exists()


def test_every_value_of_a_searched_parameter_is_checked(tiny_cifar10, tmp_path):
    result = run_train("-m", "hydra/sweeper=optuna", "depth=choice(8,9)", "data.val_size=20", "hydra.sweeper.n_trials=2",
                       *TINY_BUDGET[1:], f"data.root={tiny_cifar10}", "hydra.sweep.dir=search", cwd=tmp_path)
    one_line_exit_2(result, "a trial of the search space (depth=9): arch=resnet")
    assert not (tmp_path / "search").exists()


@pytest.mark.slow
def test_a_search_whose_trials_all_diverge_lists_them_and_fails(tiny_cifar10, tmp_path):
    result = run_train("-m", "hydra/sweeper=optuna", "optimizer.lr=choice(1e30)", "data.val_size=20",
                       "hydra.sweeper.n_trials=1", *TINY_BUDGET, f"data.root={tiny_cifar10}", "hydra.sweep.dir=search",
                       cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "not one trial of the search completed, so it has no best parameters; the trials:" in result.stderr
    assert ": diverged: " in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "No trials are completed yet" not in result.stderr, result.stderr


def test_a_lock_name_bound_without_listening_says_what_is_known():
    lock = MachineLock(f"test-unlistened-{Path('.').resolve().name}-{id(object())}")
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(lock.address)  # bound, never listening: no connection tells its owner
    try:
        assert not lock.try_acquire()
        assert lock.holder() == (f"another process, owner unknown (it holds {lock.name} without accepting "
                                 f"connections: find it with `ss -xlp | grep '{lock.name}'`)")
        squatter.close()
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        squatter.bind(lock.address)
        squatter.listen(1)
        assert lock.holder().startswith("user ") and ", pid " in lock.holder()
    finally:
        squatter.close()


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_a_refused_pickle_is_explained_without_torchs_advice_to_unpickle_it(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", run_dir=run_dir)
    torch.save({"shift": RunsCode(tmp_path / "ran")}, run_dir / "normalization.pt")
    result = subprocess.run(cli("resnet_cifar.evaluate", str(run_dir), "--out", str(tmp_path / "out")),
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=train_env())
    one_line_exit_2(result, f"{run_dir / 'normalization.pt'} holds an object of posix.system, which is never "
                            "unpickled here")
    assert "weights_only" not in result.stderr and "will likely succeed" not in result.stderr
    assert not (tmp_path / "ran").exists()


def test_a_range_of_depths_is_checked_value_by_value():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from resnet_cifar.sweep import _candidates

    parsed = OverridesParser.create().parse_overrides(["depth=range(8,21)", "x=int(interval(8,12))",
                                                       "lr=interval(0.01,0.3)"])
    depth, whole, real = (_candidates(o.value()) for o in parsed)
    assert depth == list(range(8, 21)) and whole == [8, 9, 10, 11, 12] and real == [0.01, 0.3]
