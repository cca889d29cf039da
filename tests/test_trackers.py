"""Trackers never borrow another run's history and never stop the training: an MLflow run is found by the id its
run folder recorded, a tracker that fails mid-run costs one warning, a server that hangs cannot keep a stop
signal from ending the run as interrupted, and a store that cannot take the run is refused before it starts."""
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_BUDGET, cli, run_train, train_env, train_in_process
from test_train import read_metrics

FLAKY_TRACKER = '''
class Flaky:
    """Logs the first row, then its store breaks."""
    def __init__(self, run_dir, config, resumed_at):
        self.calls = 0
    def log(self, row):
        self.calls += 1
        if self.calls > 1:
            raise OSError("the store went away")
    def close(self, status):
        raise OSError("the store is still away")
'''


def one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("error: ") == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_new_run_at_a_reused_path_is_a_new_mlflow_run(tiny_cifar10, tmp_path, monkeypatch):
    """The folder deleted and the command run again with another seed and lr: MLflow shows the new run's
    params and errors (before, it logged nothing and showed the old run's)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "mine"
    first = train_in_process(*TINY_BUDGET, "logger=mlflow", f"data.root={tiny_cifar10}", run_dir=run_dir)
    shutil.rmtree(run_dir)
    second = train_in_process(*TINY_BUDGET, "logger=mlflow", "seed=1", "optimizer.lr=0.05",
                              f"data.root={tiny_cifar10}", run_dir=run_dir)
    assert first["tracker_run_id"] != second["tracker_run_id"]
    client = MlflowClient(uri)
    run = client.get_run(second["tracker_run_id"])
    assert run.data.params["seed"] == "1" and run.data.params["optimizer.lr"] == "0.05"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_error")]
    assert history == [(int(r["iteration"]), pytest.approx(float(r["test_error"]))) for r in read_metrics(run_dir)]
    assert client.get_run(first["tracker_run_id"]).data.params["seed"] == "0"  # the old one kept as it was


@pytest.mark.slow
def test_a_tracker_that_fails_mid_run_warns_once_and_the_run_completes(tiny_cifar10, tmp_path):
    (tmp_path / "flaky_tracker.py").write_text(FLAKY_TRACKER)
    run_dir = tmp_path / "run"
    result = run_train(*TINY_BUDGET, "logger._target_=flaky_tracker.Flaky", f"data.root={tiny_cifar10}",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    log = (run_dir / "train.log").read_text()
    assert log.count("the tracker failed to record iteration 8 (OSError: the store went away); it is not called "
                     "again in this run: metrics.csv keeps every row") == 1, log
    assert "Traceback" not in log and "the store is still away" not in log
    assert [r["iteration"] for r in read_metrics(run_dir)] == ["4", "8", "12"]


class HangingMLflow(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers its health check and says it has no experiments, then never answers."""

    def do_GET(self):
        if self.path.startswith("/health"):
            self._answer(200, b"OK")
        elif "experiments/get-by-name" in self.path:
            self._answer(404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "none"}).encode())
        else:
            time.sleep(600)

    def do_POST(self):
        time.sleep(600)  # experiments/create, runs/create: never answered

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_stop_signal_while_the_tracker_waits_for_its_server_ends_the_run_as_interrupted(tiny_cifar10, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HangingMLflow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run_dir = tmp_path / "run"
    env = train_env({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{server.server_address[1]}"})
    process = subprocess.Popen(cli("resnet_cifar.train", *TINY_BUDGET, "logger=mlflow", f"data.root={tiny_cifar10}",
                                   f"hydra.run.dir={run_dir}"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "summary.json").exists():  # running: the tracker is being started now
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)  # not minutes of retries
    finally:
        process.kill()
        server.shutdown()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    assert "the tracker had not started when SIGTERM arrived" in (run_dir / "train.log").read_text()


def test_an_unreachable_or_unwritable_store_is_refused_before_the_run(tiny_cifar10, tmp_path):
    (tmp_path / "a_file").write_text("")
    for uri, message in ((f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}", "is a file, not a folder"),
                         ("http://127.0.0.1:9/", "no tracking server answers at http://127.0.0.1:9/")):
        run_dir = tmp_path / "runs" / "run"
        result = run_train(*TINY_BUDGET, "logger=mlflow", f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}",
                           cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
        one_line(result, f"logger=mlflow (conf/logger/mlflow.yaml): the MLflow tracking store {uri} cannot be used: ")
        assert message in result.stderr
        assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_deleted_experiment_is_refused_before_the_run_or_the_sweep(tiny_cifar10, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("mine"))
    client.delete_experiment(client.create_experiment("multirun/gone"))
    run_dir = tmp_path / "runs" / "run"
    result = run_train(*TINY_BUDGET, "logger=mlflow", "logger.experiment=mine", f"data.root={tiny_cifar10}",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    one_line(result, "logger=mlflow (conf/logger/mlflow.yaml): the MLflow experiment 'mine' (id 1) is deleted: restore it")
    assert not (tmp_path / "runs").exists()
    result = run_train("-m", *TINY_BUDGET, "seed=0,1", "logger=mlflow", f"data.root={tiny_cifar10}",
                       "hydra.sweep.dir=multirun/gone", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    one_line(result, "logger=mlflow (conf/logger/mlflow.yaml): the MLflow experiment 'multirun/gone' (id 2) is deleted")
    assert not (tmp_path / "multirun").exists()


HANGING_CLOSE = '''
import time


class Hangs:
    def __init__(self, run_dir, config, resumed_at):
        pass
    def log(self, row):
        pass
    def close(self, status):
        time.sleep(600)
'''


@pytest.mark.slow
def test_a_tracker_that_hangs_when_a_run_fails_cannot_leave_it_running(tiny_cifar10, tmp_path):
    (tmp_path / "hanging_tracker.py").write_text(HANGING_CLOSE)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = run_train(*TINY_BUDGET, "optimizer.lr=1e30", "logger._target_=hanging_tracker.Hangs",
                       f"data.root={tiny_cifar10}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # diverged
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    assert time.monotonic() - started < 120  # the close was given 10 s, not 600
    assert "the tracker did not record the end of the run within 10 s" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_copy_of_a_run_folder_gets_its_own_mlflow_run(tiny_cifar10, tmp_path, monkeypatch):
    """A copy records the same MLflow run id: resumed, it starts its own, and the original keeps its history."""
    from mlflow.tracking import MlflowClient

    from conftest import KILL_AT_ITERATION_ENV

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*TINY_BUDGET, "logger=mlflow", f"data.root={tiny_cifar10}"]
    original = tmp_path / "runs" / "original"
    killed = run_train(*args, f"hydra.run.dir={original}", cwd=tmp_path,
                       env={"MLFLOW_TRACKING_URI": uri, KILL_AT_ITERATION_ENV: "7"})
    assert killed.returncode < 0
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(original, copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    from_copy = train_in_process(*args, run_dir=copy)
    from_original = train_in_process(*args, run_dir=original)
    assert from_copy["tracker_run_id"] != from_original["tracker_run_id"]
    client = MlflowClient(uri)
    for summary, folder in ((from_copy, copy), (from_original, original)):
        steps = [m.step for m in client.get_metric_history(summary["tracker_run_id"], "test_error")]
        assert steps == [4, 8, 12], (folder, steps)  # each its own rows, once


def test_a_server_that_answers_with_an_http_error_is_a_server():
    from resnet_cifar.trackers.mlflow import store_problem

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert store_problem(f"http://127.0.0.1:{server.server_address[1]}/prefix") is None
    finally:
        server.shutdown()
    assert "no tracking server answers" in store_problem("http://127.0.0.1:9/")
