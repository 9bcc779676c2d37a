"""Pre-flight: refuse what cannot work before anything is launched or billed.

Design trade-off: two kinds of checks, run at two moments. ``check_inputs`` needs no Ray and runs
first (before Ray starts and before any MLflow run exists): every input a worker will open — data,
token cache, tokenizer weights, I3D file, text encoder — must be package data or reachable under a
location every node can read; with a remote storage root, a path on the driver's disk is refused
(on a real cluster no worker could open it). ``check_resources`` runs once connected: the request
the config makes (``ScalingConfig`` exactly as configured) must be satisfiable by the cluster's
*declared* node types (``arvid_ray.node_types``: what the cluster can scale to, never the nodes that
happen to be up, which on a cluster scaled to zero have no GPU); a cluster that declares nothing is
left to its autoscaler (a warning, and the bounded resource wait). Sizing (concurrent trials, where
trial drivers run) is derived from the same declared types.
"""

from __future__ import annotations

import logging
import math
import os

from arvid_ray import storage as st
from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.node_types import (  # node-type discovery lives there; these names stay importable here
    AUTOSCALING_CONFIG_ENV,
    RAYCLUSTER_ENV,
    RAYCLUSTER_NAMESPACE_ENV,
    NodeType,
    _describe,
    _from_yaml,  # noqa: F401 - the old home of a launcher YAML reader tests use
    declared_node_types,
    describe,
    from_ray_cluster,
    planned_node_types,
)

__all__ = ["PreflightError", "NodeType", "check_inputs", "declared_node_types", "check_resources",
           "worker_request", "max_concurrent_trials", "driver_resources", "AUTOSCALING_CONFIG_ENV",
           "DRIVER_RESOURCE", "RAYCLUSTER_ENV", "RAYCLUSTER_NAMESPACE_ENV", "from_ray_cluster",
           "planned_node_types", "describe", "pin_accelerator", "accelerators"]

log = logging.getLogger(__name__)

DRIVER_RESOURCE = "arvid_driver"  # declared by non-preemptible node types in cluster/*.yaml
_BUILTIN_TOKENIZERS = ("builtin", "fsq")
_BUILTIN_TEXT = ("hashing", "minilm")


class PreflightError(ConfigError):
    """A run cannot start; the message names the config field and the fix. Nothing was launched."""


