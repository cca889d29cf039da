"""logger=mlflow: each run is one MLflow run, its config as params and every metrics row as metrics.

No server needed: the client goes where MLflow's own settings say (MLFLOW_TRACKING_URI, e.g.
sqlite:///mlflow.db or a file: store; unset, MLflow's default), and `mlflow ui --backend-store-uri URI`
shows the runs. A sweep is one MLflow experiment (by default named by the folder that holds its job
folders), each job one run named by its folder (its overrides). The MLflow run's id is written into the run
folder when the run starts (summary.json's tracker_run_id), and a resumed run finds its MLflow run by that id
alone, never by the folder's path or name: a folder deleted and started again with other settings, or the
same path on another machine with the same server, is a new MLflow run, never another run's history. A
resumed run logs only the steps its MLflow run does not hold yet: the rows written again after a checkpoint
are the ones an interrupted attempt logged, so nothing shows twice.

Before a run (check_available): the package is installed, a local store (sqlite:, file:) can be written, a
server answers, and the experiment is not deleted; else one line and no run folder.
"""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pandas as pd

from ..contract import METRICS_FILE, TRACKER_RUN_ID, Status, read_metrics, read_summary
from ..errors import ConfigError, UserError
from ..filesystem import unwritable_reason

RUN_DIR_TAG = "resnet_cifar.run_dir"
STEP_METRIC = "test_error"  # measured at every row: the steps a run holds are this metric's
MLFLOW_STATUS = {Status.completed: "FINISHED", Status.interrupted: "KILLED"}  # anything else: FAILED
BATCH = 100  # params per log_batch call (MLflow's limit)
CONNECT_TIMEOUT_S = 5.0  # how long the check before a run waits for a tracking server to answer


def default_experiment(run_dir: Path) -> str:
    """The folder that holds the run folder (a sweep's folder), as the user named it: relative to the
    working directory when it lies below it."""
    parent = Path(run_dir).resolve().parent
    try:
        return str(parent.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(parent)


def flat_params(config: dict) -> dict[str, str]:
    """The run's config as MLflow params: dotted keys, values as text."""
    flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    return {key: str(value) for key, value in flat.items()}


def local_store(uri: str) -> Path | None:
    """The file or folder a local tracking URI stores into (sqlite:///PATH, file:PATH, a bare path), else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        return Path(path) if path and path != ":memory:" else None
    if parsed.scheme in ("file", ""):
        return Path(parsed.path or uri)
    return None


def store_problem(uri: str) -> str | None:
    """Why the tracking store cannot take this run (None if it can, or if that cannot be told from here)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):  # MLflow's server answers GET /health; its client would retry for minutes
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S):
                return None
        except urllib.error.HTTPError:
            return None  # it answered (a prefix or a proxy may keep /health from it): the run's calls will tell
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            return f"no tracking server answers at {uri} within {CONNECT_TIMEOUT_S:g} s ({reason})"
    store = local_store(uri)
    if store is None:
        return None
    if parsed.scheme == "sqlite":
        if store.exists() and not os.access(store, os.W_OK):
            return f"{store} is not writable"
        return unwritable_reason(store.parent)
    return unwritable_reason(store)


@contextmanager
def _answers_at_once() -> Iterator[None]:
    """MLflow's client without its retries and with a short timeout, for the check before a run (an answer that
    does not come is an error there, not minutes of waiting)."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(CONNECT_TIMEOUT_S))}
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _still_holds(folder: Path, run_id: str) -> bool:
    """Whether a run folder still records this MLflow run (the folder a copy was made from)."""
    try:
        return (read_summary(folder) or {}).get(TRACKER_RUN_ID) == run_id
    except UserError:
        return True  # a folder there that cannot be read: not taken over


class MLflowTracker:
    """One MLflow run for one run folder (see the module's docstring)."""

    @staticmethod
    def _installed() -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("the mlflow package is not installed; pip install -e \".[mlflow]\" (or pip install "
                              "mlflow), or leave logger=csv") from None

    @classmethod
    def check_available(cls, run_dir: Path | None = None, experiment: str | None = None) -> None:
        """Before the run: mlflow installed, the store usable (store_problem), the experiment not deleted
        (`experiment`, or the default one of `run_dir` where it is known)."""
        cls._installed()
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = mlflow.get_tracking_uri()
        problem = store_problem(uri)
        if problem:
            raise ConfigError(f"the MLflow tracking store {uri} cannot be used: {problem} (MLFLOW_TRACKING_URI "
                              "says where runs go); fix it, or leave logger=csv")
        name = experiment or (default_experiment(run_dir) if run_dir is not None else None)
        try:
            with _answers_at_once():
                found = MlflowClient().get_experiment_by_name(name) if name else None
        except Exception as e:  # noqa: BLE001 - whatever the store answers, it cannot take the run
            raise ConfigError(f"the MLflow tracking store {uri} cannot be used: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]}") from None
        if found is not None and found.lifecycle_stage == "deleted":
            raise ConfigError(f"the MLflow experiment {name!r} (id {found.experiment_id}) is deleted: restore it "
                              f"(mlflow experiments restore --experiment-id {found.experiment_id}), delete it for "
                              "good (mlflow gc), or name another with logger.experiment=NAME")

    def __init__(self, run_dir: Path, config: dict, resumed_at: int, experiment: str | None = None,
                 run_id: str | None = None) -> None:
        """`run_id`: the MLflow run this run folder recorded when it started (None: a new MLflow run)."""
        self._installed()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        run_dir = Path(run_dir).resolve()
        existing = self._own_run(run_id, run_dir)
        if existing is None:
            name = experiment or default_experiment(run_dir)
            found = self.client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found else self.client.create_experiment(name)
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={RUN_DIR_TAG: str(run_dir)})
            self.run_id = run.info.run_id
            params = [self._param(k, v) for k, v in flat_params(config).items()]
            for start in range(0, len(params), BATCH):
                self.client.log_batch(self.run_id, params=params[start:start + BATCH])
            self.logged_until = -1
            for row in read_metrics(run_dir / METRICS_FILE).numbers():  # a run that used another tracker before
                if row["iteration"] <= resumed_at:
                    self.log(row)
        else:
            self.run_id = existing
            self.client.update_run(self.run_id, status="RUNNING")
            steps = [m.step for m in self.client.get_metric_history(self.run_id, STEP_METRIC)]
            self.logged_until = max(steps, default=-1)

    @staticmethod
    def _param(key: str, value: str):
        from mlflow.entities import Param

        return Param(key, value)

    def _own_run(self, run_id: str | None, run_dir: Path) -> str | None:
        """The MLflow run this folder recorded, if this store holds it, it is not deleted, and it is this
        folder's: a copy of a run folder records the same id, so a run whose MLflow run was started in a folder
        that still holds it (the original) starts a new MLflow run; a folder moved (nothing left where its run
        started) goes on with its own, tagged with where it is now."""
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.lifecycle_stage == "deleted":
            return None
        started_in = run.data.tags.get(RUN_DIR_TAG)
        if started_in and started_in != str(run_dir):
            if _still_holds(Path(started_in), run_id):
                return None  # a copy: the original goes on with its own MLflow run
            self.client.set_tag(run_id, RUN_DIR_TAG, str(run_dir))
        return run_id

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric

        step = int(row["iteration"])
        if step <= self.logged_until:
            return  # logged by an earlier attempt of this run
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in row.items()
                   if key != "iteration" and value is not None]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.logged_until = step

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))
