"""The data sections: the built-in synthetic set (synth), ingest, the training clips (data), the tokenizer.

Every field here is in a run's identity (role ``hyper``, see ``arvid_ray.config.base``), the decode and
tokenize pool settings included: the run-name hash has always covered them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from arvid_ray.config.base import _check_range, _fail


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
