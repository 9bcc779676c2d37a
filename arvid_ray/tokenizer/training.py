"""Train the causal FSQ autoencoder on in-memory clips; measure reconstruction PSNR and codebook usage.

Design trade-off: a single-process loop on CPU (AdamW, warmup + cosine LR, L1 and/or L2 pixel loss
plus an optional spatio-temporal gradient loss for sharp edges) with no GAN or perceptual loss — those
need a pretrained network we cannot ship or download, and plain pixel losses already reach the PSNR
bar on the synthetic data. Training crops may be shorter than evaluation clips (any ``1 + 4k``): the
network is fully convolutional and causal, so 9-frame crops teach it what 17- or 33-frame clips need
at half the cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder, TokenizerArch
from arvid_ray.tokenizer.clips import sample_batch
from arvid_ray.tokenizer.codec import frames_to_tensor

__all__ = ["TrainSettings", "TrainResult", "train_autoencoder", "reconstruction_metrics", "psnr", "train_from_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one tokenizer training run."""

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 8
    clip_frames: int = 9
    crop: int = 0
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    grad_loss_weight: float = 0.0
    z_penalty: float = 1.0
    z_limit: float = 2.0
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.clip_frames}")
        if min(self.l1_weight, self.l2_weight, self.grad_loss_weight) < 0 or self.l1_weight + self.l2_weight == 0:
            raise ValueError("loss weights must be >= 0 with l1_weight + l2_weight > 0")


@dataclass
class TrainResult:
    model: CausalVideoAutoencoder
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def psnr(reference: np.ndarray | torch.Tensor, reconstruction: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-clip PSNR in dB of uint8 clips [B, T, H, W, 3] (capped at 100 dB for exact copies)."""
    ref = torch.as_tensor(np.asarray(reference)).double()
    rec = torch.as_tensor(np.asarray(reconstruction)).double()
    mse = ((ref - rec) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse.clamp_min(255.0**2 * 1e-10))).numpy()


@torch.inference_mode()
def reconstruction_metrics(tokenizer: Any, clips: np.ndarray, batch_size: int = 4) -> dict[str, float]:
    """Encode + decode ``clips`` (uint8 [N, T, H, W, 3]) with a VideoTokenizer → PSNR and codebook usage."""
    scores, seen = [], torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    for start in range(0, len(clips), batch_size):
        batch = clips[start:start + batch_size]
        ids = tokenizer.encode(batch)
        seen[ids.flatten().cpu().unique()] = True
        scores.append(psnr(batch, tokenizer.decode(ids).cpu()))
    values = np.concatenate(scores)
    return {"psnr": float(values.mean()), "psnr_min": float(values.min()),
            "codebook_usage": float(seen.float().mean()), "num_clips": float(len(clips))}


def _lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss(recon: torch.Tensor, target: torch.Tensor, s: TrainSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel losses on (B, 3, T, H, W) in [-1, 1]; the gradient term compares finite differences in t, h, w."""
    l1 = (recon - target).abs().mean()
    l2 = F.mse_loss(recon, target)
    loss = s.l1_weight * l1 + s.l2_weight * l2
    if s.grad_loss_weight > 0:
        grad = sum((recon.diff(dim=d) - target.diff(dim=d)).abs().mean() for d in (2, 3, 4) if recon.shape[d] > 1)
        loss = loss + s.grad_loss_weight * grad
    # PSNR of this batch in [0, 255] units: mse in [-1, 1] units scales by (255/2)^2
    batch_psnr = 10 * math.log10(4.0 / max(l2.item(), 1e-10))
    return loss, {"l1": l1.item(), "l2": l2.item(), "psnr": batch_psnr}


def train_autoencoder(arch: TokenizerArch, clips: np.ndarray, settings: TrainSettings,
                      callback: Callable[[int, dict[str, float]], None] | None = None,
                      model: CausalVideoAutoencoder | None = None) -> TrainResult:
    """Train on random crops of ``clips`` (uint8 [N, T, H, W, 3]); ``callback(step, metrics)`` every log."""
    s = settings
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    model = model or CausalVideoAutoencoder(arch)
    model.latent_shape(s.clip_frames, *((s.crop, s.crop) if s.crop else clips.shape[2:4]))  # fail early on a bad crop length or size
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.99))
    result, t0, usage = TrainResult(model=model), time.time(), torch.zeros(arch_vocab(arch), dtype=torch.bool)
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        target = frames_to_tensor(sample_batch(clips, s.batch_size, s.clip_frames, rng, crop=s.crop))  # (B, 3, T, H, W)
        recon, indices, z = model.forward_train(target)
        loss, scalars = _loss(recon, target, s)
        if s.z_penalty > 0:  # keep latents out of tanh saturation, where FSQ collapses onto a few codes
            loss = loss + s.z_penalty * F.relu(z.abs() - s.z_limit).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        usage[indices.flatten().unique()] = True
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            scalars.update(step=step + 1, loss=loss.item(), lr=_lr_at(step, s), seconds=time.time() - t0,
                           codebook_usage=usage.float().mean().item())
            usage.zero_()
            result.history.append(scalars)
            log.info("tokenizer step %d/%d loss %.4f psnr %.2f dB usage %.2f", step + 1, s.steps, loss.item(),
                     scalars["psnr"], scalars["codebook_usage"])
            if callback is not None:
                callback(step + 1, scalars)
    model.eval()
    result.seconds = time.time() - t0
    return result


