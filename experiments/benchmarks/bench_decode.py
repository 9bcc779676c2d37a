"""Decode throughput: the Ray Data clip stream vs raw single-process PyAV decode of the same files.

Three decoders of the same H.264 videos (synthetic, 64x64, 33 frames → uint8 RGB clips), side by side
in one run, interleaved twice (best of two):

- ``pyav``: one process, one decoder thread — the per-core reference;
- ``pool``: K plain processes (multiprocessing, fork) splitting the same files — what K cores of
  *this machine* can do at best with no framework at all (small cloud VMs often scale well below K×);
- ``ray``: the Ray Data clip stream (``arvid_ray.clips.clip_stream``), K decode actors, consumed
  in batches of 16 as a trainer would; its steady-state rate is the slope of delivered frames over
  time between 10 % and 90 % of the stream (what a long training epoch sees); the start-up latency
  (actor start, imports, read planning) and the end-to-end rate including it are printed too.

The files are laid out as ``arvid-ray ingest`` writes them (row groups of
``schemas.VIDEOS_ROW_GROUP_ROWS`` rows in ~64 MiB files). K = the decoders Ray can run at once, capped by the machine's cores.
``RATIO decode_ray_over_pyav_per_core`` is the issue's figure (target >= 0.8);
``RATIO decode_ray_over_process_pool`` separates Ray's own overhead from the machine's scaling
(``RATIO decode_pool_over_pyav_per_core``).

    python experiments/benchmarks/bench_decode.py [--quick] [--videos N] [--cpus K] [--decode-batch B]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arvid_ray import schemas as S
from arvid_ray.clips import clip_stream, decode_rows_per_task
from arvid_ray.config import ExperimentConfig, SynthConfig
from arvid_ray.video.decode import decode_clip
from arvid_ray.video.io import encode_mp4
from arvid_ray.video.synthetic import render_video


def write_videos(path: Path, n: int, synth: SynthConfig) -> list[bytes]:
    unique = [encode_mp4(render_video(i, synth).frames, fps=synth.fps) for i in range(min(n, 64))]
    blobs = [unique[i % len(unique)] for i in range(n)]  # repeat encoded videos: decode cost is the same
    rows = [{S.VIDEO_ID: f"v{i}", S.SOURCE_URI: f"mem://{i}", S.VIDEO: b, S.NUM_FRAMES: synth.num_frames,
             S.FPS: float(synth.fps), S.WIDTH: synth.resolution, S.HEIGHT: synth.resolution, S.LABEL: 0,
             S.CAPTION: "", S.SPLIT: "train", S.SEGMENT_START: 0} for i, b in enumerate(blobs)]
    path.mkdir(parents=True)  # the layout `arvid-ray ingest` writes: small row groups in ~64 MiB files
    table = pa.Table.from_pylist(rows, schema=S.VIDEOS_SCHEMA)
    per_file = max(1, int(S.VIDEOS_FILE_BYTES // max(1, table.nbytes // n)))
    for k, lo in enumerate(range(0, n, per_file)):
        pq.write_table(table.slice(lo, per_file), path / f"part-{k:03d}.parquet",
                       row_group_size=S.VIDEOS_ROW_GROUP_ROWS)
    return blobs


def _decode_all(blobs: list[bytes], num_frames: int, size: int) -> int:
    return sum(len(decode_clip(b, start=0, num_frames=num_frames, size=size, threads=1)) for b in blobs)


def time_pyav(blobs: list[bytes], cfg: ExperimentConfig) -> float:
    start = time.perf_counter()
    frames = _decode_all(blobs, cfg.data.num_frames, cfg.data.resolution)
    return frames / (time.perf_counter() - start)


def time_pool(blobs: list[bytes], cfg: ExperimentConfig, procs: int) -> float:
    """K forked processes, each decoding an equal share; timed from dispatch to the last result."""
    shares = [blobs[k::procs] for k in range(procs)]
    with mp.get_context("fork").Pool(procs) as pool:
        pool.starmap(_decode_all, [(s[:1], 1, cfg.data.resolution) for s in shares])  # warm the workers
        start = time.perf_counter()
        frames = sum(pool.starmap(_decode_all, [(s, cfg.data.num_frames, cfg.data.resolution) for s in shares]))
        return frames / (time.perf_counter() - start)


_MIN_UNITS = 8  # fewer decode units than this leave no steady state between ramp-up and tail


def steady_rate(times: list[float], frames: list[int], burst_s: float = 0.01) -> float:
    """Frames/s in steady state: the least-squares slope of cumulative frames over arrival time,
    fitted to the arrivals between 10 % and 90 % of all frames (no ramp-up, no tail; unlike
    "first batch to last", it does not credit the blocks that were already in flight at the start).
    Batches sliced from one block arrive together: arrivals closer than ``burst_s`` count as one."""
    t_ev, f_ev = [times[0]], [frames[0]]
    for t, f in zip(times[1:], frames[1:]):
        if t - t_ev[-1] < burst_s:
            t_ev[-1], f_ev[-1] = t, f_ev[-1] + f
        else:
            t_ev.append(t)
            f_ev.append(f)
    cum = np.cumsum(f_ev, dtype=np.float64)
    keep = (cum >= 0.1 * cum[-1]) & (cum <= 0.9 * cum[-1])
    t, c = np.asarray(t_ev)[keep], cum[keep]
    if len(t) < 3 or t[-1] <= t[0]:
        raise SystemExit(f"the stream delivered {len(t_ev)} blocks, too few for a steady-state rate: "
                         f"raise --videos (at least {_MIN_UNITS} decode units' worth)")
    return float(np.polyfit(t, c, 1)[0])


def time_ray(path: Path, cfg: ExperimentConfig) -> tuple[float, float, float]:
    """(steady-state frames/s, seconds until the first batch, end-to-end frames/s incl. start-up)."""
    start, times, frames = time.perf_counter(), [], []
    for batch in clip_stream(str(path), cfg, None, train=False).iter_batches(batch_size=16, batch_format="numpy"):
        times.append(time.perf_counter())
        frames.append(batch[S.FRAMES].shape[0] * batch[S.FRAMES].shape[1])
    return steady_rate(times, frames), times[0] - start, sum(frames) / (times[-1] - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (< 2 min on a 2-core CPU)")
    p.add_argument("--videos", type=int, default=None)
    p.add_argument("--cpus", type=int, default=2, help="logical CPUs for the local Ray instance")
    p.add_argument("--decode-batch", type=int, default=0,
                   help="data.decode_batch_size: videos per decode task (0 = the config's auto size)")
    args = p.parse_args(argv)
    n = args.videos or (3840 if args.quick else 9600)
    synth = SynthConfig(num_videos=n, num_frames=33, resolution=64)
    cfg = ExperimentConfig.from_flat({"data.num_frames": 33, "data.resolution": 64, "data.decode_cpus": 1.0,
                                      "data.decode_batch_size": args.decode_batch})
    cores = min(os.cpu_count() or 1, int(args.cpus / cfg.data.decode_cpus))
    rows_per_task = decode_rows_per_task(cfg)
    if n < _MIN_UNITS * rows_per_task:
        p.error(f"--videos {n} gives fewer than {_MIN_UNITS} decode units of {rows_per_task} videos: no steady "
                f"state to measure; use --videos {_MIN_UNITS * rows_per_task} or more (or a smaller --decode-batch)")
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "videos.parquet"
        blobs = write_videos(path, n, synth)
        ray_fps, pyav_fps, pool_fps, startup, e2e = [], [], [], [], []
        for _ in range(2):  # interleave to share background load fairly; streams time from the first batch
            pyav_fps.append(time_pyav(blobs, cfg))
            pool_fps.append(time_pool(blobs, cfg, cores))
            fps, wait, whole = time_ray(path, cfg)
            ray_fps.append(fps)
            startup.append(wait)
            e2e.append(whole)
    best_ray, best_pyav, best_pool = max(ray_fps), max(pyav_fps), max(pool_fps)
    print(f"videos={n} frames/video=33 size=64x64 codec=h264 ray_cpus={args.cpus} cores_used={cores} "
          f"videos/decode task={rows_per_task}")
    print(f"pyav single process: {best_pyav:.0f} frames/s (runs: {', '.join(f'{x:.0f}' for x in pyav_fps)})")
    print(f"{cores}-process pool:      {best_pool:.0f} frames/s (runs: {', '.join(f'{x:.0f}' for x in pool_fps)}); "
          f"this machine scales {best_pool / best_pyav:.2f}x on {cores} cores without any framework")
    print(f"ray data stream:     {best_ray:.0f} frames/s steady state (runs: {', '.join(f'{x:.0f}' for x in ray_fps)}); "
          f"start-up to first batch {min(startup):.1f}s (not counted); "
          f"end to end incl. start-up {max(e2e):.0f} frames/s")
    print(f"RATIO decode_ray_over_pyav_per_core {best_ray / cores / best_pyav:.3f}")
    print(f"RATIO decode_ray_over_pyav_total {best_ray / best_pyav:.3f}")
    print(f"RATIO decode_pool_over_pyav_per_core {best_pool / cores / best_pyav:.3f}")
    print(f"RATIO decode_ray_over_process_pool {best_ray / best_pool:.3f}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
