"""Sampling throughput: the static-cache sampler (issue 24) against the sampler it replaced, same model,
batch and seed.

What is measured
- old: the decode loop before issue 24, kept here (and only here) as the reference — fp32, one eager Python
  step per token through ``forward_with_cache``, whose cache grows by concatenating every layer's keys and
  values (O(L) copies per token).
- new: ``arvid_ray.sampling._decode`` — a preallocated ``StaticKVCache`` written in place, one decode step per
  token (eager with exact keys on CPU by default; ``--compile on``: torch.compile with static shapes; on CUDA
  the step is replayed from a CUDA graph, in bf16 unless ``--precision fp32``), CFG as one batched pass.
- both sample ``--compare-videos`` videos x all tokens of the latent grid from the same seed; in fp32 the
  token ids must be identical (printed). ``sample_tokens_per_s`` counts video tokens (CFG's second row is
  work, not output).
- forward: one teacher-forced ``model.forward`` over the same tokens and rows (2 per video under CFG), in
  the same precision: the throughput a decoder could reach if it were as efficient as training's forward.
- at scale (``--videos`` > ``--compare-videos``): the new sampler over ``--videos`` videos in batches of
  ``--batch``, the seconds it took and the video tokens per second.

Timing: on CPU the process's CPU time with ``--threads`` intra-op threads (default 1: robust to other jobs
on a shared machine, as bench_objectives); compile time is wall clock, printed apart and included in the
compiled sampler's end-to-end figure. On GPU: wall clock between CUDA synchronisations; the graph capture
(and compile) happens in an untimed warm-up run.

Usage: ``python experiments/benchmarks/bench_sampling.py --quick`` (< 2 min on a 2-core CPU; also measures
the compiled step), ``--device cuda --preset B --latent 5x16x16 --videos 2048 --batch 256`` for the GPU suite.
Ends with ``RATIO sample_tokens_per_s_new_over_old`` and ``RATIO decode_over_forward_tokens_per_s``.
"""

from __future__ import annotations

import argparse
import time

import torch


def _old_decode(model, cond, uncond, prefix, n_new, cfg, generator):
    """The sampler before issue 24 (``sampling._decode`` at commit 88d5b20), verbatim but for names."""
    from arvid_ray.sampling import guide, sample_logits

    batch = prefix.shape[0]
    if uncond is not None:  # (2B, ...): conditional rows first, unconditional rows second
        cond, prefix = torch.cat([cond, uncond]), torch.cat([prefix, prefix])
    out = model.prefill(cond, prefix)
    new = []
    for i in range(n_new):
        logits = out.logits[:, -1]
        if uncond is not None:
            logits = guide(logits, batch, cfg.cfg_scale)
        token = sample_logits(logits, cfg, generator)  # (B,)
        new.append(token)
        if i + 1 < n_new:
            step_in = token if uncond is None else torch.cat([token, token])
            out = model.forward_with_cache(step_in[:, None], prefix.shape[1] + i, out.cache, hidden_layer=-1)
    return torch.stack(new, dim=1)


class _Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def _new_decode(model, cond, uncond, prefix, n_new, cfg, generator, cache_tokens=None):
    from arvid_ray.sampling import _Decoder

    return _Decoder(model, cond, uncond, cache_tokens or prefix.shape[1] + n_new, cfg)(prefix, n_new, generator)


def _warm_up(model, labels, n_tokens, cfg) -> None:
    """Two decode steps on a cache of the timed run's size: torch.compile compiles for these shapes here."""
    _sample(_new_decode, model, labels, 2, cfg, 0, lambda: 0.0, cache_tokens=n_tokens)


def _sample(fn, model, labels, n_tokens, cfg, seed, clock, **kw) -> tuple[torch.Tensor, float]:
    device = labels.device
    with torch.no_grad():
        t0 = clock()
        cond = model.condition(labels, force_drop=False)
        uncond = model.condition(labels, force_drop=True) if cfg.cfg_scale != 1.0 else None
        prefix = torch.zeros(len(labels), 0, dtype=torch.long, device=device)
        out = fn(model, cond, uncond, prefix, n_tokens, cfg, torch.Generator(device=device).manual_seed(seed), **kw)
        return out, clock() - t0


