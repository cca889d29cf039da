"""Tiny CIFAR sets in the official python layout, written by the tests, and a way to run the CLI."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

# Two pytest workers share the cores with the processes they start, so OpenMP threads that spin while they
# wait for work take the cores from the threads that have it: measured on the 2-core Xeon, `pytest -m "not
# slurm"` took 493 s spinning (OpenMP's default) and 290 s passive. Set before torch is imported; the
# processes the tests start inherit it. Not OMP_NUM_THREADS: the tests check the threads the code chooses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HOOKS = Path(__file__).resolve().parent / "hooks"  # what the tests change in the processes they start
sys.path.append(str(HOOKS))
from injected import (  # noqa: E402,F401  (the tests import these names from here)
    ARCHIVE_ENV, FAIL_WRITE_ENV, FAKE_GPUS_ENV, KILL_AT_ITERATION_ENV, KILL_IN_WRITE_ENV, LOCK_NAMESPACE_ENV,
    SLOW_STEP_ENV,
)

# Few iterations on tiny data: every evaluation and checkpoint path runs in seconds. One thread: the number of
# threads changes a convolution's sums in the last bits, and the automatic choice reads the machine's load, so
# tests that compare two processes' metrics digit for digit (a resumed run against an uninterrupted one) need
# the same fixed number in both (CI on a busy machine saw 1 against 2 threads: 1.800618 against 1.800518).
TINY_BUDGET = (
    "depth=8", "trainer.threads=1", "data.batch_size=32", "trainer.max_iters=12", "trainer.eval_every=4",
    "trainer.checkpoint_every=4", "trainer.eval_batch_size=64", "schedule.milestones=[6,9]",
)


def make_images(labels: np.ndarray, rng: np.random.Generator, learnable: bool) -> np.ndarray:
    """N x 3072 uint8 rows (R, G, B planes). Learnable: each class has its own colour under the noise."""
    n = len(labels)
    if not learnable:
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    palette = np.random.default_rng(1234).integers(40, 216, (10, 3))  # the same in train and test
    colour = palette[labels % 10][:, :, None]  # (N, 3, 1)
    noise = rng.integers(-40, 41, (n, 3, 1024))
    return np.clip(colour + noise, 0, 255).astype(np.uint8).reshape(n, 3072)


def dump(obj: dict, path: Path, bytes_keys: bool = False) -> None:
    if bytes_keys:  # as the official (Python 2) files load with encoding="bytes"
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n_train: int = 320, n_test: int = 100, learnable: bool = True,
                  seed: int = 0, bytes_keys: bool = False) -> Path:
    """root/cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train) % 10
    images = make_images(labels, rng, learnable)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        dump({"batch_label": f"training batch {i} of 5", "labels": labels[part].tolist(),
              "data": images[part], "filenames": [f"{j}.png" for j in part]}, folder / f"data_batch_{i}", bytes_keys)
    test_labels = np.arange(n_test) % 10
    dump({"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(),
          "data": make_images(test_labels, rng, learnable), "filenames": []}, folder / "test_batch", bytes_keys)
    dump({"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": n_train // 5,
          "num_vis": 3072}, folder / "batches.meta", bytes_keys)
    return root


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 0) -> Path:
    """root/cifar-100-python/ with train, test and meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        dump({"fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
              "data": make_images(fine, rng, learnable=False), "filenames": []}, folder / name)
    dump({"fine_label_names": [f"f{c}" for c in range(100)], "coarse_label_names": [f"c{c}" for c in range(20)]},
         folder / "meta")
    return root


BROKEN_BATCH_KINDS = ("truncated", "not a pickle", "wrong shape", "wrong dtype", "labels out of range",
                      "label count")


def break_batch_file(path: Path, how: str) -> None:
    """Damage one official batch file in the way named (one of BROKEN_BATCH_KINDS)."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:500])
        return
    if how == "not a pickle":
        path.write_text("hello, I am not a pickle")
        return
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    if how == "wrong shape":
        batch["data"] = batch["data"][:, :1024]
    elif how == "wrong dtype":
        batch["data"] = batch["data"].astype(np.float32)
    elif how == "labels out of range":
        batch["labels"][0] = 10
    elif how == "label count":
        batch["labels"] = batch["labels"][:-1]
    else:
        raise ValueError(f"unknown damage {how!r}; one of {BROKEN_BATCH_KINDS}")
    dump(batch, path)


