"""Typed experiment configuration: frozen dataclasses, one per concern.

Design trade-off: one ``ExperimentConfig`` holds every section so that a Tune trial can turn its flat dict
into the typed config once, at the trial boundary (``ExperimentConfig.from_flat``), and so that a YAML
file, a ``key=value`` override and a Tune search-space key all use the same dotted names that MLflow shows
as params. Each section validates itself in ``__post_init__``; cross-section rules (a window larger than
the clip) live in ``ExperimentConfig.__post_init__``. Errors name the field and the allowed values.

One module per concern, every name importable from ``arvid_ray.config`` as before the split:

- ``base``       — ConfigError, the range checks, the field roles (hyper, resource, search, bookkeeping);
- ``data``       — synth, ingest, data, tokenizer;
- ``model``      — model, objective, fewer_frames;
- ``train``      — train, cost;
- ``evaluate``   — sampling, eval;
- ``sweep``      — sweep;
- ``tracking``   — storage, tracking;
- ``experiment`` — the experiment section and ExperimentConfig (cross-section rules, conversions);
- ``build``      — nested dicts and dotted keys ↔ dataclasses, value coercion;
- ``load``       — YAML files and overrides → ExperimentConfig; ``config_keys`` (``arvid-ray config``);
- ``roles``      — what the run-name hash, MLflow params/tags and ``--resume`` take from the roles.
"""

from __future__ import annotations

from arvid_ray.config.base import BOOKKEEPING, HYPER, RESOURCE, ROLES, SEARCH, ConfigError, role
from arvid_ray.config.build import flatten
from arvid_ray.config.data import DataConfig, IngestConfig, SynthConfig, TokenizerConfig
from arvid_ray.config.evaluate import EvalConfig, SamplingConfig
from arvid_ray.config.experiment import ExperimentConfig, ExperimentSection
from arvid_ray.config.load import config_keys, load_config
from arvid_ray.config.model import (
    ConditioningKind,
    FewerFramesConfig,
    ModelConfig,
    ModelPreset,
    ObjectiveConfig,
    ObjectiveKind,
)
from arvid_ray.config.roles import (
    field_role,
    fields_with_role,
    identity_params,
    in_identity,
    is_tag,
    resume_may_differ,
)
from arvid_ray.config.sweep import SweepConfig
from arvid_ray.config.tracking import StorageConfig, TrackingConfig
from arvid_ray.config.train import CostConfig, TrainConfig

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
    "config_keys",
    "flatten",
    "ModelPreset",
    "ConditioningKind",
    "ObjectiveKind",
    "HYPER",
    "RESOURCE",
    "SEARCH",
    "BOOKKEEPING",
    "ROLES",
    "role",
    "field_role",
    "fields_with_role",
    "identity_params",
    "in_identity",
    "is_tag",
    "resume_may_differ",
]
