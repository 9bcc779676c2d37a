"""Evaluation: checkpoint → N sampled videos → Fréchet distance, consistency, drift → run artifacts.

Design trade-off: every quality number is computed on decoded pixels with N recorded next to it and a
real-vs-real floor at the same N, so a small-N number can be read for what it is; this costs a second
real feature pass, which is cached per (extractor sha, dataset, split, N, frames, resolution). Real
reference clips come straight from ``render_video`` for the built-in synthetic dataset (which also gives
ground-truth trajectories) and from videos.parquet otherwise (plain pyarrow + the shared decoder, no
Ray: N is small and the stage must also run inside a Train worker). Long-horizon drift reuses the
training-length reference statistics: each temporal segment of a long rollout is scored as if it were
a clip of its own. Sampling runs on whatever device the model is on; ``evaluate_checkpoint`` can place
the whole job in a Ray task (with a GPU when the cluster has one).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.metrics.consistency import batch_flow_consistency, trajectory_error
from arvid_ray.metrics.frechet import frechet_from_features, kernel_distance

__all__ = ["RealClips", "real_clips", "real_features", "evaluate_videos", "evaluate_model",
           "evaluate_checkpoint", "metric_names", "segment_starts", "reconstruction_fd"]

log = logging.getLogger(__name__)


@dataclass
class RealClips:
    """Real reference clips: frames uint8 (N, T, H, W, 3), labels (N,), captions, optional positions."""

    frames: np.ndarray
    labels: np.ndarray
    captions: list[str]
    positions: np.ndarray | None  # (N, T, 2) ground-truth object centres in pixels (synthetic only)
    dataset_key: str


def metric_names(extractor_id: str) -> tuple[str, str]:
    """(Fréchet key, KVD key): eval/fvd only for a real I3D, never for a proxy extractor."""
    if extractor_id.startswith("i3d"):
        return "eval/fvd", "eval/kvd"
    name = extractor_id.split("-")[0]
    return f"eval/fd_{name}", f"eval/kvd_{name}"


# ------------------------------------------------------------------------------------ real data
def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _synthetic_clips(cfg: ExperimentConfig, n: int, num_frames: int) -> RealClips:
    from arvid_ray.video.synthetic import render_video, split_of

    synth = cfg.synth
    if synth.num_frames < num_frames:
        raise ValueError(f"synth.num_frames={synth.num_frames} is shorter than the {num_frames} frames evaluated")
    order = [cfg.data.val_split, cfg.data.train_split, "test"]  # prompts and reference from val first
    indices = sorted(range(synth.num_videos), key=lambda i: order.index(s) if (s := split_of(i, synth)) in order else 3)
    frames, labels, captions, positions = [], [], [], []
    scale = cfg.data.resolution / synth.resolution
    for i in indices[:n]:
        video = render_video(i, synth)
        frames.append(_resize(video.frames[:num_frames], cfg.data.resolution))
        labels.append(video.label)
        captions.append(video.caption)
        positions.append(video.state["position"][:num_frames] * scale + (scale - 1) / 2)
    key = hashlib.sha256(json.dumps(asdict(synth), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return RealClips(np.stack(frames), np.asarray(labels), captions, np.stack(positions), f"synthetic-{key}")


def _parquet_clips(cfg: ExperimentConfig, n: int, num_frames: int) -> RealClips:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from arvid_ray import schemas
    from arvid_ray import storage as st
    from arvid_ray.storage import resolve_videos_path
    from arvid_ray.video.decode import decode_clip

    filesystem, inner = st.resolve(resolve_videos_path(cfg.data.source, cfg.storage), cfg.storage)
    ds = pads.dataset(inner, filesystem=filesystem, format="parquet")
    cols = [schemas.VIDEO, schemas.LABEL, schemas.CAPTION, schemas.NUM_FRAMES]
    frames, labels, captions = [], [], []
    for split in (cfg.data.val_split, cfg.data.train_split):
        table = ds.to_table(columns=cols, filter=(pc.field(schemas.SPLIT) == split)
                            & (pc.field(schemas.NUM_FRAMES) >= num_frames))
        for row in table.slice(0, n - len(frames)).to_pylist():
            frames.append(decode_clip(row[schemas.VIDEO], start=0, num_frames=num_frames, size=cfg.data.resolution))
            labels.append(row[schemas.LABEL])
            captions.append(row[schemas.CAPTION] or "")
        if len(frames) >= n:
            break
    if len(frames) < 2:
        raise ValueError(f"{cfg.data.source} has fewer than 2 videos of >= {num_frames} frames in splits "
                         f"'{cfg.data.val_split}'/'{cfg.data.train_split}'; evaluation needs real reference clips")
    return RealClips(np.stack(frames), np.asarray(labels), captions, None, f"parquet-{cfg.data.source}")


def real_clips(cfg: ExperimentConfig, n: int, num_frames: int | None = None) -> RealClips:
    """Up to ``n`` real clips of the training length (val split first, then train) at data.resolution."""
    num_frames = num_frames or cfg.data.num_frames
    if cfg.data.source == "synthetic" or _is_builtin_synthetic(cfg):
        return _synthetic_clips(cfg, n, num_frames)
    return _parquet_clips(cfg, n, num_frames)


def _is_builtin_synthetic(cfg: ExperimentConfig) -> bool:
    """True when data.source is the built-in dataset's ingested cache (sweeps pass that path, not
    'synthetic'): its clips are rendered directly, which also gives the ground-truth trajectories."""
    from arvid_ray.data import synthetic_cache_dir

    source, cache = str(cfg.data.source).rstrip("/"), str(synthetic_cache_dir(cfg)).rstrip("/")
    return source == cache or source.startswith(cache + "/")


def _node_cache_dir(cfg: ExperimentConfig) -> Path:
    """Where this node keeps recomputable caches: experiment.workdir on one machine; with a remote storage
    root (a cluster) the node's temp dir — the workdir path is the driver's, not this node's."""
    import tempfile

    from arvid_ray import storage as st

    if st.is_remote(st.storage_root(cfg)):
        return Path(tempfile.gettempdir()) / "arvid-ray-cache"
    return cfg.experiment.workdir_path()


