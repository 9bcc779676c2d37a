"""Train the built-in SynthC3D feature extractor on the synthetic dataset (reproducible, seed recorded).

Labels are motion-dependent so that the features must encode motion, not just appearance:
- class head: shape x direction of motion at the clip's first frame (16 classes; the direction is
  only readable from motion); full time-reversal is a valid augmentation with the reversed label;
- temporal-integrity head: intact / shuffled frames / frozen frames / motion reversed mid-clip
  without a wall (physically impossible in the dataset). The synthetic physics is time-reversible,
  so a globally reversed clip is a *valid* clip of another class; only a reversal without a wall,
  or a reversed clip judged against its prompt class, is damage.

The videos come from ``render_video`` with a synth seed different from the default dataset's, so
the extractor never sees the evaluation videos. Writes ``synthc3d.pt`` (fp16 weights) and
``synthc3d.json`` (seed, arguments, held-out accuracies, sha256) into ``--out``.

    nice -n 10 python experiments/train_synthc3d.py            # ~15-20 min on a shared 2-core CPU
    python experiments/train_synthc3d.py --smoke-test          # seconds, writes to a temp dir
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arvid_ray.config import SynthConfig
from arvid_ray.metrics.extractors import (
    InputSpec,
    SynthC3D,
    file_sha256,
    prepare_clips,
    synthc3d_weights_path,
)
from arvid_ray.video.synthetic import DIRECTIONS, render_video

log = logging.getLogger("train_synthc3d")
INTACT, SHUFFLED, FROZEN, REVERSED_MID = range(4)


def direction_label(shape_idx: int, velocity: np.ndarray) -> int:
    """Class id (shape x nearest of the 8 compass directions) of a velocity (x, y) in image coords."""
    angle = np.arctan2(-velocity[1], velocity[0])  # y points down, "up" is -y
    return shape_idx * len(DIRECTIONS) + int(np.round(angle / (np.pi / 4))) % len(DIRECTIONS)


def render_pool(num: int, seed: int, spec: InputSpec) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Render videos → uint8 (N, T, S, S, 3) at the extractor size, shape ids (N,), velocities (N, T, 2)."""
    cfg = SynthConfig(num_videos=num, seed=seed)
    clips, shapes, vels = [], [], []
    for i in range(num):
        video = render_video(i, cfg)
        x = prepare_clips(video.frames[None], InputSpec(video.frames.shape[0], spec.size, (0.0, 255.0)), "cpu")
        clips.append(x[0].permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8))  # (T, S, S, 3)
        shapes.append(video.label // len(DIRECTIONS))  # CLASSES = shape-major x direction
        vels.append(video.state["velocity"])
    return torch.stack(clips), np.asarray(shapes), np.stack(vels)


def damage_indices(kind: int, start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one training clip of n frames starting at ``start`` for an integrity class."""
    idx = np.arange(start, start + n)
    if kind == SHUFFLED:
        perm = rng.permutation(n)
        while n > 1 and (perm == np.arange(n)).all():
            perm = rng.permutation(n)
        idx = idx[perm]
    elif kind == FROZEN:
        k = int(rng.integers(0, n // 2 + 1))  # motion stops after k frames (k = 0: a still image)
        idx = np.minimum(idx, start + k)
    elif kind == REVERSED_MID:
        k = int(rng.integers(n // 2, n - 1))  # turn back at frame k: i → k - |i - k|
        idx = start + k - np.abs(np.arange(n) - k)
    return idx


def sample_batch(pool, shapes, vels, n, batch, rng, damage_prob=0.5):
    """(B, n, S, S, 3) uint8 clips, class labels (B,) (-1 = not scored) and integrity labels (B,)."""
    clips, classes, kinds = [], [], []
    for _ in range(batch):
        v = int(rng.integers(len(pool)))
        start = int(rng.integers(0, pool.shape[1] - n + 1))
        kind = INTACT if rng.random() > damage_prob else int(rng.integers(1, 4))
        idx = damage_indices(kind, start, n, rng)
        label = direction_label(shapes[v], vels[v][start]) if kind == INTACT else -1
        if kind == INTACT and rng.random() < 0.5:  # time reversal is valid physics: label = reversed motion
            idx = idx[::-1].copy()
            label = direction_label(shapes[v], -vels[v][idx[0] - 1])
        clips.append(pool[v, idx])
        classes.append(label)
        kinds.append(kind)
    return torch.stack(clips), torch.tensor(classes), torch.tensor(kinds)



def to_input(clips: torch.Tensor) -> torch.Tensor:
    return clips.permute(0, 4, 1, 2, 3).float() / 255.0  # (B, T, S, S, 3) → (B, 3, T, S, S) in [0, 1]


@torch.no_grad()
def held_out_accuracy(model, pool, shapes, vels, n, rng) -> dict[str, float]:
    """Class accuracy on intact clips starting at frame 0, integrity accuracy on a damaged mix."""
    model.eval()
    labels = torch.tensor([direction_label(s, v[0]) for s, v in zip(shapes, vels)])
    _, logits, _ = model(to_input(pool[:, :n]))
    clips, _, kinds = sample_batch(pool, shapes, vels, n, len(pool), rng, damage_prob=0.75)
    _, _, integ = model(to_input(clips))
    model.train()
    return {"class_acc": float((logits.argmax(-1) == labels).float().mean()),
            "integrity_acc": float((integ.argmax(-1) == kinds).float().mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=1600, help="training videos rendered")
    p.add_argument("--held-out", type=int, default=256, help="held-out videos (another synth seed)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CI machine is shared)")
    p.add_argument("--out", type=Path, default=synthc3d_weights_path().parent)
    p.add_argument("--smoke-test", action="store_true", help="tiny run into a temp dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.smoke_test:
        args.videos, args.held_out, args.steps, args.batch = 32, 16, 3, 8
        args.out = Path(tempfile.mkdtemp(prefix="synthc3d-smoke-"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    spec = InputSpec(args.frames, args.size, (0.0, 1.0))
    t0 = time.time()
    pool, shapes, vels = render_pool(args.videos, 1000 + args.seed, spec)
    held = render_pool(args.held_out, 2000 + args.seed, spec)
    log.info("rendered %d + %d videos in %.0fs", args.videos, args.held_out, time.time() - t0)
    arch = {"num_classes": 16, "num_integrity": 4, "width": 16, "dim": 128, "stem": 8}
    model = SynthC3D(**arch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    for step in range(1, args.steps + 1):
        clips, classes, kinds = sample_batch(pool, shapes, vels, args.frames, args.batch, rng)
        _, logits, integ = model(to_input(clips))
        loss = F.cross_entropy(integ, kinds)
        if (classes >= 0).any():
            loss = loss + F.cross_entropy(logits[classes >= 0], classes[classes >= 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps:
            log.info("step %d loss %.3f (%.0fs)", step, loss.item(), time.time() - t0)
    acc = held_out_accuracy(model, *held, args.frames, np.random.default_rng(args.seed + 1))
    log.info("held-out: %s", acc)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "synthc3d.pt"
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"arch": arch, "state_dict": state, "num_frames": args.frames, "size": args.size}, weights)
    meta = {"sha256": file_sha256(weights), "seed": args.seed, "synth_seed_train": 1000 + args.seed,
            "synth_seed_held_out": 2000 + args.seed,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
            "arch": arch, "held_out": acc, "train_seconds": round(time.time() - t0, 1),
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {weights} (sha256 {meta['sha256'][:12]}); held-out class acc {acc['class_acc']:.3f}, "
          f"integrity acc {acc['integrity_acc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
