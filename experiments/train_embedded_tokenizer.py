"""Produce the embedded default tokenizer weights (arvid_ray/assets/tokenizer_builtin.pt + .json).

Trains the causal FSQ autoencoder on the built-in synthetic dataset (64x64, train split), evaluates
reconstruction PSNR and codebook usage on held-out 17-frame clips (val + test splits) and writes the
weights (float16) plus a JSON record of the seed, architecture, settings, metrics, timing and machine
beside them. Deterministic given the seed and the thread count; sized for a shared 2-core CPU.

    nice -n 10 python experiments/train_embedded_tokenizer.py            # the shipped run
    python experiments/train_embedded_tokenizer.py --smoke-test --out /tmp/tok.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from arvid_ray.config import SynthConfig
from arvid_ray.tokenizer import ConvTokenizer, TokenizerArch, builtin_weights_path
from arvid_ray.tokenizer.clips import synthetic_clips
from arvid_ray.tokenizer.pretrained import save_checkpoint
from arvid_ray.tokenizer.training import TrainSettings, reconstruction_metrics, train_autoencoder

log = logging.getLogger("train_embedded_tokenizer")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=builtin_weights_path())
    p.add_argument("--steps", type=int, default=7000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--clip-frames", type=int, default=9, help="training crop length (1 + 4k)")
    p.add_argument("--crop", type=int, default=32, help="square spatial training crop (0 = whole frame)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--grad-loss", type=float, default=0.0, help="weight of the finite-difference loss")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--spatial-down", type=int, default=8)
    p.add_argument("--norm", default="none", choices=["none", "channel", "group"])
    p.add_argument("--levels", type=str, default="8,5,5,5")
    p.add_argument("--num-videos", type=int, default=512)
    p.add_argument("--eval-clips", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke-test", action="store_true", help="a few steps on a few videos (CI)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.smoke_test:
        args.steps, args.num_videos, args.eval_clips = 4, 24, 2
    synth = SynthConfig(num_videos=args.num_videos, resolution=64, num_frames=33, seed=0)
    train = synthetic_clips(synth, ("train",))
    held_out = synthetic_clips(synth, ("val", "test"), limit=args.eval_clips)[:, :17]  # (N, 17, 64, 64, 3)
    log.info("train clips %s, held-out clips %s", train.shape, held_out.shape)
    arch = TokenizerArch(fsq_levels=tuple(int(x) for x in args.levels.split(",")), temporal_down=4,
                         spatial_down=args.spatial_down, channels=args.channels, norm=args.norm)
    settings = TrainSettings(steps=args.steps, lr=args.lr, batch_size=args.batch_size, clip_frames=args.clip_frames,
                             crop=args.crop, grad_loss_weight=args.grad_loss, seed=args.seed,
                             log_every=max(1, min(50, args.steps)))
    started = time.time()
    result = train_autoencoder(arch, train, settings)
    metrics = reconstruction_metrics(ConvTokenizer(result.model, id="eval"), held_out)
    log.info("held-out: %s", metrics)
    out = save_checkpoint(result.model, args.out, meta={"seed": args.seed, "metrics": metrics}, half=True)
    record = {
        "script": "experiments/train_embedded_tokenizer.py", "seed": args.seed, "args": {k: str(v) for k, v in
                                                                                      vars(args).items()},
        "arch": arch.to_dict(), "settings": dataclasses.asdict(settings),
        "synth": {"num_videos": synth.num_videos, "resolution": 64, "num_frames": 33, "seed": synth.seed},
        "held_out": {"splits": ["val", "test"], "clips": int(len(held_out)), "frames": 17},
        "metrics": metrics, "train_seconds": round(result.seconds, 1), "wall_seconds": round(time.time() - started, 1),
        "tokens_per_clip_17x64x64": int(np.prod(result.model.latent_shape(17, 64, 64))),
        "history": result.history, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); held-out PSNR {metrics['psnr']:.2f} dB, "
          f"codebook usage {metrics['codebook_usage']:.2%}")


if __name__ == "__main__":
    main()
