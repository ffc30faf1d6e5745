"""Experiment trackers as metric sinks: Weights & Biases (`wandb`) and MLflow (`mlflow`).

Enable them beside the built-ins: `trainer.metric_sinks=[console,jsonl,wandb,mlflow]`.
Both are configured the way their own libraries are, by environment variable,
and both work with no network:

wandb
    `pip install 'toolrl[wandb]'`. Offline unless told otherwise: `WANDB_MODE`
    (`offline`, `online`, `disabled`) wins; without it the mode is `online` only
    when `WANDB_API_KEY` is set. Files go to `<run_dir>/wandb/`; upload an
    offline run later with `wandb sync <run_dir>/wandb/offline-run-*`. Project:
    `WANDB_PROJECT` (default `toolrl`); run name: the run directory's name; the
    run's `config.yaml` becomes the W&B config. A resumed run continues the same
    W&B run (its id is kept in `<run_dir>/wandb_run_id`); W&B ignores steps it
    already has.
mlflow
    `pip install 'toolrl[mlflow]'`. Tracking URI: `MLFLOW_TRACKING_URI`, else a
    local file store in `<run_dir>/mlruns` (view it with
    `mlflow ui --backend-store-uri <run_dir>/mlruns`). Experiment:
    `MLFLOW_EXPERIMENT_NAME` (default `toolrl`). The config's leaves are logged
    as params, each step's metrics with `step=`; a resumed run continues the same
    MLflow run (`<run_dir>/mlflow_run_id`). MLflow allows only letters, digits
    and `_-. /:` in names, so other characters become `_` (`eval/pass@4` is
    logged as `eval/pass_4`), and keeps a metric in a file named by its path, so
    only the first `/` stays (`timing/reward/math` is logged as `timing/reward.math`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a dict ({} when the trainer has not written one)."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _need(module: str, extra: str, sink: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolrlError(f"the {sink!r} metric sink needs the {module!r} package, which is not installed",
                          where="trainer.metric_sinks",
                          fix=f"pip install 'toolrl[{extra}]', or remove {sink!r} from trainer.metric_sinks") from None


class WandbSink:
    """Logs each step to a Weights & Biases run (offline by default; see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._wandb = _need("wandb", "wandb", "wandb")
        self._run: Any = None

    @property
    def mode(self) -> str:
        mode = os.environ.get("WANDB_MODE")
        if mode:
            return mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"

    def begin(self, total_steps: int, first_step: int) -> None:
        self._start(resuming=first_step > 0)

    def _start(self, resuming: bool = False) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        id_file = self.run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resuming and id_file.exists() else secrets.token_hex(4)
        self._run = self._wandb.init(
            project=os.environ.get("WANDB_PROJECT", "toolrl"), name=self.run_dir.name, id=run_id,
            dir=str(self.run_dir), config=_run_config(self.run_dir), mode=self.mode, resume="allow",
            settings=self._wandb.Settings(silent=True, console="off"),
        )
        id_file.write_text(run_id)
        logger.info("wandb run %s (%s) in %s", run_id, self.mode, self.run_dir / "wandb")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._run is None:
            self._start()
        self._run.log(_finite(metrics), step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")


def mlflow_name(key: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, `_-. /:`; others become `_`).

    Only the first `/` is kept (the namespace); later ones become `.`: MLflow's file store keeps a metric
    in a file named by its path, so `timing/reward` and `timing/reward/<name>` could not both exist.
    """
    head, sep, rest = _MLFLOW_BAD.sub("_", key).partition("/")
    return head + sep + rest.replace("/", ".")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[mlflow_name(key)] = str(v)[:6000]  # MLflow's limit on a param value
    return out


class MlflowSink:
    """Logs each step to an MLflow run (a local file store under the run by default)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        _need("mlflow", "mlflow", "mlflow")
        self._client: Any = None
        self.run_id: str | None = None

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or (self.run_dir / "mlruns").resolve().as_uri()

    def begin(self, total_steps: int, first_step: int) -> None:
        self._start(resuming=first_step > 0)

    def _start(self, resuming: bool = False) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked; a local,
            # serverless store is the point of this default (MLFLOW_TRACKING_URI picks another).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        id_file = self.run_dir / "mlflow_run_id"
        if resuming and id_file.exists():
            self.run_id = id_file.read_text().strip()
            client.update_run(self.run_id, status="RUNNING")
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "toolrl")
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
            run = client.create_run(exp_id, run_name=self.run_dir.name)
            self.run_id = run.info.run_id
            params = [Param(k, v) for k, v in _flatten(_run_config(self.run_dir)).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self.run_id, params=params[i:i + 100])
            id_file.write_text(self.run_id)
        self._client = client
        logger.info("mlflow run %s at %s", self.run_id, uri)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._start()
        ts = int(time.time() * 1000)
        batch = [Metric(mlflow_name(k), v, ts, step) for k, v in _finite(metrics).items()]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            self._client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def close(self) -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, "FINISHED")
            self._client = None
