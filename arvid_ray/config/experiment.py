"""The ``experiment`` section and ``ExperimentConfig``: every section, the cross-section rules, and the
conversions (nested dict, dotted keys, YAML) a Tune trial, an override and MLflow share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arvid_ray.config.base import BOOKKEEPING, _fail, role
from arvid_ray.config.build import _build, _set_dotted, _to_plain, flatten
from arvid_ray.config.data import DataConfig, IngestConfig, SynthConfig, TokenizerConfig
from arvid_ray.config.evaluate import EvalConfig, SamplingConfig
from arvid_ray.config.model import FewerFramesConfig, ModelConfig, ObjectiveConfig
from arvid_ray.config.sweep import SweepConfig
from arvid_ray.config.tracking import StorageConfig, TrackingConfig
from arvid_ray.config.train import CostConfig, TrainConfig


@dataclass(frozen=True)
class ExperimentSection:
    name: str = "arvid-synthetic"
    """MLflow experiment name; one experiment per experiment config."""
    seed: int = 0
    """Global seed; per-rank and per-trial seeds are derived from it."""
    workdir: str = field(default="~/.cache/arvid-ray", metadata=role(BOOKKEEPING))
    """Root for caches (synthetic data, ingested Parquet, token caches) and local run storage."""
    # in_identity: the run-name hash has always included it; taking it out would rename every run
    verbose: bool = field(default=False,
                          metadata=role(BOOKKEEPING, may_differ_on_resume=True, in_identity=True))
    """Show Ray's own per-operator progress and INFO lines (the CLI's --verbose); default: the tool's only."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            _fail("experiment.name", self.name, "must be a non-empty name without '/'")

    def workdir_path(self) -> Path:
        return Path(self.workdir).expanduser().resolve()


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
