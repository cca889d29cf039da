"""Figure 7 (layer responses) from tiny trained runs."""
import subprocess

import pandas as pd
import pytest
import torch

from conftest import TINY_BUDGET, cli
from multirun_analysis.responses import layer_response_std, main, response_layers
from resnet_cifar.models.resnet import cifar_resnet
from test_train import train_ok


@pytest.fixture(scope="module")
def trained(tiny_cifar10, tmp_path_factory):
    """plain-8, ResNet-14 and pre-activation ResNet-8, trained a few steps each: folders with summary.json and
    model.pt."""
    root = tmp_path_factory.mktemp("responses")
    for arch, depth in (("plain", 8), ("resnet", 14), ("preact", 8)):  # by the command: run folders with .hydra/
        train_ok(*TINY_BUDGET, f"arch={arch}", f"depth={depth}", f"data.root={tiny_cifar10}",
                 f"hydra.run.dir={root / 'runs' / f'{arch}{depth}'}", cwd=root)
    return root


@pytest.mark.slow
def test_one_positive_std_per_3x3_layer_in_order_and_the_figure(trained, tmp_path):
    assert main([str(trained / "runs"), "--out", str(tmp_path / "out")]) == 0
    responses = pd.read_csv(tmp_path / "out" / "responses.csv")
    layers = responses.groupby(["arch", "depth"])["layer"].apply(list).to_dict()
    # 6n+1 3x3 layers: the first and 2 per block (for preact, their convs' outputs: no BN follows a conv there)
    assert layers == {("plain", 8): list(range(1, 8)), ("resnet", 14): list(range(1, 14)),
                      ("preact", 8): list(range(1, 8))}
    assert (responses["std"] > 0).all()
    assert (tmp_path / "out" / "fig7.png").stat().st_size > 10_000


def test_the_hooks_measure_bn_outputs_before_the_relu_and_the_addition():
    torch.manual_seed(0)
    model = cifar_resnet(8, "A", 10).eval()
    for bn in response_layers(model):  # BN statistics that are not the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(64, 3, 32, 32)
    stds = layer_response_std(model, [(x, None)])
    block = model.layer1[0]
    with torch.no_grad():
        first = model.bn1(model.conv1(x))  # may be negative: taken before the ReLU
        inner = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(torch.relu(first))))))
    expected = [t.transpose(0, 1).flatten(1).std(1, unbiased=False).mean().item() for t in (first, inner)]
    assert stds[0] == pytest.approx(expected[0], rel=1e-5)
    assert stds[2] == pytest.approx(expected[1], rel=1e-5)  # the block's second BN, before adding x
    # batches of unequal sizes combine to the statistics of the whole (each batch one var_mean pass)
    split = layer_response_std(model, [(x[:10], None), (x[10:41], None), (x[41:], None)])
    assert split == pytest.approx(stds, rel=1e-5)
    # the same in the channels_last layout the runs use on the CPU
    model_cl = model.to(memory_format=torch.channels_last)
    assert layer_response_std(model_cl, [(x.contiguous(memory_format=torch.channels_last), None)]) == \
        pytest.approx(stds, rel=1e-5)
    # a channel mean far larger than its spread loses nothing (float32 sums of shifted values)
    model.bn1.bias.data += 1000.0
    with torch.no_grad():
        far = model.bn1(model.conv1(x)).double()
    expected_far = far.transpose(0, 1).flatten(1).std(1, unbiased=False).mean().item()
    assert layer_response_std(model, [(x[:30], None), (x[30:], None)])[0] == pytest.approx(expected_far, rel=1e-5)


def test_without_models_it_says_so(tmp_path):
    """The command in a real process: its exit status and message."""
    (tmp_path / "empty").mkdir()
    result = subprocess.run(cli("multirun_analysis.responses", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "out")), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no completed run with a model.pt" in result.stderr


@pytest.mark.slow
def test_a_run_the_report_skips_is_not_in_figure_7(trained, tmp_path):
    """One list of runs: a completed run with a model whose recorded config is damaged is skipped by the
    report, and so by Figure 7 too (before, responses.csv still held it)."""
    import json
    import shutil

    from multirun_analysis.report import main as report_main

    runs = tmp_path / "runs"
    shutil.copytree(trained / "runs", runs)
    damaged = runs / "plain8"
    summary = json.loads((damaged / "summary.json").read_text())
    (damaged / "summary.json").write_text(json.dumps({**summary, "config": ["a list", "not a config"]}))
    assert report_main([str(runs), "--out", str(tmp_path / "out")]) == 0
    responses = pd.read_csv(tmp_path / "out" / "responses.csv")
    assert set(responses["run"]) == {str(runs / "resnet14"), str(runs / "preact8")}
    report_runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert set(report_runs["run"]) == {str(runs / "resnet14"), str(runs / "preact8")}