# ------------------------------------------------------------------------------------------ inputs
def _inputs(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(field, location) of every file or dataset a worker opens, package data excluded."""
    out: list[tuple[str, str]] = []
    if cfg.data.source != "synthetic":
        out.append(("data.source", cfg.data.source))
    if cfg.data.tokens_path:
        out.append(("data.tokens_path", cfg.data.tokens_path))
    if cfg.tokenizer.name not in _BUILTIN_TOKENIZERS:
        out.append(("tokenizer.name", cfg.tokenizer.name))
    if cfg.eval.extractor == "i3d":
        path = cfg.eval.i3d_path or os.environ.get("ARVID_I3D_PATH")
        if not path:
            raise PreflightError("eval.extractor=i3d but neither eval.i3d_path nor ARVID_I3D_PATH names the I3D "
                                 "TorchScript file; set one, or use eval.extractor=synthc3d sweep.metric=eval/fd_synthc3d")
        out.append(("eval.i3d_path", path))
    if cfg.model.conditioning == "text" and cfg.model.text_encoder not in _BUILTIN_TEXT:
        out.append(("model.text_encoder", cfg.model.text_encoder))
    return out


def _reachable(location: str, cfg: ExperimentConfig) -> bool:
    try:
        return st.exists(location, cfg.storage)
    except (OSError, st.StorageError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__
        raise PreflightError(f"cannot reach {location!r} ({exc.__class__.__name__}: {first}); check the URI, "
                             f"storage.s3_endpoint / storage.gcs_endpoint and the credentials in the "
                             f"environment") from exc


def check_inputs(cfg: ExperimentConfig, cluster: bool = False) -> None:
    """Every input exists and every node can read it; no Ray needed.

    ``cluster``: the run goes to a Ray cluster (RAY_ADDRESS / a remote storage root) — then a local path
    is accepted only under a local (shared-mount) storage root."""
    _check_tracking(cfg)
    root = st.storage_root(cfg)
    remote_root = st.is_remote(root)
    if remote_root:
        bucket = root.split("://", 1)[1].split("/", 1)[0]
        if not _reachable(f"{st.scheme(root)}://{bucket}", cfg):
            raise PreflightError(f"storage.root={root!r}: bucket {bucket!r} does not exist or is not visible "
                                 f"with these credentials; create it or point storage.root (or ARVID_STORAGE) "
                                 f"at a bucket the cluster can write")
    shared_local = not remote_root and cluster
    for name, location in _inputs(cfg):
        if not st.is_remote(location):
            local = st.absolute(location)
            if remote_root or (shared_local and not local.startswith(root.rstrip("/") + "/")):
                where = f"storage.root={root!r}" if remote_root else f"the shared storage root {root!r}"
                raise PreflightError(
                    f"{name}={location!r} is a path on the driver's disk, which cluster workers cannot read; "
                    f"put it under {where} (e.g. `arvid-ray ingest` / `arvid-ray tokenize` with an s3:// or "
                    f"gs:// output, or copy the file there) and pass that URI")
        if not _reachable(location, cfg):
            raise PreflightError(f"{name}={location!r} does not exist; "
                                 + _fix_for(name))


def _check_tracking(cfg: ExperimentConfig) -> None:
    """MLflow 3 refuses a directory store (``file://`` or a bare path) unless MLFLOW_ALLOW_FILE_STORE is
    set; say so now, naming the field, instead of after the data is prepared."""
    from urllib.parse import urlparse

    from arvid_ray.tracking.server import resolve_tracking_uri

    if not cfg.tracking.enabled or os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
        return
    uri = resolve_tracking_uri(cfg)
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file") or uri == "databricks":
        return
    field = "tracking.uri" if cfg.tracking.uri else "MLFLOW_TRACKING_URI"
    path = (urlparse(uri).path if scheme else uri).rstrip("/") or "."
    raise PreflightError(f"{field}={uri!r} is an MLflow directory store, which MLflow 3 no longer opens; use a "
                         f"database file (tracking.uri=sqlite:///{path}.db), a server (http://host:5000), or set "
                         f"MLFLOW_ALLOW_FILE_STORE=true to keep it")


def _fix_for(name: str) -> str:
    return {
        "data.source": "use 'synthetic', a folder written by `arvid-ray ingest` (local, s3:// or gs://), or "
                       "its videos.parquet",
        "data.tokens_path": "create it with `arvid-ray tokenize` or leave data.tokens_path unset",
        "tokenizer.name": "use 'builtin', 'fsq' or the path/URI of a tokenizer checkpoint (.pt)",
        "eval.i3d_path": "point it at the I3D TorchScript file (local path or URI)",
        "model.text_encoder": "use 'hashing', 'minilm' or a Hugging Face model directory",
    }[name]


def worker_request(cfg: ExperimentConfig) -> dict[str, float]:
    """What one Ray Train worker asks for (exactly what ScalingConfig will ask)."""
    t = cfg.train
    req = {"CPU": float(t.cpus_per_worker), **{k: float(v) for k, v in t.resources_per_worker.items()}}
    if t.use_gpu:
        req["GPU"] = float(t.resources_per_worker.get("GPU", 1.0))
    if t.accelerator_type:
        req[f"accelerator_type:{t.accelerator_type}"] = 0.001
    return req


def _fits(resources: dict[str, float], req: dict[str, float]) -> int:
    """How many of ``req`` one node with ``resources`` hosts."""
    counts = [math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in req.items() if v > 0]
    return min(counts) if counts else 1


def _worker_slots(types: list[NodeType], req: dict[str, float]) -> float:
    total = 0.0
    for t in types:
        per = _fits(t.resources, req)
        if per and t.max_count < 0:
            return math.inf
        total += per * t.max_count
    return total


def check_resources(cfg: ExperimentConfig, types: list[NodeType] | None = None) -> list[NodeType]:
    """The trial's workers fit the declared node types; else one message naming the fields."""
    if cfg.train.num_workers == 0:
        return types or []
    types = types if types is not None else declared_node_types()
    req = worker_request(cfg)
    slots = _worker_slots(types, req)
    wanted = ", ".join(f"{k}: {v:g}" for k, v in req.items())
    if types and not all(t.declared for t in types):  # nothing to check against: say so, never refuse
        now = "can host them now" if slots >= cfg.train.num_workers else "cannot host them now"
        log.warning("this cluster declares no node types (no autoscaler config in the GCS, no %s, no "
                    "~/ray_bootstrap_config.yaml, no readable RayCluster); its live nodes (%s) %s; the autoscaler "
                    "decides whether train.num_workers=%d workers of {%s} can run: a request it cannot meet fails "
                    "the trial after train.resource_timeout_s=%gs", AUTOSCALING_CONFIG_ENV, _describe(types), now,
                    cfg.train.num_workers, wanted, cfg.train.resource_timeout_s)
        return types
    if slots >= cfg.train.num_workers:
        return types
    kind = "static nodes" if types and all(t.static for t in types) else "declared node types"
    if cfg.train.use_gpu and not any(t.resources.get("GPU", 0) for t in types):
        hint = ("train.use_gpu=true but no node type of this cluster has a GPU; set train.use_gpu=false "
                "(CPU workers, gloo) or add a GPU worker type to the cluster config")
    elif cfg.train.accelerator_type and not slots:
        hint = (f"no node type offers train.accelerator_type={cfg.train.accelerator_type!r}; unset it or "
                f"use one the cluster declares")
    else:
        hint = ("lower train.num_workers / train.cpus_per_worker / train.resources_per_worker, or raise the "
                "cluster's max_workers")
    raise PreflightError(f"the cluster cannot host train.num_workers={cfg.train.num_workers} workers of "
                         f"{{{wanted}}} (room for {slots:g}; {kind}: {_describe(types)}): {hint}")


def accelerators(t: NodeType) -> set[str]:
    """The accelerator types a node type declares (Ray's ``accelerator_type:<name>`` resources)."""
    return {k.split(":", 1)[1] for k in t.resources if k.startswith("accelerator_type:")}


def pin_accelerator(cfg: ExperimentConfig, types: list[NodeType]) -> ExperimentConfig:
    """One accelerator per sweep. ``train.accelerator_type`` when set; else, when the GPU node types that
    can host a trial carry more than one accelerator, the cheapest of them in ``cost.price_per_hour`` that
    hosts all ``train.num_workers`` (trials on mixed accelerators would count unlike hours alike). The
    chosen type also prices ``cost/usd`` (``cost.accelerator``, when 'auto'). Refused when the choice
    cannot be made from the table."""
    if not cfg.train.use_gpu or cfg.train.num_workers == 0 or not all(t.declared for t in types):
        return cfg  # undeclared: the autoscaler decides (check_resources warned)
    chosen = cfg.train.accelerator_type
    if not chosen:
        req = worker_request(cfg)
        hosts = [t for t in types if t.resources.get("GPU", 0) and _fits(t.resources, req)]
        kinds = {a for t in hosts for a in accelerators(t)}
        mixed = len(kinds) > 1 or (kinds and any(not accelerators(t) for t in hosts))
        if len(hosts) > 1 and not kinds:
            raise PreflightError(
                f"this cluster has several GPU node types that can host a trial ({_describe(hosts)}) and none "
                f"declares its accelerator, so a sweep could mix them (cost/usd and gpu-hours would count unlike "
                f"hours alike): set train.accelerator_type and declare accelerator_type:<name> in each GPU node "
                f"type's resources")
        if mixed:
            prices = cfg.cost.price_per_hour
            enough = sorted((float(prices[a]), a) for a in kinds if a in prices
                            and _worker_slots([t for t in hosts if a in accelerators(t)],
                                              {**req, f"accelerator_type:{a}": 0.001}) >= cfg.train.num_workers)
            if not enough:
                raise PreflightError(
                    f"this cluster's GPU node types carry different accelerators ({', '.join(sorted(kinds))}) and "
                    f"none priced in cost.price_per_hour hosts train.num_workers={cfg.train.num_workers}; set "
                    f"train.accelerator_type to one of them, or add its price to cost.price_per_hour")
            chosen = enough[0][1]
            log.info("train.accelerator_type=%s: the cheapest accelerator in cost.price_per_hour (of %s) that "
                     "hosts %d workers; every trial of this sweep runs on it", chosen, ", ".join(sorted(kinds)),
                     cfg.train.num_workers)
        elif len(kinds) == 1:
            chosen = next(iter(kinds))
    if not chosen:
        return cfg
    changes = {"train.accelerator_type": chosen}
    if cfg.cost.accelerator == "auto":
        changes["cost.accelerator"] = chosen
    return cfg.replace(**changes)


def max_concurrent_trials(cfg: ExperimentConfig, types: list[NodeType], driver_cpus: float) -> int:
    """sweep.max_concurrent_trials, else how many trials' worker groups the declared types can host
    at once (CPU-only single machine: leaving one CPU for Ray Data, which starves otherwise)."""
    if cfg.sweep.max_concurrent_trials:
        return cfg.sweep.max_concurrent_trials
    workers = max(1, cfg.train.num_workers)
    req = worker_request(cfg)
    if not cfg.train.use_gpu and not cfg.train.resources_per_worker and len(types) == 1:
        cpus = types[0].resources.get("CPU", 1.0)
        if types[0].static:  # a local instance may advertise more logical CPUs than cores exist
            cpus = min(cpus, float(os.cpu_count() or cpus))
        return max(1, int((cpus - 1.0) // (driver_cpus + workers * cfg.train.cpus_per_worker)))
    slots = _worker_slots(types, req)
    return max(1, min(64, int(slots // workers) if math.isfinite(slots) else 64))


def driver_resources(cfg: ExperimentConfig, types: list[NodeType]) -> dict[str, float]:
    """Custom resources that pin trial drivers to non-preemptible nodes (Ray's Train+Tune guidance):
    ``sweep.driver_resource`` if set ('' = no pinning), else ``arvid_driver`` when a node type declares
    it, else the head node on a multi-node cluster."""
    name = cfg.sweep.driver_resource
    if name is None:
        if any(DRIVER_RESOURCE in t.resources for t in types):
            name = DRIVER_RESOURCE
        elif len(types) > 1 or any(t.max_count != 1 or not t.declared for t in types):
            name = "node:__internal_head__"
        else:
            name = ""
    if not name:
        return {}
    if not any(name in t.resources for t in types) and not name.startswith("node:"):
        raise PreflightError(f"sweep.driver_resource={name!r} is declared by no node type ({_describe(types)}); "
                             f"add it to a non-preemptible node type's resources or set sweep.driver_resource=''")
    return {name: 0.001}
