"""ReCo's raw form against its scale-invariant ``relative`` form: which one smooths, which one rescales?

    python experiments/benchmarks/bench_reco_forms.py            # 400 steps per run, ~6 min on 2 free cores
    python experiments/benchmarks/bench_reco_forms.py --smoke-test

Three in-process runs of the same Local Opt. (balanced, + first frame) debug model on the same tokens of the
built-in synthetic data: λ = 0, raw λ, relative λ (``--weight``, default 0.1). For each trained model it prints the final
norm's mean gain (the raw form can be lowered by shrinking it, the head making up the difference), the
held-out CE, and both ReCo forms measured on held-out clips at the default layer, so one can read off
whether a form lowered the *relative* change of the hidden state or only its scale.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def _tokens(n: int, tokenizer, seed: int = 0):
    from arvid_ray.config import SynthConfig
    from arvid_ray.video.synthetic import render_video

    synth = SynthConfig(num_videos=n, second_object_prob=0.0, seed=seed)
    videos = [render_video(i, synth) for i in range(n)]
    frames = np.stack([v.frames[:17] for v in videos])
    with torch.no_grad():
        tokens = torch.cat([tokenizer.encode(frames[i:i + 32]) for i in range(0, n, 32)]).long()
    return tokens, torch.tensor([v.label for v in videos])


def _measure(model, objective_cfg, tokens, labels) -> dict[str, float]:
    from arvid_ray.objectives import build_objective, reco_loss

    model.eval()
    with torch.no_grad():
        out = model.forward(tokens, model.condition(labels, force_drop=False))
        ce = build_objective(objective_cfg).val_ce(model, {"tokens": tokens, "label": labels})
    hw = model.tokens_per_frame
    return {"gain": float(model.norm.weight.detach().abs().mean()), "val_ce": float(ce),
            "reco_raw": float(reco_loss(out.hidden, "token", hw, "raw")),
            "reco_relative": float(reco_loss(out.hidden, "token", hw, "relative"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--weight", type=float, default=0.1, help="λ of the two ReCo runs")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    from arvid_ray.config import ExperimentConfig
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.train.loop import cycle, train_loop

    steps, n_train, n_val = (4, 32, 16) if args.smoke_test else (args.steps, 256, 64)
    torch.set_num_threads(1)  # oversubscribed shared cores: 2 threads spin at every op barrier
    base = ExperimentConfig().replace(**{
        "train.steps": steps, "train.lr": 1e-3, "train.warmup_steps": min(40, steps), "train.log_every": max(steps, 1),
        "train.ckpt_every": 0, "train.global_batch_size": 16, "data.batch_size": 16, "tracking.enabled": False,
        "objective.kind": "local", "objective.first_frame_prob": 0.5, "objective.first_frame_in_loss": True})
    tokenizer = load_tokenizer(base.tokenizer)
    train_tokens, train_labels = _tokens(n_train, tokenizer)
    val_tokens, val_labels = _tokens(n_val, tokenizer, seed=1)

    def epoch(e: int):
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(e))
        for i in range(0, n_train - 15, 16):
            idx = order[i:i + 16]
            yield {"tokens": train_tokens[idx], "label": train_labels[idx], "caption": [""] * len(idx)}

    print(f"{'run':<16}{'gain':>8}{'val CE':>9}{'raw ReCo':>10}{'rel. ReCo':>10}")
    results = {}
    lam = args.weight
    for name, over in (("lambda=0", {"objective.reco_weight": 0.0}),
                       (f"raw {lam:g}", {"objective.reco_weight": lam, "objective.reco_form": "raw"}),
                       (f"relative {lam:g}", {"objective.reco_weight": lam, "objective.reco_form": "relative"})):
        cfg = base.replace(**over)
        model = train_loop(cfg, cycle(epoch)).model
        results[name] = m = _measure(model, cfg, val_tokens, val_labels)
        print(f"{name:<16}{m['gain']:>8.3f}{m['val_ce']:>9.3f}{m['reco_raw']:>10.4f}{m['reco_relative']:>10.4f}")
    ref = results["lambda=0"]
    for name in (f"raw {lam:g}", f"relative {lam:g}"):
        m = results[name]
        print(f"RATIO {name.split()[0]}_gain_over_lambda0 {m['gain'] / ref['gain']:.3f}")
        print(f"RATIO {name.split()[0]}_relative_reco_over_lambda0 {m['reco_relative'] / ref['reco_relative']:.3f}")
        print(f"RATIO {name.split()[0]}_val_ce_over_lambda0 {m['val_ce'] / ref['val_ce']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
