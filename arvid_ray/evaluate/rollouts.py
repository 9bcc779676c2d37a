"""Rollouts and the metrics of generated videos: samples, Fréchet distances and their floors, drift.

Design trade-off: every quality number is computed on decoded pixels with N recorded next to it and a
real-vs-real floor at the same N, so a small-N number can be read for what it is. Long-horizon drift
reuses the training-length reference statistics: each temporal segment of a long rollout is scored as if
it were a clip of its own. Sampling runs on whatever device the model is on.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.evaluate.reference import RealClips
from arvid_ray.metrics.consistency import batch_flow_consistency, trajectory_error
from arvid_ray.metrics.frechet import frechet_from_features, kernel_distance

__all__ = ["metric_names", "evaluate_videos", "segment_starts", "sample_videos", "reconstruction_fd", "drift_curves",
           "shuffled_control", "prompted_trajectory_error"]

log = logging.getLogger(__name__)


def metric_names(extractor_id: str) -> tuple[str, str]:
    """(Fréchet key, KVD key): eval/fvd only for a real I3D, never for a proxy extractor."""
    if extractor_id.startswith("i3d"):
        return "eval/fvd", "eval/kvd"
    name = extractor_id.split("-")[0]
    return f"eval/fd_{name}", f"eval/kvd_{name}"



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


def sample_videos(model, tokenizer, cfg: ExperimentConfig, num_latent: int, labels, captions, *,
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


def drift_curves(model, tokenizer, cfg, extractor, real_feats, labels, captions, out: dict,
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
        videos = sample_videos(model, tokenizer, cfg, k * t_train, labels, captions,
                               seed=cfg.experiment.seed + 101 * k)
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


def shuffled_control(model, tokenizer, cfg, extractor, real_feats, labels, captions, *,
                     ground_truth: bool) -> dict[str, float]:
    """The broken control on the same model: the evaluation's samples and k-fold rollouts drawn again with
    the same seeds and their latent frames shuffled, every metric under ``control/`` instead of ``eval/``."""
    shuffled = cfg.replace(**{"sampling.shuffle_frames": True})
    videos = sample_videos(model, tokenizer, shuffled, cfg.latent_frames(), labels, captions,
                           seed=cfg.experiment.seed)
    out = evaluate_videos(real_feats, videos, extractor, seed=cfg.experiment.seed)
    drift_curves(model, tokenizer, shuffled, extractor, real_feats, labels, captions, out, {} if ground_truth else None)
    return {"control/" + key.split("/", 1)[1]: value for key, value in out.items()}


def prompted_trajectory_error(model, tokenizer, cfg, clips: RealClips, n: int) -> float:
    """Prompt with each real clip's first frame; mean tracked-centroid error vs ground truth (pixels)."""
    frames = clips.frames[:n]
    with torch.no_grad():
        prompt = tokenizer.encode(frames[:, :1])  # (n, 1, h, w): the causal first latent frame
    videos = sample_videos(model, tokenizer, cfg, cfg.latent_frames(), clips.labels[:n], clips.captions[:n],
                           prompt=prompt, seed=cfg.experiment.seed + 7)
    t = min(videos.shape[1], clips.positions.shape[1])
    return float(np.mean([trajectory_error(v[:t], p[:t]) for v, p in zip(videos, clips.positions[:n])]))
