"""Speed, FLOPs and memory of the paper's objectives, side by side in one run: the full method (Local Opt.
+ first frame + balanced + ReCo, the headline row) vs full vs Local Opt. vs Local+ReCo vs Fewer-Frames (same
model, same batch, same optimizer).

- FLOPs: analytic, counted exactly as training counts them (``cost.step_flops`` on each step's token
  counters: grad tokens x3, the no-grad prefix x1 without the output head it never runs), averaged over the
  same balanced window draws the step times use. ``full_method_time_over_flops_limit`` = (time ratio) /
  (FLOPs ratio) against full: 1 means the method saves exactly the work it skips, > 1 that overheads
  (extra calls, the prefix's cache) eat part of the saving.
- memory names say what they measure: ``saved_activations`` on CPU, ``peak_alloc`` on GPU (below).

What is measured
- step time: one optimizer step = objective forward + backward + AdamW step. On CPU this is the process's
  CPU time with one intra-op thread (``time.process_time``): the work done, robust to the other jobs that
  share the machine (wall clock there swung 2x between identical steps). On GPU: wall clock between CUDA
  synchronisations. The objectives are interleaved step by step (full, local, local+reco, fewer, full, ...) so a
  busy shared machine slows all of them alike. Local windows follow the configured distribution exactly
  (W = 2 of 5 latent frames, balanced: half the steps start at frame 0, the rest spread evenly over the
  later starts): the window-start seeds are chosen so a short run sees the same mix as a long one.
- peak activation memory: on CPU, the bytes of every distinct tensor storage autograd saves for the
  backward pass during the objective's forward (collected with ``torch.autograd.graph.saved_tensors_hooks``,
  parameters excluded). Those tensors are all alive when backward starts, which is the step's activation
  peak; the Local Opt. prefix KV cache is counted because the window's attention saves it. The maximum
  over one step per window start is reported, so Local Opt.'s figure is its worst window (the longest
  no-grad prefix). (``torch.profiler(profile_memory=True)`` gives the same picture but takes ~10 s per
  profiled step on the shared 2-core machine, too slow for ``--quick``.) On GPU: the real allocator peak,
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step.

- step time at scale: a data-parallel step waits for its slowest rank. From the measured per-start times
  of Local+ReCo, the expected step time on R ranks is E[max over R draws] when every rank draws its own
  window start (the old behaviour) and E[t(start)] when all ranks share the start (``train/step.py``
  ``window_seed``: the same seed on every rank); both are printed for 1, 8 and 64 ranks over full's
  step time (full's cost does not depend on a start).
- compiled vs eager Local Opt.: the same Local+ReCo steps with every block compiled
  (``parallel.apply_compile``: inductor, static shapes, so one graph per window start and call kind),
  after a warm-up that compiles every start; compile time is printed, not counted.

Usage: ``python experiments/benchmarks/bench_objectives.py --quick`` (< 2 min on a 2-core CPU), without
``--quick`` a larger CPU shape, and on a GPU ``--device cuda`` runs preset B in bf16 at 5x16x16 and 5x32x32.
Ends with ``RATIO <name> <value>`` lines (the first shape's figures). Each step's time is the
minimum over 2 repeats of the same window draw.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.model import build_model
from arvid_ray.objectives import build_objective, sample_window_start, window_starts
from arvid_ray.train import parallel
from arvid_ray.train.cost import step_flops

VARIANTS = {
    # the headline row: the full method as the paper's table trains it (Local Opt. W=2 with frame 0 always in
    # the loss, balanced starts, ReCo λ = 0.1) — what "the full method's cost" means in RESULTS.md
    "full_method": {"objective.kind": "local", "objective.first_frame_in_loss": True, "objective.reco_weight": 0.1},
    "full": {"objective.kind": "full", "objective.reco_weight": 0.0},
    "local": {"objective.kind": "local", "objective.reco_weight": 0.0},
    "local_reco": {"objective.kind": "local", "objective.reco_weight": 0.1},
    "fewer_frames": {"objective.kind": "fewer_frames", "objective.reco_weight": 0.0},
}


def _config(spatial: int, model: dict) -> ExperimentConfig:
    """17 frames → 5 latent frames; resolution chosen so the grid is spatial x spatial tokens."""
    return ExperimentConfig().replace(**{
        "data.num_frames": 17, "data.resolution": spatial * 8, "tokenizer.spatial_down": 8,
        "objective.window_frames": 2, "objective.stride_frames": 1, "objective.first_frame_prob": 0.5,
        "fewer_frames.num_frames": 2, "model.cfg_dropout": 0.0, **model,
    })


def _balanced_seeds(cfg: ExperimentConfig, steps: int) -> tuple[list[int], list[int]]:
    """Seeds whose window draw gives starts 0, 1, 0, 2, 0, 3, ... (the balanced distribution, exactly)."""
    o, frames = cfg.objective, cfg.latent_frames()
    later = list(range(1, frames - o.window_frames + 1))
    wanted = [0 if i % 2 == 0 else later[(i // 2) % len(later)] for i in range(steps)]
    by_start: dict[int, list[int]] = {}
    seed = 0
    while any(len(by_start.get(s, [])) < wanted.count(s) for s in set(wanted)):
        start = sample_window_start(frames, o.window_frames, o.stride_frames, o.first_frame_prob,
                                    torch.Generator().manual_seed(seed))
        by_start.setdefault(start, []).append(seed)
        seed += 1
    return [by_start[s].pop() for s in wanted], wanted


def start_probs(cfg: ExperimentConfig) -> dict[int, float]:
    """The configured start distribution: frame 0 with first_frame_prob, the rest uniform."""
    o = cfg.objective
    starts = window_starts(cfg.latent_frames(), o.window_frames, o.stride_frames)
    if o.first_frame_prob is None or len(starts) == 1:
        return {s: 1 / len(starts) for s in starts}
    return {0: o.first_frame_prob, **{s: (1 - o.first_frame_prob) / (len(starts) - 1) for s in starts[1:]}}


def expected_step(per_start: dict[int, float], probs: dict[int, float], ranks: int, shared: bool) -> float:
    """Expected data-parallel step time: E[t(s)] with a shared start, else E[max of ``ranks`` iid draws]."""
    if shared or ranks == 1:
        return sum(probs[s] * t for s, t in per_start.items())
    expect, below, prev = 0.0, 0.0, 0.0
    for s, t in sorted(per_start.items(), key=lambda kv: kv[1]):
        below += probs[s]
        expect += t * (below**ranks - prev)  # P(max == t) = P(all <= t) - P(all < t)
        prev = below**ranks
    return expect


class Runner:
    def __init__(self, cfg, base_model, batch, device, dtype, compile_blocks: bool = False):
        self.model = copy.deepcopy(base_model)
        if compile_blocks:
            parallel.apply_compile(self.model, parallel.compile_shape_budget(cfg))
        self.objective = build_objective(cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)  # fused on CPU too (torch>=2.4), as in training
        self.batch, self.device, self.dtype = batch, device, dtype

    def step(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.objective(self.model, self.batch, gen)
        self.counters = {k: float(v) for k, v in out.items() if k.startswith("tokens")}  # host tensors: no sync
        out["loss"].backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_cpu(runner: Runner, seed: int) -> int:
    params = {p.untyped_storage().data_ptr() for p in runner.model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    gen = torch.Generator().manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = runner.objective(runner.model, runner.batch, gen)
    total = sum(saved.values())
    del out  # drop the graph without stepping: memory accounting only
    return total


def _peak_cuda(runner: Runner, seed: int) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    runner.step(seed)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure(spatial: int, model_overrides: dict, batch_size: int, steps: int, vocab: int, device, dtype,
            repeats: int = 2, compiled: bool = True):
    cfg0 = _config(spatial, model_overrides)
    torch.manual_seed(0)
    base = build_model(cfg0.model, vocab, cfg0.latent_shape()).to(device)
    batch = {"tokens": torch.randint(0, vocab, (batch_size, *cfg0.latent_shape()), device=device),
             "label": torch.randint(0, 16, (batch_size,), device=device)}
    runners = {name: Runner(cfg0.replace(**over), base, batch, device, dtype) for name, over in VARIANTS.items()}
    seeds, starts = _balanced_seeds(cfg0, steps)
    first_seed = {s: seeds[starts.index(s)] for s in sorted(set(starts))}
    for r in runners.values():  # warm-up: allocator, optimizer state, kernels
        r.step(seeds[0])
    compile_s = 0.0
    if compiled:
        runners["full_method_compiled"] = Runner(cfg0.replace(**VARIANTS["full_method"]), base, batch, device,
                                                 dtype, compile_blocks=True)
        if device.type == "cuda":  # the compiled baseline too (one shape: cheap to compile)
            runners["full_compiled"] = Runner(cfg0.replace(**VARIANTS["full"]), base, batch, device, dtype,
                                              compile_blocks=True)
        t0 = time.perf_counter()
        for seed in first_seed.values():  # compile every window start's graphs (not timed)
            for name in ("full_method_compiled", "full_compiled"):
                if name in runners:
                    runners[name].step(seed)
        compile_s = time.perf_counter() - t0
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = {name: 0.0 for name in runners}
    flops = {name: 0.0 for name in runners}  # analytic, as training counts it (cost.step_flops), per step
    times_by_start: dict[str, dict[int, list[float]]] = {name: {} for name in runners}
    for seed, start in zip(seeds, starts):
        best = {name: float("inf") for name in runners}
        for _ in range(repeats):  # min over repeats of the same window: the least-disturbed measurement
            for name, r in runners.items():
                _sync(device)
                t0 = clock()
                r.step(seed)
                _sync(device)
                best[name] = min(best[name], clock() - t0)
        for name, r in runners.items():
            times[name] += best[name] / len(seeds)
            c = r.counters
            flops[name] += step_flops(base.forward_flops, batch_size, c["tokens_grad"], c["tokens_nograd"],
                                      base.head_flops) / len(seeds)
            times_by_start[name].setdefault(start, []).append(best[name])
    peak_fn = _peak_cuda if device.type == "cuda" else _peak_cpu
    # saved-tensor hooks do not see inside compiled graphs: the compiled variant's CPU peak is not measured
    peaks = {name: max(peak_fn(r, s) for s in first_seed.values()) if device.type == "cuda" or name in VARIANTS
             else float("nan") for name, r in runners.items()}
    start_times = {name: {s: sum(v) / len(v) for s, v in by.items()} for name, by in times_by_start.items()}
    return base, cfg0, times, peaks, start_times, compile_s, flops


def attention_kernels(runner: Runner, seed: int) -> dict[str, int]:
    """SDPA kernels (aten ops) one Local Opt. step runs, counted by the profiler; ``seed`` draws start > 0."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        runner.step(seed)
    names = ("flash", "efficient", "math", "cudnn")
    return {e.key: e.count for e in prof.key_averages()
            if "attention" in e.key and any(n in e.key for n in names) and e.key.startswith("aten::")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced CPU run (< 2 min)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled Local+ReCo variant")
    ap.add_argument("--kernel", action="store_true", help="print the SDPA kernels a Local Opt. window step runs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads on CPU (1: no spin contention on a shared 2-core machine)")
    args = ap.parse_args()
    device = torch.device(args.device)
    vocab = 8192  # the paper's OmniTokenizer codebook: the prefix computes no logits, so the head matters
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        dtype = torch.float32
        small = {"model.preset": "S", "model.n_layers": 4, "model.d_model": 192, "model.n_heads": 4}
        plan = [(8, small, 2, 6)] if args.quick else [(8, {"model.preset": "S"}, 4, 12)]
    else:
        dtype = torch.bfloat16
        plan = [(16, {"model.preset": "B"}, 16, 12), (32, {"model.preset": "B"}, 4, 12)]
    print(f"device={device} ({platform.processor() or platform.machine()}), dtype={dtype}, torch={torch.__version__}")
    # what the memory column measures differs by device, and so does its name
    mem = "saved_activations" if device.type == "cpu" else "peak_alloc"
    first = None
    for spatial, overrides, batch_size, steps in plan:
        model, cfg, times, peaks, start_times, compile_s, flops = measure(
            spatial, overrides, batch_size, steps, vocab, device, dtype, compiled=not args.no_compile)
        d = model.dims
        print(f"\nshape 5x{spatial}x{spatial} tokens, batch {batch_size}, vocab {vocab}, model {d.n_layers}x"
              f"{d.d_model} ({model.num_params / 1e6:.1f}M params), {steps} timed steps per objective")
        print(f"memory column: {mem} ({'bytes autograd saves for backward' if mem == 'saved_activations' else 'allocator peak of the step'})")
        print(f"{'objective':<22}{'step ms':>10}{'x full':>8}{'GFLOP':>9}{'x full':>8}{'time/FLOPs':>11}"
              f"{mem + ' MiB':>24}{'x full':>8}")
        for name in times:
            t, f = times[name] / times["full"], flops[name] / flops["full"]
            print(f"{name:<22}{times[name] * 1e3:>10.1f}{t:>8.2f}{flops[name] / 1e9:>9.2f}{f:>8.3f}{t / f:>11.2f}"
                  f"{peaks[name] / 2**20:>24.1f}{peaks[name] / peaks['full']:>8.2f}")
        probs = start_probs(cfg.replace(**VARIANTS["full_method"]))
        per_start = start_times["full_method"]
        print("full_method per window start (ms): "
              + ", ".join(f"{s}: {t * 1e3:.1f} (p={probs[s]:.2f})" for s, t in sorted(per_start.items())))
        scale = {}
        for ranks in (1, 8, 64):
            own = expected_step(per_start, probs, ranks, shared=False) / times["full"]
            shared = expected_step(per_start, probs, ranks, shared=True) / times["full"]
            scale[ranks] = (own, shared)
            print(f"expected step time x full on {ranks:>2} ranks: per-rank starts {own:.3f}, shared start {shared:.3f}")
        if "full_method_compiled" in times:
            print(f"compile of every window start's block graphs: {compile_s:.1f}s (not in the step times)")
        if "full_compiled" in times:
            print(f"compiled: full_method over full {times['full_method_compiled'] / times['full_compiled']:.3f}")
        if args.kernel:
            c = cfg.replace(**VARIANTS["local"])
            seed = _balanced_seeds(c, 2)[0][1]  # the second draw starts after frame 0
            runner = Runner(c, model, {"tokens": torch.randint(0, vocab, (batch_size, *c.latent_shape()),
                                                              device=device),
                                       "label": torch.zeros(batch_size, dtype=torch.long, device=device)},
                            device, dtype)
            kernels = attention_kernels(runner, seed)
            print(f"attention kernels of one Local Opt. step (window start > 0): {kernels}")
            flash = sum(n for k, n in kernels.items() if "flash" in k)
            print(f"RATIO attention_flash_share_{spatial}x{spatial} {flash / max(sum(kernels.values()), 1):.3f}")
        first = first or (times, peaks, scale, flops)
    times, peaks, scale, flops = first
    # headline: the full method against full, and against its analytic limit (time ratio / FLOPs ratio = 1
    # would mean the method saves exactly the work it skips)
    fm_time, fm_flops = times["full_method"] / times["full"], flops["full_method"] / flops["full"]
    print(f"RATIO step_time_full_method_over_full {fm_time:.3f}")
    print(f"RATIO flops_full_method_over_full {fm_flops:.3f}")
    print(f"RATIO full_method_time_over_flops_limit {fm_time / fm_flops:.3f}")
    print(f"RATIO {mem}_full_method_over_full {peaks['full_method'] / peaks['full']:.3f}")
    for name in ("local_reco", "local", "fewer_frames"):
        print(f"RATIO step_time_{name}_over_full {times[name] / times['full']:.3f}")
        print(f"RATIO flops_{name}_over_full {flops[name] / flops['full']:.3f}")
        print(f"RATIO {mem}_{name}_over_full {peaks[name] / peaks['full']:.3f}")
    for ranks in (8, 64):
        print(f"RATIO step_time_full_method_over_full_{ranks}ranks {scale[ranks][1]:.3f}")
        print(f"RATIO step_time_full_method_over_full_{ranks}ranks_per_rank_starts {scale[ranks][0]:.3f}")
    if "full_method_compiled" in times:
        print(f"RATIO full_method_compiled_over_eager {times['full_method_compiled'] / times['full_method']:.3f}")


if __name__ == "__main__":
    main()
