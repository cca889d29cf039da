"""The benchmark's smoke test: tiny sizes, seconds; it checks the output, never the speed."""
import json
import subprocess
import sys


def test_bench_measures_both_pipelines_and_writes_json(tiny_cifar10, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_cifar.bench", "--depths", "8", "--steps", "1", "--windows", "2",
         "--warmup", "1", "--batch", "32", "--workers", "0", "--data", str(tiny_cifar10), "--json", str(out),
         "--concurrent", "1", "2", "--concurrent-steps", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "x standard" in result.stdout
    report = json.loads(out.read_text())
    rows = {r["pipeline"]: r for r in report["results"]}
    assert set(rows) == {"standard", "fp32", "bf16"}
    assert rows["standard"]["ratio_vs_standard"] == 1.0
    for r in rows.values():
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0 and len(r["train_windows"]) == 2
    assert report["data"].startswith("CIFAR-10 files") and report["peak_rss_mb"] > 0
    assert [c["processes"] for c in report["concurrent"]] == [1, 2]
    assert all(c["aggregate_images_per_s"] > 0 and c["variant"] == "fp32" for c in report["concurrent"])


def test_bench_runs_without_a_data_set(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "resnet_cifar.bench", "--depths", "8", "--variants", "fp32", "--steps", "1",
         "--windows", "1", "--warmup", "0", "--batch", "32", "--workers", "0", "--data", str(tmp_path / "none")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "random images (no data set found)" in result.stdout


def test_bench_refuses_an_unknown_variant(tmp_path):
    result = subprocess.run([sys.executable, "-m", "resnet_cifar.bench", "--variants", "fp16+graph"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "variant 'fp16+graph' is not allowed: it is fp32 or bf16" in result.stderr
