"""The evaluation run: checkpoint → N sampled videos → Fréchet distance, consistency, drift → run artifacts.

Design trade-off: one function (``evaluate_model``) scores a model in memory, so the end-of-training hook
(``final_eval``, rank 0 inside a Train worker) and a separate evaluation of a saved checkpoint
(``evaluate_checkpoint``, in this process or as one Ray task that asks for a GPU when the configuration
does) produce the same metrics, files and MLflow names. An evaluation of a checkpoint logs into a run of
its own, tagged with the training run it scores; the training run is never touched.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.evaluate import rollouts
from arvid_ray.evaluate.reference import real_clips, real_features
from arvid_ray.evaluate.rollouts import evaluate_videos, metric_names, reconstruction_fd

__all__ = ["evaluate_model", "evaluate_checkpoint", "final_eval", "MIN_FD_N"]

log = logging.getLogger(__name__)


MIN_FD_N = 8  # below this many videos per side a Fréchet distance is mostly noise (covariance rank < N)


def _warn_small_n(metrics: dict[str, float], fd_key: str) -> list[str]:
    """One warning naming every distribution metric computed from fewer than MIN_FD_N videos (with its N)."""
    pairs = [(fd_key, "eval/num_videos"), ("eval/fd_floor", "eval/fd_floor_n"),
             ("eval/drift_floor", "eval/drift_floor_n")]
    pairs += [(k, "eval/drift_n") for k in metrics if k.startswith("eval/drift_") and k.endswith("x")]
    small = [f"{key} N={int(metrics[n_key])}" for key, n_key in pairs
             if key in metrics and n_key in metrics and metrics[n_key] < MIN_FD_N]
    if small:
        log.warning("too few videos to mean much (< %d per side): %s — read these as rough; raise "
                    "eval.num_videos / eval.drift_videos or add real videos", MIN_FD_N, ", ".join(small))
    return small


def _write_samples(videos: np.ndarray, out_dir: Path, stem: str, count: int, fps: int) -> None:
    from arvid_ray.video.io import write_gif_grid, write_mp4

    if count <= 0:  # eval.num_sample_videos=0: metrics only, no sample files
        return
    for i, video in enumerate(videos[:count]):
        write_mp4(video, out_dir / "samples" / f"{stem}_{i:02d}.mp4", fps=fps)
    write_gif_grid(list(videos[:count]), out_dir / "samples" / f"{stem}_grid.gif", fps=fps)


def _log_files(cfg: ExperimentConfig, tracker, out_dir: Path, files: list[Path], extractor) -> None:
    """Samples, plots and metrics.json as run artifacts: into ``tracker``, or into cfg.tracking.run_id
    (the training run that called the evaluation hook; it logs the returned metrics itself)."""
    if tracker is None and cfg.tracking.enabled and cfg.tracking.run_id:
        from arvid_ray.tracking import Tracker

        tracker = Tracker(cfg.replace(**{"tracking.system_metrics": False}))
        tracker.start(run_id=cfg.tracking.run_id)
    if tracker is None:
        return
    tracker.set_tags({"eval.extractor": extractor.id, "eval.extractor_sha256": extractor.sha256})
    tracker.log_artifacts(out_dir / "samples", "samples")
    for f in files:
        tracker.log_artifact(f, f.parent.relative_to(out_dir).as_posix() if f.parent != out_dir else None)


def sample_and_score(cfg: ExperimentConfig, model, tokenizer, extractor, n: int):
    """``n`` videos sampled at training length (prompts cycle over the real clips' labels/captions) and
    their distribution and consistency metrics against ``2n`` real clips. Returns (metrics, clips, real
    features, labels, captions, videos): the end-of-run evaluation and the one during training share it."""
    clips = real_clips(cfg, 2 * n)
    real = real_features(cfg, extractor, clips)
    prompts = np.arange(n) % len(clips.labels)
    labels, captions = clips.labels[prompts], [clips.captions[i] for i in prompts]
    videos = rollouts.sample_videos(model, tokenizer, cfg, cfg.latent_frames(), labels, captions, seed=cfg.experiment.seed)
    class_ok = cfg.model.conditioning == "class" and cfg.data.source == "synthetic"
    metrics = evaluate_videos(real["features"], videos, extractor, labels=labels if class_ok else None,
                              seed=cfg.experiment.seed)
    return metrics, clips, real, labels, captions, videos


def load_for_eval(cfg: ExperimentConfig, checkpoint: str | Path, device: str):
    """(tokenizer, model with the checkpoint's weights — its weight average when training kept one —,
    training state) for evaluating a saved ``step_*`` directory."""
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.train.checkpoint import load_checkpoint

    tokenizer = load_tokenizer(cfg.tokenizer, device=device)
    model = build_model(cfg.model, tokenizer.vocab_size, cfg.latent_shape()).to(device)  # = train.loop.vocab_size
    state = load_checkpoint(checkpoint, cfg, model=model, restore_rng_state=False)
    if state.ema is not None:  # a run with train.ema_decay validated and evaluated its weight average
        model.load_state_dict(state.ema["weights"])
    return tokenizer, model, state


def evaluate_model(cfg: ExperimentConfig, model, tokenizer, *, out_dir: str | Path | None = None,
                   tracker=None, step: int = 0, extractor=None) -> dict[str, float]:
    """Sample cfg.eval.num_videos videos, compute every metric, write samples/ and plots/, log to ``tracker``.

    ``out_dir`` (default <workdir>/eval/<experiment>) receives samples/*.mp4, a GIF grid, plots/drift.png
    and metrics.json; ``tracker`` (an arvid_ray.tracking.Tracker) gets the metrics at ``step`` and the files
    as artifacts. Returns the metrics (slash-separated names, N in eval/num_videos).
    """
    from arvid_ray.metrics.extractors import load_extractor
    from arvid_ray.report import drift_plot

    n = cfg.eval.num_videos
    model = getattr(model, "module", model)  # DDP / Ray prepare_model wrapper
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    device = next(model.parameters()).device
    extractor = extractor or load_extractor(cfg.eval.extractor, cfg.eval.i3d_path, device=device)
    run = cfg.train.run_name or cfg.tracking.run_id or "latest"
    out_dir = Path(out_dir) if out_dir else cfg.experiment.workdir_path() / "eval" / cfg.experiment.name / run
    metrics, clips, real, labels, captions, videos = sample_and_score(cfg, model, tokenizer, extractor, n)
    metrics.update({"eval/real_warp_error": real["warp_error"], "eval/real_motion": real["motion"],
                    "eval/real_n": float(len(clips.labels))})
    metrics["eval/fd_recon"] = reconstruction_fd(cfg, tokenizer, extractor, clips, real["features"], n)
    if clips.positions is not None and cfg.eval.trajectory_videos:
        metrics["eval/traj_error"] = rollouts.prompted_trajectory_error(model, tokenizer, cfg, clips,
                                                                        min(n, cfg.eval.trajectory_videos))
    traj_curves: dict[str, list[float]] | None = {} if clips.positions is not None else None
    curves = rollouts.drift_curves(model, tokenizer, cfg, extractor, real["features"], labels, captions, metrics,
                                   traj_curves)
    if cfg.eval.shuffled_control and not cfg.sampling.shuffle_frames:
        metrics.update(rollouts.shuffled_control(model, tokenizer, cfg, extractor, real["features"], labels,
                                                 captions, ground_truth=clips.positions is not None))
    _write_samples(videos, out_dir, "sample", cfg.eval.num_sample_videos, cfg.synth.fps)
    files = [out_dir / "metrics.json"]
    if curves:
        files.append(drift_plot(curves, out_dir / "plots" / "drift.png", metric=metric_names(extractor.id)[0],
                                n=min(n, cfg.eval.drift_videos or n), floor=metrics["eval/drift_floor"],
                                segment_frames=cfg.data.num_frames))
    if traj_curves:
        from arvid_ray.report import segment_curve_plot

        files.append(segment_curve_plot(traj_curves, out_dir / "plots" / "traj_error.png",
                                        metric="trajectory error vs bounce physics (px)",
                                        n=min(n, cfg.eval.drift_videos or n), segment_frames=cfg.data.num_frames))
    out_dir.mkdir(parents=True, exist_ok=True)  # no samples and no plots: metrics.json is the only file
    (out_dir / "metrics.json").write_text(json.dumps({"extractor": extractor.id, **metrics}, indent=2))
    if tracker is not None:
        tracker.log_metrics(metrics, step)
    _log_files(cfg, tracker, out_dir, files, extractor)
    _warn_small_n(metrics, metric_names(extractor.id)[0])
    log.info("evaluation (N=%d, %s): %s", n, extractor.id,
             ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if "_seg" not in k))
    return metrics


def _evaluate_job(cfg: ExperimentConfig, checkpoint: str, out_dir: str | None, run_id: str | None,
                  training_run_id: str | None = None) -> dict:
    """Load tokenizer + model + weights, evaluate, log into an evaluation run of its own (new, or the
    evaluation run ``run_id``), tagged with the training run it scores; the training run is never touched."""
    from arvid_ray.tracking import Tracker

    tokenizer, model, state = load_for_eval(cfg, checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir) if out_dir else Path(checkpoint) / "eval"
    cfg = cfg.replace(**{"tracking.run_id": None, "tracking.parent_run_id": None})  # never the training run
    tracker = Tracker(cfg, run_dir=out)
    tags = {"arvid.role": "evaluation", "arvid.checkpoint": str(checkpoint), "arvid.checkpoint_step": str(state.step),
            "arvid.weights": "ema" if state.ema is not None else "trained"}
    if training_run_id:
        tags["arvid.training_run_id"] = training_run_id
    started = tracker.start(run_name=f"eval-{cfg.experiment.name}-{Path(checkpoint).name}", run_id=run_id,
                            tags=tags)
    if started and not run_id:
        tracker.log_config()
    try:
        metrics = evaluate_model(cfg, model, tokenizer, out_dir=out, tracker=tracker, step=state.step)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return {"metrics": metrics, "run_id": tracker.run_id, "out_dir": str(out)}


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: str | Path, *, out_dir: str | Path | None = None,
                        run_id: str | None = None, use_ray: bool | None = None,
                        training_run_id: str | None = None) -> dict:
    """Evaluate a ``step_*`` checkpoint; returns {"metrics", "run_id", "out_dir"}.

    With Ray initialised (or ``use_ray=True``) the job runs as one Ray task that asks for a GPU when the
    cluster has one; otherwise in this process.
    """
    checkpoint = str(Path(checkpoint).expanduser().resolve())
    if not (Path(checkpoint) / "model.pt").is_file():
        raise FileNotFoundError(f"{checkpoint} is not an arvid-ray checkpoint (no model.pt); pass a step_* "
                                f"directory from a training run's checkpoints")
    out = None if out_dir is None else str(Path(out_dir).expanduser().resolve())
    if use_ray is None:
        import sys

        use_ray = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if not use_ray:
        return _evaluate_job(cfg, checkpoint, out, run_id, training_run_id)
    import ray

    from arvid_ray.ray_session import connect
    from arvid_ray.runs import resolve_for_workers

    cfg = resolve_for_workers(cfg)  # the worker never saw this process's MLFLOW_TRACKING_URI / ARVID_STORAGE
    connect(os.cpu_count() or 1)  # RAY_ADDRESS, else local Ray sized as ray.init()'s default, as before
    gpus = 1 if cfg.train.use_gpu and cfg.train.device == "auto" else 0  # ask as configured, never by looking
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_evaluate_job)
    return ray.get(task.remote(cfg, checkpoint, out, run_id, training_run_id))


def final_eval(cfg: ExperimentConfig, model, tracker=None, out_dir=None) -> dict[str, float]:
    """The end-of-run evaluation hook (rank 0, before the last report): samples, FD, consistency, drift.
    Its files are uploaded to the run location when that is remote (rank 0 may be a spot node)."""
    from arvid_ray.runs import local_run_dir, sync_run_dir
    from arvid_ray.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer, device=str(next(model.parameters()).device))
    local = local_run_dir(cfg)
    out_dir = Path(out_dir) if out_dir is not None else local / "eval"
    metrics = evaluate_model(cfg, model, tokenizer, out_dir=out_dir, tracker=tracker, step=cfg.train.steps)
    sync_run_dir(cfg, local)
    return metrics
