"""The benchmark's smoke test: tiny sizes, seconds; it checks the output, never the speed. In this process
(main(argv)); its processes for --concurrent are real."""
import functools
import json

import pytest

from resnet_cifar import roofline, speed


@pytest.fixture(autouse=True)
def short_matmul_measurement(monkeypatch):
    """The machine's matmul rate over 0.05 s instead of a second: the smoke test checks the output."""
    monkeypatch.setattr(speed, "matmul_rate", functools.partial(roofline.matmul_rate, seconds=0.05))


@pytest.mark.slow
def test_bench_measures_both_pipelines_and_writes_json(tiny_cifar10, tmp_path, capsys):
    out = tmp_path / "bench.json"
    speed.main(["--depths", "8", "--steps", "1", "--windows", "2", "--warmup", "1", "--batch", "32", "--workers", "0",
                "--data", str(tiny_cifar10), "--json", str(out), "--concurrent", "2", "--concurrent-steps", "2"])
    assert "x standard" in capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {r["pipeline"]: r for r in report["results"]}
    assert set(rows) == {"standard", "fp32", "bf16"}
    assert rows["standard"]["ratio_vs_standard"] == 1.0
    for r in rows.values():
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0 and len(r["train_windows"]) == 2
        # the roofline: the step's counted FLOPs at its rate, against the matmul rate of its precision
        assert r["train_gflop_per_s"] == pytest.approx(r["train_gflop_per_image"] * r["train_images_per_s"], rel=0.02)
        peak = report["matmul_gflop_per_s"]["bf16" if r["pipeline"] == "bf16" else "fp32"]
        assert r["of_matmul_rate"] == pytest.approx(r["train_gflop_per_s"] / peak, rel=0.02, abs=0.002)
    assert report["matmul_gflop_per_s"]["fp32"] > 0 and report["matmul_gflop_per_s"]["bf16"] > 0
    assert report["data"].startswith("CIFAR-10 files") and report["peak_rss_mb"] > 0
    assert [c["processes"] for c in report["concurrent"]] == [2]
    assert all(c["aggregate_images_per_s"] > 0 and c["variant"] == "fp32" for c in report["concurrent"])


@pytest.mark.slow
def test_bench_runs_without_a_data_set(tmp_path, capsys, monkeypatch):
    # random images of CIFAR's shape, fewer of them than the 60,000 a user's run writes
    monkeypatch.setattr(speed, "write_synthetic_cifar10",
                        functools.partial(speed.write_synthetic_cifar10, n_train=500, n_test=100))
    speed.main(["--depths", "8", "--variants", "fp32", "--steps", "1", "--windows", "1", "--warmup", "0",
                "--batch", "32", "--workers", "0", "--data", str(tmp_path / "none")])
    assert "random images (no data set found)" in capsys.readouterr().out


def test_bench_refuses_an_unknown_variant(capsys):
    with pytest.raises(SystemExit) as exited:
        speed.main(["--variants", "fp16+graph"])
    assert exited.value.code == 2
    assert "variant 'fp16+graph' is not allowed: it is fp32 or bf16" in capsys.readouterr().err


@pytest.mark.slow
def test_a_steps_flops_are_counted_from_the_model_and_leave_it_as_it_was():
    """ResNet-20: about 40.8M multiply-adds forward per image (as commonly counted for the paper's nets), so
    about 3 x 81.6M FLOPs forward and backward; ResNet-56, about 125M multiply-adds: 3.07 times as many."""
    import torch

    from conftest import composed_spec
    from resnet_cifar.models import build_model
    from resnet_cifar.roofline import training_flops_per_image

    torch.manual_seed(0)
    model = build_model(composed_spec("depth=20").config, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = training_flops_per_image(model, 10)
    assert 230e6 < flops < 260e6, flops
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
    deeper = training_flops_per_image(build_model(composed_spec("depth=56").config, 10), 10)
    assert deeper / flops == pytest.approx(125.8 / 40.8, rel=0.03)


def test_every_option_of_bench_help_shows_its_default(capsys):
    """`bench --help` showed no default for --depths, --batch and --device."""
    with pytest.raises(SystemExit):
        speed.main(["--help"])
    text = " ".join(capsys.readouterr().out.split("options:")[1].split())
    for option, default in (("--depths", "[20, 56, 110]"), ("--batch", "128"), ("--device", "auto"),
                            ("--steps", "10"), ("--windows", "5"), ("--warmup", "5")):
        after = text[text.index(f"{option} "):]
        assert f"(default: {default})" in after[:after.index(" --", 3)], (option, after[:200])


def test_the_step_profile_gives_each_kind_of_op_its_share(tiny_cifar10):
    """bench/profile_step.py: the shares add up to the step, and the convolutions (every FLOP of the net but
    the last linear layer's) take a share of it."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "profile_step.py"
    spec = importlib.util.spec_from_file_location("profile_step", path)
    profile_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_step)
    shares = profile_step.main(["fp32", "--depth", "8", "--data", str(tiny_cifar10), "--batch", "32",
                                "--steps", "2"])
    assert sum(shares.values()) == pytest.approx(100)
    assert shares["convolution (fwd+bwd)"] > 5 and shares["batch norm (fwd+bwd)"] > 0
    assert profile_step.kind("aten::mkldnn_convolution") == "convolution (fwd+bwd)"
    assert profile_step.kind("aten::native_batch_norm_backward") == "batch norm (fwd+bwd)"
    assert profile_step.kind("aten::threshold_backward") == "relu (fwd+bwd)"
    assert profile_step.kind("aten::addmm") == "last linear layer"
    assert shares["optimizer"] > 0  # the SGD step's own adds and multiplies, not counted as the net's
