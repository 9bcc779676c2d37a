"""The evaluation sections: how videos are sampled (sampling) and scored (eval)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from arvid_ray.config.base import _check_range, _fail


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    """Softmax temperature (0 = greedy)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    cfg_scale: float = 1.0
    """Classifier-free guidance scale (1 = conditional only)."""
    context_frames: Optional[int] = None
    """Latent frames kept when rolling out beyond the training length, the anchor included (None = training
    length - 1 when sliding, half of it for blockwise)."""
    mode: Optional[Literal["sliding", "blockwise"]] = None
    """sliding: keep the last context_frames; blockwise: Fewer-Frames inference, one block on the previous.
    None = the objective's protocol: blockwise for fewer_frames (the paper's), sliding otherwise."""
    anchor_first_frame: Optional[bool] = None
    """Past the training length, keep the clip's first latent frame at position 0 of every re-prefilled
    context (then the most recent frames): a full/local model only ever saw the first latent frame (encoded
    alone) there. None = on for full/local, off for fewer_frames, whose short clips start anywhere."""
    shuffle_frames: bool = False
    """Broken control only: permute each sampled video's latent frames after sampling (a measure that cannot
    tell this from a real model does not measure temporal order)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Decode precision: auto = bf16 autocast (and a bf16 KV cache) on GPU, fp32 on CPU."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile the decode step (static shapes): auto = on for GPU, off on CPU, where compiling costs more
    than it saves at evaluation sizes (bench_sampling measures both: experiments/benchmarks/RESULTS.md,
    "bench_sampling.py")."""
    cuda_graphs: bool = True
    """On GPU, replay the decode step from a CUDA graph (no per-op launch cost)."""
    batch_size: int = 0
    """Videos decoded together in evaluation (CFG doubles the rows); 0 = eval.batch_size. A GPU wants hundreds."""

    def __post_init__(self) -> None:
        _check_range("sampling.batch_size", self.batch_size, 0)
        _check_range("sampling.temperature", self.temperature, 0.0)
        _check_range("sampling.top_k", self.top_k, 0)
        _check_range("sampling.top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _check_range("sampling.cfg_scale", self.cfg_scale, 0.0)
        _check_range("sampling.context_frames", self.context_frames, 1)

    def for_objective(self, kind: str) -> SamplingConfig:
        """This config with ``mode`` and ``anchor_first_frame`` resolved for a model trained by objective
        ``kind``: each method rolls out with the positions it trained on (README's objectives table)."""
        fewer = kind == "fewer_frames"
        mode = self.mode or ("blockwise" if fewer else "sliding")
        anchor = (not fewer) if self.anchor_first_frame is None else self.anchor_first_frame
        return dataclasses.replace(self, mode=mode, anchor_first_frame=anchor)


@dataclass(frozen=True)
class EvalConfig:
    num_videos: int = 64
    """Generated videos per evaluation (N is logged with every metric)."""
    extractor: Literal["synthc3d", "i3d"] = "synthc3d"
    """Feature extractor for the Fréchet distance; eval/fvd only comes from a real I3D."""
    i3d_path: Optional[str] = None
    """Local path to the TorchScript I3D (or ARVID_I3D_PATH)."""
    drift_multipliers: tuple[int, ...] = (2, 4)
    """Roll out these multiples of the training length and report per-segment quality."""
    num_sample_videos: int = 8
    """Sample MP4s logged as artifacts (0 = none, metrics only)."""
    batch_size: int = 16
    """Videos generated per sampling batch."""
    drift_videos: int = 16
    """Videos per long-horizon rollout (a k-fold rollout costs k x sampling; 0 = eval.num_videos)."""
    trajectory_videos: int = 16
    """Prompted videos scored against ground-truth trajectories (synthetic data only; 0 = off)."""
    shuffled_control: bool = False
    """Also score the broken control on the same model: its samples and long rollouts again with their latent
    frames shuffled, logged as control/<metric> (a measure that scores them like eval/<metric> does not see
    temporal order). Costs one more sampling pass; reproduce_paper turns it on for the baseline row."""
    quality_every: int = 0
    """Steps between evaluations of the checkpoint during training (0 = only the final evaluation; a
    multiple of train.ckpt_every): quality (eval.extractor's distance) and trajectory error of
    eval.quality_videos videos at training length, by a Ray task with its own resources that reads the
    checkpoint from storage — training does not wait for it. Logged to the trial's run at the checkpoint's
    step as quality/<metric>, beside the training cost at that checkpoint (quality/cost_gpu_hours,
    quality/cost_usd) and the evaluation's own cost (quality/eval_s, never counted as training cost)."""
    quality_videos: int = 0
    """Videos per evaluation during training (0 = eval.num_videos)."""
    quality_cpus: float = 1.0
    """CPUs of the evaluation task during training (it also asks for a GPU when training runs on GPUs)."""

    def __post_init__(self) -> None:
        _check_range("eval.num_videos", self.num_videos, 2)
        _check_range("eval.quality_every", self.quality_every, 0)
        _check_range("eval.quality_cpus", self.quality_cpus, 0.0)
        _check_range("eval.quality_videos", self.quality_videos, 0)
        if self.quality_videos == 1:
            _fail("eval.quality_videos", self.quality_videos, "0 (= eval.num_videos) or >= 2 (a Fréchet distance needs 2)")
        if any(int(m) < 1 for m in self.drift_multipliers):
            _fail("eval.drift_multipliers", self.drift_multipliers, "positive integers such as [2, 4]")
        _check_range("eval.num_sample_videos", self.num_sample_videos, 0)
        _check_range("eval.batch_size", self.batch_size, 1)
        _check_range("eval.drift_videos", self.drift_videos, 0)
        if self.drift_videos == 1:
            _fail("eval.drift_videos", self.drift_videos, "0 (= eval.num_videos) or >= 2 (a Fréchet distance needs 2)")
        _check_range("eval.trajectory_videos", self.trajectory_videos, 0)