def real_features(cfg: ExperimentConfig, extractor, clips: RealClips) -> dict[str, Any]:
    """Real features (and real-data consistency numbers), cached under <workdir>/eval_cache."""
    n, t, h = clips.frames.shape[:3]
    splits = f"{cfg.data.val_split}+{cfg.data.train_split}"  # the order real_clips draws from
    key = f"{extractor.id}-{extractor.sha256[:16]}-{clips.dataset_key}-{splits}-n{n}-f{t}-r{h}"
    path = _node_cache_dir(cfg) / "eval_cache" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
    if path.is_file():
        with np.load(path) as z:
            return {"features": z["features"], **{k: float(z[k]) for k in ("warp_error", "motion", "flow_accel")}}
    out = {"features": extractor(clips.frames), **batch_flow_consistency(clips.frames)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, key=key, features=out["features"],
             **{k: out[k] for k in ("warp_error", "motion", "flow_accel")})
    return out


# ------------------------------------------------------------------------------------ metrics
def evaluate_videos(real_feats: np.ndarray, generated: np.ndarray, extractor, *, labels=None,
                    seed: int = 0) -> dict[str, float]:
    """All distribution and consistency metrics of generated uint8 videos (N, T, H, W, 3) vs real features.

    The floor is the Fréchet distance between two disjoint real subsets of the same N (smaller when the
    real pool holds fewer than 2N clips; its N is logged as eval/fd_floor_n).
    """
    n = len(generated)
    fd_key, kvd_key = metric_names(extractor.id)
    if hasattr(extractor, "outputs"):
        gen_feats, class_logits, _ = extractor.outputs(generated)
    else:
        gen_feats, class_logits = extractor(generated), None
    out = {"eval/num_videos": float(n), fd_key: frechet_from_features(real_feats[:max(n, 2)], gen_feats),
           kvd_key: kernel_distance(real_feats, gen_feats, seed=seed)}
    m = min(n, len(real_feats) // 2)
    idx = np.random.default_rng(seed).permutation(len(real_feats))
    out["eval/fd_floor"] = frechet_from_features(real_feats[idx[:m]], real_feats[idx[m:2 * m]])
    out["eval/fd_floor_n"] = float(m)
    out.update({f"eval/{k}": v for k, v in batch_flow_consistency(generated).items()})
    if labels is not None and class_logits is not None:
        out["eval/class_retention"] = float((class_logits.argmax(-1) == np.asarray(labels)[:n]).mean())
    return out


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


def segment_starts(total_frames: int, clip_frames: int, latent_per_clip: int, temporal_down: int) -> list[int]:
    """First video frame of each training-length segment of a rollout (latent frame j*t ↔ video frame)."""
    starts, j = [], 0
    while True:
        latent = j * latent_per_clip
        start = 0 if latent == 0 else 1 + (latent - 1) * temporal_down
        if start + min(clip_frames, 16) > total_frames:
            return starts
        starts.append(start)
        j += 1


# ------------------------------------------------------------------------------------ sampling
def _sample(model, tokenizer, cfg: ExperimentConfig, num_latent: int, labels, captions, *,
            prompt=None, seed: int = 0) -> np.ndarray:
    """Generate len(labels) videos in sampling.batch_size chunks (0: eval.batch_size), decode them to pixels in
    eval.batch_size chunks → uint8 (N, T, H, W, 3)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out, chunk, pix = [], cfg.sampling.batch_size or cfg.eval.batch_size, cfg.eval.batch_size
    for i in range(0, len(labels), chunk):
        lab = torch.as_tensor(labels[i:i + chunk], device=device)
        cap = list(captions[i:i + chunk])
        pr = None if prompt is None else prompt[i:i + chunk].to(device)
        tokens = _generate(model, len(lab), num_latent, cfg, lab, cap, pr, gen)
        with torch.no_grad():
            out.extend(tokenizer.decode(tokens[j:j + pix]).cpu().numpy() for j in range(0, len(tokens), pix))
    return np.concatenate(out).astype(np.uint8)


def _generate(model, b, num_latent, cfg, labels, captions, prompt, gen):
    from arvid_ray.sampling import generate, trained_length

    kind = cfg.model.conditioning
    sampling = cfg.sampling.for_objective(cfg.objective.kind)  # the method's protocol: blockwise / anchored
    return generate(model, b, num_latent, sampling, labels=labels if kind == "class" else None,
                    captions=captions if kind == "text" else None, prompt_tokens=prompt, generator=gen,
                    trained_frames=trained_length(cfg))  # a Fewer-Frames model never sees more than it trained on


def reconstruction_fd(cfg: ExperimentConfig, tokenizer, extractor, clips: RealClips, real_feats: np.ndarray,
                      n: int) -> float:
    """eval/fd_recon: Fréchet distance of ``n`` tokenizer-reconstructed real clips to the real reference
    (the same N and extractor as the generated videos). No AR model over these tokens can beat it: a
    perfect sampler of the token distribution produces exactly such reconstructions. The reconstructed
    clips are the pool's second half (disjoint from the reference clips, as generated videos are) when the
    pool holds 2N clips."""
    pool = clips.frames[n:2 * n] if len(clips.frames) >= 2 * n else clips.frames[:n]
    recon = []
    with torch.no_grad():
        for i in range(0, len(pool), cfg.eval.batch_size):
            recon.append(tokenizer.decode(tokenizer.encode(pool[i:i + cfg.eval.batch_size])).cpu().numpy())
    recon = np.concatenate(recon).astype(np.uint8)
    return frechet_from_features(real_feats[:max(n, 2)], extractor(recon))


def _ground_truth_drift(cfg, k: int, videos: np.ndarray, starts: list[int], out: dict) -> list[float]:
    """Bounce-physics trajectory error and identity retention per segment of one k-fold rollout."""
    from arvid_ray.metrics.trajectory import ground_truth_drift

    gt = ground_truth_drift(videos, starts, cfg.data.num_frames)
    for j, (err, ident) in enumerate(zip(gt["traj_error"], gt["identity"])):
        out[f"eval/traj_error_{k}x_seg{j + 1}"] = err
        out[f"eval/identity_{k}x_seg{j + 1}"] = ident
        out[f"eval/traj_error_seg{j + 1}"] = err  # the longest rollout's (multipliers run in increasing order)
        out[f"eval/identity_seg{j + 1}"] = ident
    return gt["traj_error"]


def _drift(model, tokenizer, cfg, extractor, real_feats, labels, captions, out: dict,
           traj_curves: dict | None = None) -> dict[str, list[float]]:
    """Roll out each multiple k of the training length; FD per training-length segment → curves (and, on
    the synthetic data, the ground-truth trajectory error per segment into ``traj_curves``)."""
    t_train = cfg.latent_frames()
    fd_key = metric_names(extractor.id)[0]
    curves: dict[str, list[float]] = {}
    n_drift = min(cfg.eval.drift_videos or len(labels), len(labels))
    labels, captions = labels[:n_drift], captions[:n_drift]
    m = min(n_drift, len(real_feats) // 2)  # the floor at the drift rollouts' own N
    out["eval/drift_floor"] = frechet_from_features(real_feats[:m], real_feats[m:2 * m])
    out["eval/drift_n"], out["eval/drift_floor_n"] = float(n_drift), float(m)
    for k in sorted({int(m) for m in cfg.eval.drift_multipliers if int(m) > 1}):
        videos = _sample(model, tokenizer, cfg, k * t_train, labels, captions, seed=cfg.experiment.seed + 101 * k)
        starts = segment_starts(videos.shape[1], cfg.data.num_frames, t_train, cfg.tokenizer.temporal_down)
        curve = []
        for j, s in enumerate(starts):
            seg = videos[:, s:s + cfg.data.num_frames]  # (N, T_clip, H, W, 3): segment j as its own clip
            fd = frechet_from_features(real_feats[:max(len(seg), 2)], extractor(seg))
            curve.append(fd)
            out[f"eval/drift_{k}x_seg{j + 1}"] = fd
        out[f"eval/drift_{k}x"] = curve[-1]  # quality of the last segment of the k-fold rollout
        curves[f"{k}x"] = curve
        if traj_curves is not None:
            traj_curves[f"{k}x"] = _ground_truth_drift(cfg, k, videos, starts, out)
        log.info("drift %dx: %s = %s per segment", k, fd_key, ", ".join(f"{v:.3g}" for v in curve))
    return curves


def _shuffled_control(model, tokenizer, cfg, extractor, real_feats, labels, captions, *,
                      ground_truth: bool) -> dict[str, float]:
    """The broken control on the same model: the evaluation's samples and k-fold rollouts drawn again with
    the same seeds and their latent frames shuffled, every metric under ``control/`` instead of ``eval/``."""
    shuffled = cfg.replace(**{"sampling.shuffle_frames": True})
    videos = _sample(model, tokenizer, shuffled, cfg.latent_frames(), labels, captions, seed=cfg.experiment.seed)
    out = evaluate_videos(real_feats, videos, extractor, seed=cfg.experiment.seed)
    _drift(model, tokenizer, shuffled, extractor, real_feats, labels, captions, out, {} if ground_truth else None)
    return {"control/" + key.split("/", 1)[1]: value for key, value in out.items()}


def _trajectory(model, tokenizer, cfg, clips: RealClips, n: int) -> float:
    """Prompt with each real clip's first frame; mean tracked-centroid error vs ground truth (pixels)."""
    frames = clips.frames[:n]
    with torch.no_grad():
        prompt = tokenizer.encode(frames[:, :1])  # (n, 1, h, w): the causal first latent frame
    videos = _sample(model, tokenizer, cfg, cfg.latent_frames(), clips.labels[:n], clips.captions[:n],
                     prompt=prompt, seed=cfg.experiment.seed + 7)
    t = min(videos.shape[1], clips.positions.shape[1])
    return float(np.mean([trajectory_error(v[:t], p[:t]) for v, p in zip(videos, clips.positions[:n])]))


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
    clips = real_clips(cfg, 2 * n)
    real = real_features(cfg, extractor, clips)
    prompts = np.arange(n) % len(clips.labels)
    labels, captions = clips.labels[prompts], [clips.captions[i] for i in prompts]
    videos = _sample(model, tokenizer, cfg, cfg.latent_frames(), labels, captions, seed=cfg.experiment.seed)
    class_ok = cfg.model.conditioning == "class" and cfg.data.source == "synthetic"
    metrics = evaluate_videos(real["features"], videos, extractor, labels=labels if class_ok else None,
                              seed=cfg.experiment.seed)
    metrics.update({"eval/real_warp_error": real["warp_error"], "eval/real_motion": real["motion"],
                    "eval/real_n": float(len(clips.labels))})
    metrics["eval/fd_recon"] = reconstruction_fd(cfg, tokenizer, extractor, clips, real["features"], n)
    if clips.positions is not None and cfg.eval.trajectory_videos:
        metrics["eval/traj_error"] = _trajectory(model, tokenizer, cfg, clips, min(n, cfg.eval.trajectory_videos))
    traj_curves: dict[str, list[float]] | None = {} if clips.positions is not None else None
    curves = _drift(model, tokenizer, cfg, extractor, real["features"], labels, captions, metrics, traj_curves)
    if cfg.eval.shuffled_control and not cfg.sampling.shuffle_frames:
        metrics.update(_shuffled_control(model, tokenizer, cfg, extractor, real["features"], labels, captions,
                                         ground_truth=clips.positions is not None))
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


# ------------------------------------------------------------------------------------ checkpoints
def _evaluate_job(cfg: ExperimentConfig, checkpoint: str, out_dir: str | None, run_id: str | None,
                  training_run_id: str | None = None) -> dict:
    """Load tokenizer + model + weights, evaluate, log into an evaluation run of its own (new, or the
    evaluation run ``run_id``), tagged with the training run it scores; the training run is never touched."""
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.tracking import Tracker
    from arvid_ray.train.checkpoint import load_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(cfg.tokenizer, device=device)
    model = build_model(cfg.model, tokenizer.vocab_size, cfg.latent_shape()).to(device)  # = train.loop.vocab_size
    state = load_checkpoint(checkpoint, cfg, model=model, restore_rng_state=False)
    if state.ema is not None:  # a run with train.ema_decay validated and evaluated its weight average
        model.load_state_dict(state.ema["weights"])
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

    from arvid_ray.launch import resolve_for_workers

    cfg = resolve_for_workers(cfg)  # the worker never saw this process's MLFLOW_TRACKING_URI / ARVID_STORAGE
    if not ray.is_initialized():
        ray.init()
    gpus = 1 if cfg.train.use_gpu and cfg.train.device == "auto" else 0  # ask as configured, never by looking
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_evaluate_job)
    return ray.get(task.remote(cfg, checkpoint, out, run_id, training_run_id))
