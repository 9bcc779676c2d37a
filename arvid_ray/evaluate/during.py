"""Quality during training, off the training path (``eval.quality_every``).

At every ``eval.quality_every`` steps (and at the last step) rank 0 of a Train run submits one Ray task
per checkpoint — after Ray Train has persisted it — and goes on training. The task has resources of its
own (``eval.quality_cpus``, a GPU when training uses GPUs), reads the checkpoint from storage (local or
object storage), samples ``eval.quality_videos`` videos at training length and logs, into the trial's
MLflow run at the checkpoint's step:

- ``quality/<metric>`` (the eval.extractor's distance, e.g. quality/fd_synthc3d or quality/fvd), its
  floor, KVD and consistency, ``quality/traj_error`` on the synthetic data, ``quality/num_videos``;
- ``quality/cost_gpu_hours`` and ``quality/cost_usd``: the training cost at that checkpoint (what
  training had spent when it was saved), so the MLflow UI charts quality against cost;
- ``quality/eval_s``: the evaluation's own wall time — evaluation cost, never counted as training cost.

Design trade-off: the task logs its point itself (by run id, leaving the run's status alone) instead of
handing it back to rank 0, so a point computed after the run ended still lands. Ray ties a task's fate
to its owner, so rank 0 waits for its pending evaluations after the last training step (bounded; the
training steps never wait). A lost evaluator — a dead node, an exception — is logged and tagged
(``arvid.quality_lost``), never fails the trial. The prompts and sampling seeds are the same at every
evaluation, so the curve moves with the weights, not with the draw.

The sweep also prunes on these points (``sweep.prune_on=quality``): rank 0 collects each finished
evaluation's metrics without waiting, and ``QualityWatch.take`` hands them over once each, in step order,
with the checkpoint's step as ``quality/step``; the RayReporter adds them to its next report to Ray (never
to the tracker: the task already logged them at the checkpoint's step), and ASHA compares them at that
step (arvid_ray.sweep.space.asha_target).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.evaluate import rollouts
from arvid_ray.evaluate.run import load_for_eval, sample_and_score

__all__ = ["PREFIX", "STEP_KEY", "quality_metrics", "quality_job", "QualityWatch", "checkpoint_uri"]

log = logging.getLogger(__name__)

PREFIX = "quality/"
STEP_KEY = PREFIX + "step"  # in a handed-over point: the step of the checkpoint it was measured on


def quality_metrics(cfg: ExperimentConfig, model, tokenizer, extractor=None) -> dict[str, float]:
    """One point of the quality curve: ``eval.quality_videos`` videos at training length against real
    clips (the final evaluation's metrics under ``quality/``, without the long rollouts and files)."""
    from arvid_ray.metrics.extractors import load_extractor

    n = cfg.eval.quality_videos or cfg.eval.num_videos
    model = getattr(model, "module", model)  # DDP / Ray prepare_model wrapper
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    device = next(model.parameters()).device
    extractor = extractor or load_extractor(cfg.eval.extractor, cfg.eval.i3d_path, device=device)
    metrics, clips, *_ = sample_and_score(cfg, model, tokenizer, extractor, n)
    if clips.positions is not None and cfg.eval.trajectory_videos:
        metrics["eval/traj_error"] = rollouts.prompted_trajectory_error(model, tokenizer, cfg, clips,
                                                                        min(n, cfg.eval.trajectory_videos))
    return {PREFIX + key.split("/", 1)[1]: value for key, value in metrics.items()}


def checkpoint_uri(cfg: ExperimentConfig, step: int) -> str:
    """Where Ray Train persists the run's checkpoint of ``step`` (its storage path / run name / step_N)."""
    from arvid_ray import storage as st
    from arvid_ray.runs import run_location
    from arvid_ray.train.checkpoint import checkpoint_name

    return st.join(run_location(cfg), checkpoint_name(step))


def _fetch(uri: str, cfg: ExperimentConfig) -> tuple[Path, Path | None]:
    """A local directory holding the checkpoint at ``uri`` (downloaded when it is remote)."""
    from arvid_ray import storage as st

    if not st.is_remote(uri):
        return Path(st.absolute(uri)), None
    import pyarrow.fs as pafs

    filesystem, path = st.resolve(uri, cfg.storage)
    tmp = Path(tempfile.mkdtemp(prefix="arvid-quality-"))
    pafs.copy_files(path, str(tmp / "ckpt"), source_filesystem=filesystem,
                    destination_filesystem=pafs.LocalFileSystem())
    return tmp / "ckpt", tmp


def _exists(uri: str, cfg: ExperimentConfig) -> bool:
    """Is there a checkpoint directory at ``uri`` (local or object storage)?"""
    from arvid_ray import storage as st

    if not st.is_remote(uri):
        return Path(st.absolute(uri)).is_dir()
    import pyarrow.fs as pafs

    filesystem, path = st.resolve(uri, cfg.storage)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def quality_job(cfg: ExperimentConfig, uri: str, step: int, train_cost: dict[str, float],
                run_id: str | None) -> dict[str, float]:
    """Evaluate the checkpoint at ``uri`` and log the point into run ``run_id`` at ``step`` (the body of
    the Ray task; also callable in-process)."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, int(cfg.eval.quality_cpus)))
    local, tmp = _fetch(uri, cfg)
    try:
        device = "cuda" if torch.cuda.is_available() and cfg.train.device == "auto" else "cpu"
        tokenizer, model, _ = load_for_eval(cfg, local, device)
        model.eval()
        metrics = quality_metrics(cfg, model, tokenizer)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    metrics[PREFIX + "cost_gpu_hours"] = float(train_cost.get("cost/gpu_hours", float("nan")))
    metrics[PREFIX + "cost_usd"] = float(train_cost.get("cost/usd", float("nan")))
    metrics[PREFIX + "eval_s"] = time.perf_counter() - t0
    metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}
    if run_id and cfg.tracking.enabled:
        from arvid_ray.tracking.server import log_points

        log_points(cfg, run_id, metrics, step)
    log.info("quality at step %d (N=%d): %s", step, int(metrics.get(PREFIX + "num_videos", 0)),
             ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


class QualityWatch:
    """Rank 0's evaluations during training: ``after_checkpoint`` submits one and returns at once;
    ``poll`` collects the ended ones, ``take`` hands each finished point over once (for Ray Tune);
    ``finish`` waits for the pending ones after the last step, at most ``timeout_s``."""

    def __init__(self, cfg: ExperimentConfig, run_id: str | None, tracker=None, *, inline: bool = False,
                 job: Callable[..., dict[str, float]] = quality_job):
        self.cfg, self.run_id, self.tracker, self.inline = cfg, run_id, tracker, inline  # inline: no Ray
        self.job = job  # quality_job's signature; another only in tests (an evaluator that dies)
        self.pending: dict[Any, int] = {}  # Ray object ref -> step
        self.lost: dict[int, str] = {}
        # finished points not yet taken (Ray mode only: inline, in one process without Ray, nothing takes them)
        self.finished: dict[int, dict[str, float]] = {}
        self._taken_step = -1  # the step of the last point handed over
        self._task = None

    def due(self, step: int, last: bool = False) -> bool:
        """At every eval.quality_every steps and at the run's last step (train.steps, or where its budget
        stopped it: ``last``)."""
        every = self.cfg.eval.quality_every
        return every > 0 and (step % every == 0 or step == self.cfg.train.steps or last)

    def after_checkpoint(self, step: int, metrics: dict[str, float], uri: str | None = None) -> None:
        """Submit the evaluation of the checkpoint of ``step`` (already persisted by Ray Train; ``uri``
        where it is, default :func:`checkpoint_uri`). Inline (one process, no Ray): evaluate it now."""
        if not self.due(step, last=metrics.get("train/budget_stop", 0.0) > 0):
            return
        cost = {k: float(metrics[k]) for k in ("cost/gpu_hours", "cost/usd") if k in metrics}
        self._submit(step, uri or checkpoint_uri(self.cfg, step), cost)

    def recover(self, resumed_step: int) -> list[int]:
        """After a restart from the checkpoint of ``resumed_step``: the evaluations of the earlier attempt that
        never logged their point (Ray ends a task with its owner, the old rank 0) are submitted again when
        their checkpoint is still kept, with the training cost the run logged at that step; the others are
        recorded as lost (tagged at ``finish``). Returns the steps submitted again."""
        every = self.cfg.eval.quality_every
        if every <= 0 or resumed_step <= 0 or not self.run_id:
            return []
        due = [s for s in range(every, resumed_step + 1, every)]
        if resumed_step not in due:
            due.append(resumed_step)  # a last step (budget) or train.steps that is not a multiple
        try:
            logged, costs = self._history()
        except Exception as exc:  # noqa: BLE001 - the tracking server may be away: nothing to compare with
            log.warning("could not read the run's earlier evaluations to recover lost ones: %s", exc)
            return []
        again = []
        for step in due:
            if step in logged:
                continue
            uri = checkpoint_uri(self.cfg, step)
            if step not in costs or not _exists(uri, self.cfg):
                self.lost[step] = ("its evaluation ended with the attempt that submitted it, and "
                                   + ("its checkpoint is no longer kept" if step in costs
                                      else "the run logged no training cost at that step"))
                continue
            self._submit(step, uri, costs[step])
            again.append(step)
        if again:
            log.info("evaluations lost with the previous attempt submitted again for steps %s", again)
        return again

    def _history(self) -> tuple[set[int], dict[int, dict[str, float]]]:
        """(steps with a quality point, {step: training cost logged at it}) from the run's MLflow history."""
        from arvid_ray.tracking.server import metric_histories

        history = metric_histories(self.cfg, self.run_id, (PREFIX + "eval_s", "cost/gpu_hours", "cost/usd"))
        costs: dict[int, dict[str, float]] = {}
        for key in ("cost/gpu_hours", "cost/usd"):
            for step, value in history[key].items():
                costs.setdefault(step, {})[key] = value
        return set(history[PREFIX + "eval_s"]), costs

    def _submit(self, step: int, uri: str, cost: dict[str, float]) -> None:
        if self.inline:
            try:
                self.job(self.cfg, uri, step, cost, self.run_id)  # logged by the job; no Tune to hand it to
            except Exception as exc:  # noqa: BLE001 - a failed evaluation never fails the run
                self.lost[step] = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("evaluation of the checkpoint of step %d failed: %s", step, self.lost[step])
            return
        import ray

        if self._task is None:
            gpus = 1 if self.cfg.train.use_gpu and self.cfg.train.device == "auto" else 0
            # "DEFAULT": outside the trial's placement group — Tune has its trainables capture child tasks,
            # and the trial's bundles are all held by its own workers, so a captured task would never start
            self._task = ray.remote(num_cpus=self.cfg.eval.quality_cpus, num_gpus=gpus, max_retries=0,
                                    scheduling_strategy="DEFAULT")(self.job)
        ref = self._task.remote(self.cfg, uri, step, cost, self.run_id)
        self.pending[ref] = step
        self.poll()

    def poll(self) -> None:
        """Collect the evaluations that have ended (no waiting)."""
        if not self.pending:
            return
        import ray

        ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        for ref in ready:
            self._collect(ref)

    def _collect(self, ref) -> None:
        import ray

        step = self.pending.pop(ref)
        try:
            metrics = ray.get(ref)  # the task logged its point itself; kept here only for take()
            if metrics and step > self._taken_step:
                self.finished[step] = dict(metrics)
        except Exception as exc:  # noqa: BLE001 - a lost evaluator never fails the trial
            lines = [line for line in str(exc).splitlines() if line.strip()]  # a task error's last line says what
            self.lost[step] = f"{type(exc).__name__}: {lines[-1].strip() if lines else ''}"[:300]
            log.warning("evaluation of the checkpoint of step %d was lost: %s", step, self.lost[step])

    def take(self) -> dict[str, float] | None:
        """The oldest finished point not yet handed over (with its checkpoint's step as ``quality/step``),
        or None; each point once, steps increasing: a point older than one already handed over (its
        evaluation ended late) is dropped, so ASHA's time attribute never goes back."""
        for step in sorted(self.finished):
            metrics = self.finished.pop(step)
            if step > self._taken_step:
                self._taken_step = step
                return {**metrics, STEP_KEY: float(step)}
        return None

    def finish(self, timeout_s: float | None = None) -> None:
        """Wait for the pending evaluations (at most ``timeout_s``; default: 4 minutes per pending one,
        or ARVID_QUALITY_WAIT_S), then tag the run with any that were lost or cut off."""
        if self.inline or not self.pending:
            self._tag_lost()
            return
        import ray

        if timeout_s is None:
            timeout_s = float(os.environ.get("ARVID_QUALITY_WAIT_S", 240 * max(1, len(self.pending))))
        deadline = time.monotonic() + timeout_s
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=left)
            for ref in ready:
                self._collect(ref)
        for ref, step in list(self.pending.items()):
            ray.cancel(ref, force=True)
            self.lost[step] = f"not finished within {timeout_s:.0f} s after training"
            self.pending.pop(ref)
        self._tag_lost()

    def _tag_lost(self) -> None:
        if self.lost and self.tracker is not None:
            self.tracker.set_tags({"arvid.quality_lost": "; ".join(f"step {s}: {why}"
                                                                   for s, why in sorted(self.lost.items()))})
