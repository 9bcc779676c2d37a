"""The dry run: every pre-flight check a sweep makes, and what it would launch, starting nothing.

Design trade-off: the dry run calls the very checks the launch runs (inputs, storage, search space,
metrics, batch divisibility, declared node types, accelerator, trial-driver placement) but collects
their refusals instead of stopping at the first, so one run names every problem; it starts no trial,
no MLflow run and no local Ray (a tracking server is asked for its /health page only), so it is safe
to run against a cluster's declared node types before any spend.
"""

from __future__ import annotations

import sys
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.sweep.driver import DRIVER_CPUS
from arvid_ray.sweep.space import check_batch, check_metrics, check_sweep, trial_overrides
from arvid_ray.sweep.state import fresh_sweep_name, sweep_storage
from arvid_ray.sweep.tuner import tracking_uri


def _tracking_refusal(cfg: ExperimentConfig) -> str | None:
    """A tracking server that does not answer its /health page (no MLflow import, no run created)."""
    import urllib.error
    import urllib.request

    if not cfg.tracking.enabled:
        return None
    uri = tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10):
            return None
    except urllib.error.HTTPError as exc:  # it answers (auth, proxies): reachable
        return None if exc.code < 500 else f"tracking server {uri} answers {exc.code} on /health"
    except OSError as exc:
        return (f"tracking server {uri} (tracking.uri / MLFLOW_TRACKING_URI) does not answer ({exc}); start it "
                f"or forward its port, or set tracking.uri=sqlite:///<absolute path>.db")


def _trials_line(cfg: ExperimentConfig, rows: list[dict[str, Any]] | None, check) -> str | None:
    """What the trials would be (searched points, or one per row), after checking them."""
    if rows is not None:
        check(check_metrics, cfg)
        for row in rows:
            if (row_cfg := check(ExperimentConfig.from_flat, trial_overrides(row), base=cfg)) is not None:
                check(check_batch, row_cfg)
        return f"trials: {len(rows)} (one per row)"
    if check(check_sweep, cfg) is None:
        return None
    sw = cfg.sweep
    return (f"trials: {sw.num_samples + int(sw.include_baseline)} ({sw.num_samples} sampled over "
            f"{', '.join(sw.search_space) or 'nothing'}{' + the baseline' if sw.include_baseline else ''}), "
            f"quality {sw.metric}, cost {sw.cost_metric}")


def _cluster_lines(cfg: ExperimentConfig, num_cpus: int | None, check) -> list[str]:
    """The node types the sweep would run on, its accelerator and what one trial asks for."""
    from arvid_ray import preflight

    types = check(preflight.planned_node_types, num_cpus)
    if types is None:
        return []
    kind = "declared" if all(t.declared for t in types) else "NOT declared (live nodes; the autoscaler decides)"
    lines = [f"node types ({kind}): {preflight.describe(types)}"]
    if check(preflight.check_resources, cfg, types) is None:
        return lines
    cfg = check(preflight.pin_accelerator, cfg, types) or cfg
    if cfg.train.accelerator_type:
        price = cfg.cost.price_per_hour.get(cfg.train.accelerator_type)
        lines.append(f"accelerator: {cfg.train.accelerator_type} for every trial"
                     + (f", ${price:g}/h per device in cost.price_per_hour" if price is not None else ""))
    request = preflight.worker_request(cfg)
    driver = check(preflight.driver_resources, cfg, types)
    concurrent = preflight.max_concurrent_trials(cfg, types, DRIVER_CPUS)
    lines.append(f"per trial: {cfg.train.num_workers} Train workers x "
                 f"{{{', '.join(f'{k}: {v:g}' for k, v in request.items())}}}, driver "
                 f"{{CPU: {DRIVER_CPUS:g}{''.join(f', {k}: {v:g}' for k, v in (driver or {}).items())}}}; "
                 f"at most {concurrent} trials at once")
    return lines


def dry_run(cfg: ExperimentConfig, *, cluster: bool, num_cpus: int | None = None,
            rows: list[dict[str, Any]] | None = None) -> tuple[list[str], list[str]]:
    """Every pre-flight check a sweep makes — inputs, storage reachability and region, search space,
    declared node types and accelerator, trial-driver placement, tracking server — and what it would
    launch, starting no trial, no MLflow run and no local Ray. Returns (plan lines, refusals); callers
    exit 0 with no refusal, else 2."""
    from arvid_ray import preflight
    from arvid_ray import storage as st

    plan: list[str] = []
    refused: list[str] = []

    def check(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            refused.append(str(exc))
            return None

    cfg = cfg.replace(**{"storage.root": st.storage_root(cfg)})
    root = cfg.storage.root
    check(preflight.check_inputs, cfg, cluster=cluster)
    where = root
    if st.scheme(root) == "s3" and not refused:
        where += f" (region {st.resolve(root, cfg.storage)[0].region})"
    plan.append(f"storage root: {where}")
    storage = sweep_storage(cfg)
    if not refused:
        cfg = fresh_sweep_name(cfg, storage)
    plan.append(f"sweep: {cfg.sweep.name} under {storage} (Tune state, checkpoints)")
    if cfg.data.source == "synthetic":
        plan.append(f"data: built-in synthetic, {cfg.synth.num_videos} videos rendered once under "
                    f"{st.join(root, 'synthetic')}")
    else:
        plan.append(f"data: {cfg.data.source}" + (f", token cache {cfg.data.tokens_path}" if cfg.data.tokens_path else ""))
    if (line := _trials_line(cfg, rows, check)) is not None:
        plan.append(line)
    if (problem := _tracking_refusal(cfg)) is not None:
        refused.append(problem)
    plan.append(f"tracking: {tracking_uri(cfg) if cfg.tracking.enabled else 'off'}")
    plan += _cluster_lines(cfg, num_cpus, check)
    return plan, refused


def print_dry_run(prog: str, plan: list[str], refused: list[str]) -> int:
    """Print a dry run's plan, then its refusals; the exit code (0 would launch, 2 refused)."""
    print(f"{prog} --dry-run: nothing was started")
    for line in plan:
        print(f"  {line}")
    for line in refused:
        print(f"{prog}: refused: {line}", file=sys.stderr)
    print(f"  => {'would launch' if not refused else f'refused ({len(refused)})'}")
    return 2 if refused else 0
