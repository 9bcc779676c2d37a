"""Where the tracking server is, whether it answers, and what a run's params and tags are."""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

from arvid_ray.config import BOOKKEEPING, ExperimentConfig, fields_with_role, is_tag

log = logging.getLogger(__name__)

RUN_NAME_TAG = "arvid.run_name"  # the stable training-run name; a re-launch resumes the run carrying it


def resolve_tracking_uri(cfg: ExperimentConfig) -> str:
    """cfg.tracking.uri, else MLFLOW_TRACKING_URI, else an absolute sqlite file under the workdir.

    Always absolute: Ray workers change directory, so a relative sqlite path would point elsewhere.
    """
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).expanduser().resolve())
        return uri
    return f"sqlite:///{cfg.experiment.workdir_path() / 'mlruns.db'}"


def ui_hint(uri: str) -> str:
    """How to open the MLflow UI for ``uri``: a running server is opened in a browser (through an SSH
    tunnel on a cluster); a local store (sqlite / directory) is served with ``mlflow ui``."""
    if uri.startswith(("http://", "https://")):
        return f"open {mask_uri(uri)} in a browser (tunnel the port first when it is on a remote head node)"
    return f"mlflow ui --backend-store-uri {uri}"


def reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None if the tracking URI looks usable, else the reason (fast: no MLflow client retries)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                return None if resp.status < 500 else f"HTTP {resp.status}"
        except Exception as exc:  # noqa: BLE001 - any network failure means unreachable
            return f"{type(exc).__name__}: {exc}"
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {parent}: {exc}"
    return None


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# bookkeeping, not hyper-parameters: where things are stored and logged, how loud the console is (the
# fields with role 'bookkeeping'; config_params asks is_tag, this stays for callers that match prefixes)
TAG_PREFIXES = fields_with_role(BOOKKEEPING)


def mask_uri(text: str) -> str:
    """``scheme://user:token@host/...`` → ``scheme://***@host/...`` anywhere in ``text``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return mask_uri(json.dumps(value, sort_keys=True))
    return mask_uri(str(value))


def _accelerator_key(cfg: ExperimentConfig) -> str | None:
    """The cost-table key of this run's accelerator; None when only the GPU workers can tell (a driver
    without a GPU, cost.accelerator=auto). Matches the table's own keys (longest first: H200 before H20)."""
    if cfg.cost.accelerator != "auto":
        return cfg.cost.accelerator
    if not cfg.train.use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0).upper()
    keys = sorted({*cfg.cost.price_per_hour, *cfg.cost.peak_tflops}, key=len, reverse=True)
    return next((k for k in keys if k != "cpu" and k.upper() in name), name)


def config_params(cfg: ExperimentConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) of a run: the flattened config as hyper-parameters, bookkeeping fields as tags.

    The price and peak tables are reduced to this run's accelerator (``cost.price_per_hour`` = its USD/h,
    ``cost.peak_tflops`` = its peak); URIs never carry credentials (user:token@ is masked)."""
    flat = cfg.to_flat()
    acc = _accelerator_key(cfg)
    for table in ("cost.price_per_hour", "cost.peak_tflops"):
        entries = flat.pop(table, {}) or {}
        if acc is not None:
            flat[table] = entries.get(acc, "none")
    if acc is not None and cfg.cost.accelerator == "auto":
        flat["cost.accelerator"] = f"auto ({acc})"
    params, tags = {}, {}
    for key, value in flat.items():
        if is_tag(key):
            if value is not None:  # an unset bookkeeping field says nothing
                tags[key] = param_value(value)[:6000]
        else:
            params[key] = param_value(value)[:6000]
    return params, tags



def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def end_run(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> None:
    """End an existing run by id (e.g. a sweep's child run of a trial that ASHA stopped); never fails."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=resolve_tracking_uri(cfg)).set_terminated(run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - tracking must not kill the caller
        log.warning("could not end MLflow run %s as %s: %s", run_id, status, exc)




def metric_histories(cfg: ExperimentConfig, run_id: str, keys) -> dict[str, dict[int, float]]:
    """Per key, the run's logged values by step (the last one logged at a step wins). Raises when the
    tracking server cannot be read: the caller decides what that means."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=resolve_tracking_uri(cfg))
    return {key: {m.step: m.value for m in c.get_metric_history(run_id, key)} for key in keys}


def log_points(cfg: ExperimentConfig, run_id: str, metrics: dict[str, float], step: int,
               tags: dict[str, str] | None = None) -> None:
    """Log ``metrics`` at ``step`` (and ``tags``) into an existing run by id, leaving its status as it is:
    for a writer beside the run's own tracker (an evaluation during training, which may finish after the
    run has ended). Raises on failure: the caller decides what a lost point means."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    MlflowClient(tracking_uri=resolve_tracking_uri(cfg)).log_batch(
        run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