def _forward_time(model, tokens, labels, cfg, dtype, clock, repeats: int = 3) -> float:
    """Seconds of one teacher-forced forward over ``tokens`` [B, t, h, w] (and their CFG rows): min of repeats."""
    rows = labels if cfg.cfg_scale == 1.0 else torch.cat([labels, labels])
    drop = torch.zeros(len(rows), dtype=torch.bool, device=labels.device)
    drop[len(labels):] = True
    toks = tokens if cfg.cfg_scale == 1.0 else torch.cat([tokens, tokens])
    best = float("inf")
    with torch.no_grad(), torch.autocast(labels.device.type, dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(repeats):
            t0 = clock()
            cond = torch.cat([model.condition(rows[:len(labels)], force_drop=False),
                              model.condition(rows[len(labels):], force_drop=True)]) if drop.any() else \
                model.condition(rows, force_drop=False)
            model.forward(toks, cond)
            best = min(best, clock() - t0)
    return best


def _model(args, device):
    from arvid_ray.config import ModelConfig
    from arvid_ray.model import build_model

    torch.manual_seed(0)
    shape = tuple(int(s) for s in args.latent.split("x"))
    model = build_model(ModelConfig(preset=args.preset, conditioning="class", cfg_dropout=0.1), args.vocab, shape)
    return model.to(device).eval(), shape


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CPU run (< 2 min), with the compiled step")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default=None, help="model preset (default: S, or debug with --quick)")
    ap.add_argument("--latent", default=None, help="latent grid TxHxW (default 5x8x8, 5x16x16 with --quick)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--cfg-scale", type=float, default=2.0, help="1 = no CFG")
    ap.add_argument("--compare-videos", type=int, default=16, help="videos both samplers draw (one batch)")
    ap.add_argument("--videos", type=int, default=0, help="videos for the at-scale run of the new sampler (0: off)")
    ap.add_argument("--batch", type=int, default=256, help="videos per decoding pass in the at-scale run")
    ap.add_argument("--measure-batches", type=int, default=0,
                    help="time only this many at-scale batches and extrapolate to --videos (0: all)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", default=None, choices=["auto", "on", "off"],
                    help="the new sampler's step (default auto); on CPU --quick also times 'on' unless given")
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from arvid_ray.config import SamplingConfig
    from arvid_ray.sampling import _precision

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    args.preset = args.preset or ("debug" if args.quick else "S")
    args.latent = args.latent or ("5x16x16" if args.quick else "5x8x8")
    model, shape = _model(args, device)
    n_tokens = shape[0] * shape[1] * shape[2]
    clock = _Clock(device)
    base = dict(temperature=1.0, top_k=0, cfg_scale=args.cfg_scale, precision=args.precision)
    cfg = SamplingConfig(**base, compile=args.compile or "auto")
    dtype = _precision(cfg, device)
    b = args.compare_videos
    labels = torch.arange(b, device=device) % model.conditioner.num_classes \
        if hasattr(model.conditioner, "num_classes") else torch.zeros(b, dtype=torch.long, device=device)
    print(f"# bench_sampling device={device} preset={args.preset} latent={shape} tokens={n_tokens} vocab={args.vocab} "
          f"cfg_scale={args.cfg_scale} precision={dtype} compile={cfg.compile} threads={torch.get_num_threads()}")

    old, t_old = _sample(_old_decode, model, labels, n_tokens, cfg, args.seed, clock)
    if device.type == "cuda":  # warm-up: compile (and CUDA's lazy init) happen here, untimed
        _warm_up(model, labels, n_tokens, cfg)
    new, t_new = _sample(_new_decode, model, labels, n_tokens, cfg, args.seed, clock)
    tps_old, tps_new = b * n_tokens / t_old, b * n_tokens / t_new
    print(f"old: {b} videos x {n_tokens} tokens in {t_old:.2f} s = {tps_old:.0f} tokens/s (fp32, concatenating cache)")
    print(f"new: {b} videos x {n_tokens} tokens in {t_new:.2f} s = {tps_new:.0f} tokens/s "
          f"({str(dtype).removeprefix('torch.')}, static cache, compile={cfg.compile})")
    same = torch.equal(old, new)
    print(f"identical_samples {same}" + ("" if dtype == torch.float32 else " (bf16 against the fp32 reference: equality not required)"))
    if device.type == "cpu" and args.quick and args.compile is None:  # measure the CPU default's alternative
        t0 = time.perf_counter()
        comp, t_comp = _sample(_new_decode, model, labels, n_tokens, SamplingConfig(**base, compile="on"), args.seed,
                               clock)
        wall_first = time.perf_counter() - t0
        comp2, t_comp2 = _sample(_new_decode, model, labels, n_tokens, SamplingConfig(**base, compile="on"),
                                 args.seed, clock)
        print(f"compiled (CPU): first call {wall_first:.1f} s wall incl. compile; warm {b * n_tokens / t_comp2:.0f} "
              f"tokens/s (eager new: {tps_new:.0f}); identical to eager new {torch.equal(comp, new) and torch.equal(comp2, new)}")
    t_fwd = _forward_time(model, new.view(b, *shape), labels, cfg, dtype, clock)
    tps_fwd = b * n_tokens / t_fwd
    print(f"forward: teacher-forced over the same {b} videos{' (+ CFG rows)' if args.cfg_scale != 1 else ''} in "
          f"{t_fwd:.3f} s = {tps_fwd:.0f} tokens/s")
    if args.videos > b:
        done, t_all, batches = 0, 0.0, 0
        while done < args.videos and not 0 < args.measure_batches <= batches:
            n = min(args.batch, args.videos - done)
            lab = torch.arange(done, done + n, device=device) % getattr(model.conditioner, "num_classes", 1)
            if device.type == "cuda" and batches == 0:
                _warm_up(model, lab, n_tokens, cfg)  # compile for this batch size
            _, t = _sample(_new_decode, model, lab, n_tokens, cfg, args.seed + done, clock)
            done, t_all, batches = done + n, t_all + t, batches + 1
        what = "" if done == args.videos else f" ({done} timed, extrapolated)"
        total = t_all * args.videos / done
        print(f"at scale: {args.videos} videos x {n_tokens} tokens in batches of {args.batch}: {total:.1f} s{what} = "
              f"{done * n_tokens / t_all:.0f} tokens/s")
    print(f"RATIO sample_tokens_per_s_new_over_old {tps_new / tps_old:.3f}")
    print(f"RATIO decode_over_forward_tokens_per_s {tps_new / tps_fwd:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
