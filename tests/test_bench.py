"""The benchmark's smoke test: tiny sizes, seconds; it checks the output, never the speed."""
import json
import subprocess
import sys


def test_bench_measures_both_pipelines_and_writes_json(tiny_cifar10, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_cifar.bench", "--depths", "8", "--steps", "1", "--windows", "2",
         "--warmup", "1", "--batch", "32", "--workers", "0", "--data", str(tiny_cifar10), "--json", str(out)],
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


def test_bench_runs_without_a_data_set(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "resnet_cifar.bench", "--depths", "8", "--precisions", "fp32", "--steps", "1",
         "--windows", "1", "--warmup", "0", "--batch", "32", "--workers", "0", "--data", str(tmp_path / "none")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "random images (no data set found)" in result.stdout