@pytest.fixture(autouse=True)
def no_download_from_the_internet(monkeypatch):
    """In the tests' own process too, a CIFAR download goes to the loopback address (see train_env)."""
    import torchvision.datasets as tvd

    for cls in (tvd.CIFAR10, tvd.CIFAR100):
        monkeypatch.setattr(cls, "url", closed_port_url())


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory) -> Path:
    """A learnable 320/100-image CIFAR-10 in the official layout; do not modify (shared)."""
    return write_cifar10(tmp_path_factory.mktemp("tiny_cifar10"))


def train_env(env: dict | None = None) -> dict:
    """The environment of a CLI process the tests start: tests/hooks first on PYTHONPATH, and CIFAR
    downloads going to the loopback address (`env` may name a served archive; by default nothing
    listens there, so a test that forgets its data fails at once instead of downloading 170 MB)."""
    path = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path,
            ARCHIVE_ENV: f"{closed_port_url()} {'0' * 32}", **(env or {})}


FRESH_PYTHON_ENV = "RESNET_CIFAR_TEST_FRESH_PYTHON"  # "1": every CLI process a fresh interpreter
# Where the warm Python's socket goes, read before any test points TMPDIR at its own (deep) folder: a Unix
# socket's path holds at most 107 bytes.
WARM_SOCKET_PARENT = tempfile.gettempdir()


@functools.cache
def _warm_socket() -> str:
    """The socket of this pytest process's warm Python (tests/hooks/warm.py), started on first use."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="resnet_cifar_warm_", dir=WARM_SOCKET_PARENT))
    path, log = folder / "socket", folder / "server.log"
    env = {k: v for k, v in train_env().items() if not k.startswith("RESNET_CIFAR_TEST_") and k != "PYTHONPATH"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(HOOKS / "warm.py"), "--serve", str(path)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop() -> None:
        server.kill()
        server.wait()
        for leftover in (path, log):
            leftover.unlink(missing_ok=True)
        folder.rmdir()

    atexit.register(stop)
    deadline = time.monotonic() + 300
    while not log.read_text().endswith("ready\n"):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the tests' warm Python did not start: {log.read_text()}")
        time.sleep(0.05)
    if log.read_text() != "ready\n":  # a warning printed once at import would be muted in every fork
        raise RuntimeError(f"the tests' warm Python printed while importing: {log.read_text()}")
    return str(path)


def cli(module: str, *args: str) -> list[str]:
    """The command line of `python -m MODULE ARGS`: a process of its own, forked from this pytest process's
    warm Python (tests/hooks/warm.py: torch, Hydra and the project already imported), or a fresh
    interpreter with RESNET_CIFAR_TEST_FRESH_PYTHON=1."""
    if os.environ.get(FRESH_PYTHON_ENV) == "1":
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-E", "-S", str(HOOKS / "warm.py"), _warm_socket(), module, *args]


def run_train(*overrides: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m resnet_cifar.train OVERRIDES` in a real process, as a user runs it; its output once it has
    exited. Not through pipes: a killed run's DataLoader worker outlives it by up to 5 s (until torch's check
    of its parent), holding a pipe open, and the test would wait for it (a test that needs a job's processes
    gone checks it: processes_marked). The files are opened for appending, so that a late writer adds to
    what the test reads instead of overwriting it."""
    command = cli("resnet_cifar.train", *overrides)
    with tempfile.TemporaryDirectory(prefix="resnet_cifar_output_") as folder:
        paths = [Path(folder) / "stdout", Path(folder) / "stderr"]
        out, err = (os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) for path in paths)
        try:
            process = subprocess.Popen(command, cwd=cwd, env=train_env(env), stdout=out, stderr=err)
        finally:
            os.close(out)
            os.close(err)
        try:
            code = process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stdout, stderr = (path.read_text(errors="replace") for path in paths)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


