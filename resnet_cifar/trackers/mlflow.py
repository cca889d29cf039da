"""logger=mlflow: each run is one MLflow run, its config as params and every metrics row as metrics.

No server needed: the client goes where MLflow's own settings say (MLFLOW_TRACKING_URI, e.g.
sqlite:///mlflow.db or a file: store; unset, MLflow's default), and `mlflow ui --backend-store-uri URI`
shows the runs. A sweep is one MLflow experiment (by default named by the folder that holds its job
folders), each job one run named by its folder (its overrides). A resumed run finds its MLflow run again
by the run folder's path (a tag) and logs only the steps that run does not hold yet: the rows written again
after a checkpoint are the ones an interrupted attempt logged, so nothing shows twice.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..contract import METRICS_FILE, Status, read_metrics
from ..errors import ConfigError

RUN_DIR_TAG = "resnet_cifar.run_dir"
STEP_METRIC = "test_error"  # measured at every row: the steps a run holds are this metric's
MLFLOW_STATUS = {Status.completed: "FINISHED", Status.interrupted: "KILLED"}  # anything else: FAILED
BATCH = 100  # params per log_batch call (MLflow's limit)


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


class MLflowTracker:
    """One MLflow run for one run folder (see the module's docstring)."""

    @staticmethod
    def check_available() -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("the mlflow package is not installed; pip install -e \".[mlflow]\" (or pip install "
                              "mlflow), or leave logger=csv") from None

    def __init__(self, run_dir: Path, config: dict, resumed_at: int, experiment: str | None = None) -> None:
        self.check_available()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        run_dir = Path(run_dir).resolve()
        existing = self._find_run(str(run_dir))
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

    def _find_run(self, run_dir: str) -> str | None:
        """The MLflow run of this run folder, if an earlier attempt made one, in whichever experiment (the
        default experiment's name depends on the working directory the run was started from)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        query = f"tags.`{RUN_DIR_TAG}` = '{run_dir}'" if "'" not in run_dir else ""
        token = None
        while True:
            page = self.client.search_runs(experiments, filter_string=query, max_results=1000, page_token=token)
            for run in page:
                if run.data.tags.get(RUN_DIR_TAG) == run_dir:
                    return run.info.run_id
            token = page.token
            if not token:
                return None

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
