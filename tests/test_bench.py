"""The benchmark's smoke test: tiny sizes, seconds; it checks the output, never the speed. In this process
(main(argv)); its processes for --concurrent are real."""
import functools
import json

import pytest

from resnet_cifar import bench


def test_bench_measures_both_pipelines_and_writes_json(tiny_cifar10, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--depths", "8", "--steps", "1", "--windows", "2", "--warmup", "1", "--batch", "32", "--workers", "0",
                "--data", str(tiny_cifar10), "--json", str(out), "--concurrent", "1", "2", "--concurrent-steps", "2"])
    assert "x standard" in capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {r["pipeline"]: r for r in report["results"]}
    assert set(rows) == {"standard", "fp32", "bf16"}
    assert rows["standard"]["ratio_vs_standard"] == 1.0
    for r in rows.values():
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0 and len(r["train_windows"]) == 2
    assert report["data"].startswith("CIFAR-10 files") and report["peak_rss_mb"] > 0
    assert [c["processes"] for c in report["concurrent"]] == [1, 2]
    assert all(c["aggregate_images_per_s"] > 0 and c["variant"] == "fp32" for c in report["concurrent"])


def test_bench_runs_without_a_data_set(tmp_path, capsys, monkeypatch):
    # random images of CIFAR's shape, fewer of them than the 60,000 a user's run writes
    monkeypatch.setattr(bench, "write_synthetic_cifar10",
                        functools.partial(bench.write_synthetic_cifar10, n_train=500, n_test=100))
    bench.main(["--depths", "8", "--variants", "fp32", "--steps", "1", "--windows", "1", "--warmup", "0",
                "--batch", "32", "--workers", "0", "--data", str(tmp_path / "none")])
    assert "random images (no data set found)" in capsys.readouterr().out


def test_bench_refuses_an_unknown_variant(capsys):
    with pytest.raises(SystemExit) as exited:
        bench.main(["--variants", "fp16+graph"])
    assert exited.value.code == 2
    assert "variant 'fp16+graph' is not allowed: it is fp32 or bf16" in capsys.readouterr().err