MARK_ENV = "RESNET_CIFAR_TEST_MARK"  # set by a test for a job, so that it can find the job's processes


def processes_marked(mark: str) -> list[int]:
    """The live processes whose environment has MARK_ENV=mark (a job's, its workers' included: they inherit
    it); zombies have none."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # ended meanwhile, or not ours to read
                pass
    return found


@dataclass
class ArchiveServer:
    """A CIFAR-10 archive served over HTTP on the loopback address, counting its downloads."""

    url: str
    md5: str
    delay_s: float = 0.0  # before each answer: keeps a download in flight long enough to race it
    downloads: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        """What makes a CLI process (through tests/hooks) fetch this archive instead of the official one."""
        return {ARCHIVE_ENV: f"{self.url} {self.md5}"}


def serve_archive(folder: Path, **cifar) -> tuple[ArchiveServer, http.server.ThreadingHTTPServer]:
    """Write a tiny CIFAR-10 (write_cifar10's arguments) as the official archive and serve it."""
    write_cifar10(folder / "src", **cifar)
    www = folder / "www"
    www.mkdir()
    archive = www / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            # torchvision first follows redirects with a GET marked "Method: HEAD" (it reads only the
            # headers); the request after it is the download
            if self.headers.get("Method") != "HEAD":
                served.downloads.append(self.path)
                time.sleep(served.delay_s)
            super().do_GET()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # torchvision's redirect probe hangs up after the headers, by design

    server = Server(("127.0.0.1", 0), functools.partial(Handler, directory=www))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    served = ArchiveServer(f"http://127.0.0.1:{server.server_address[1]}/{archive.name}",
                           hashlib.md5(archive.read_bytes()).hexdigest())
    return served, server


@pytest.fixture
def archive_server(tmp_path) -> ArchiveServer:
    """A learnable 320/100-image CIFAR-10 archive on a loopback port."""
    served, server = serve_archive(tmp_path / "archive")
    yield served
    server.shutdown()


def closed_port_url() -> str:
    """An address where nothing listens: what a download meets on a machine without internet."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def composed_spec(*overrides: str):
    """The RunSpec that `python -m resnet_cifar.train OVERRIDES` composes (real Hydra, conf/ as installed),
    plug-ins named by their options."""

    from resnet_cifar.hydra_setup import compose_run
    from resnet_cifar.run_spec import composed_run_config
    from resnet_cifar.run_spec import RunSpec

    return RunSpec.from_dict(composed_run_config(compose_run(list(overrides))), list(overrides))


def train_in_process(*overrides: str, run_dir: Path) -> dict | None:
    """What `python -m resnet_cifar.train OVERRIDES hydra.run.dir=RUN_DIR` trains, in this process: the
    config composed by Hydra from conf/ and validated, the job run into its held RunFolder unless it is
    completed. Without the command around it (exit statuses, .hydra/, train.log: the subprocess tests'
    business), and seconds faster. Returns summary.json (None if none was written)."""
    from resnet_cifar.config import validate
    from resnet_cifar.contract import read_summary
    from resnet_cifar.distributed import World
    from resnet_cifar.job import run_job
    from resnet_cifar.checks import check_plugins
    from resnet_cifar.run_folder import RunFolder

    spec = composed_spec(*overrides)
    validate(spec.config)
    check_plugins(spec.config)
    folder = RunFolder(run_dir)
    with folder.held():
        if not folder.completed(spec):
            run_job(spec, folder, World())
    return read_summary(run_dir)