def arch_vocab(arch: TokenizerArch) -> int:
    return int(np.prod(arch.fsq_levels))


def train_from_config(cfg: Any, out: str | Path) -> dict[str, Any]:
    """``arvid-ray train-tokenizer``: train on cfg.data.source, evaluate on the val split, save to ``out``.

    Starts from the checkpoint at ``cfg.tokenizer.name`` when that is a local path, otherwise from a
    fresh init of the architecture in ``cfg.tokenizer``. Writes ``out`` (.pt) and ``out`` .json (record).
    """
    from arvid_ray.tokenizer import arch_from_config
    from arvid_ray.tokenizer.clips import parquet_clips, synthetic_clips
    from arvid_ray.tokenizer.codec import ConvTokenizer
    from arvid_ray.tokenizer.pretrained import load_checkpoint, save_checkpoint

    tc, dc = cfg.tokenizer, cfg.data
    model = None
    if tc.name not in ("builtin", "fsq"):
        model = load_checkpoint(tc.name).model.train().requires_grad_(True)
    arch = model.arch if model is not None else arch_from_config(tc)

    def load(split: str) -> np.ndarray:
        if dc.source == "synthetic":
            return synthetic_clips(cfg.synth, (split,))
        return parquet_clips(dc.source, (split,), dc.num_frames, dc.resolution, storage=cfg.storage)

    train, val = load(dc.train_split), load(dc.val_split)[:64, : dc.num_frames]  # (N, T, H, W, 3)
    settings = TrainSettings(steps=tc.train_steps, lr=tc.train_lr, batch_size=tc.train_batch_size,
                             clip_frames=dc.num_frames, seed=cfg.experiment.seed,
                             log_every=max(1, min(50, tc.train_steps // 10 or 1)))
    result = train_autoencoder(arch, train, settings, model=model)
    metrics = reconstruction_metrics(ConvTokenizer(result.model, id="eval"), val)
    log.info("tokenizer held-out (%s split, %d clips): PSNR %.2f dB, codebook usage %.1f%%", dc.val_split,
             len(val), metrics["psnr"], 100 * metrics["codebook_usage"])
    path = save_checkpoint(result.model, out, meta={"seed": cfg.experiment.seed, "metrics": metrics})
    record = {"arch": arch.to_dict(), "settings": dataclasses.asdict(settings), "metrics": metrics,
              "train_seconds": result.seconds, "history": result.history, "source": dc.source}
    Path(path).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return {"path": str(path), **metrics}
