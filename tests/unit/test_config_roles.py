"""Field roles (arvid_ray/config/base.py) and what is derived from them: the run-name hash, MLflow's
params and tags, and what a resumed sweep may change.

The run names below are those of the last landed code (8b4606a, before train.budget_gpu_hours existed) and
the params/tags digests were computed before the roles existed (three hand-kept lists of dotted keys,
commit ca356c8): an interrupted sweep or an old run directory is found by its name, so these must never
change for an existing config. A new ``hyper`` field would change the name of every run whose identity
includes it: mark it ``identity_if_set`` (it enters the hash only away from its default), and give a field
that does not change what is trained another role."""

from __future__ import annotations

import hashlib
import json

import pytest

from arvid_ray.config import (
    BOOKKEEPING,
    HYPER,
    RESOURCE,
    SEARCH,
    ExperimentConfig,
    field_role,
    fields_with_role,
    identity_params,
    in_identity,
    is_tag,
    resume_may_differ,
)
from arvid_ray.runs import run_name
from arvid_ray.tracking.server import config_params

VARIANTS = {
    "default": {},
    "full_long": {"objective.kind": "full", "train.steps": 500, "data.num_frames": 33, "train.lr": 1e-4},
    "local_dicts": {"objective.window_frames": 3, "objective.first_frame_prob": None,
                    "eval.drift_multipliers": [2, 4, 8], "cost.price_per_hour": {"cpu": 0.1},
                    "train.resources_per_worker": {"TPU": 1.0}, "model.preset": "S"},
    "verbose_fsdp": {"experiment.verbose": True, "train.parallelism": "fsdp", "train.num_workers": 4,
                     "storage.root": "s3://bucket/p", "tracking.uri": "http://u:tok@host:5000",
                     "sweep.num_samples": 3, "experiment.name": "exp2"},
}
# variant → (run name, sha256[:16] of json [params, tags]) as logged before the roles
PINNED = {
    "default": ("arvid-synthetic-ae48eb9e", "0d611f1ee864ab01"),
    "full_long": ("arvid-synthetic-4bb04516", "8ec5be0745647b1c"),
    "local_dicts": ("arvid-synthetic-05586f75", "87fb3aa159c8e72b"),
    "verbose_fsdp": ("exp2-6083c209", "12ab9ff65da72adc"),
}
# the keys of the default config left out of the run-name hash before the roles (runs._NOT_IDENTITY)
NOT_IDENTITY = {
    "experiment.workdir", "storage.root", "storage.s3_endpoint", "storage.s3_region", "storage.s3_anonymous",
    "storage.gcs_endpoint", "storage.gcs_project", "storage.gcs_anonymous", "train.log_every",
    "train.num_workers", "train.cpus_per_worker", "train.resources_per_worker", "train.accelerator_type",
    "train.resource_timeout_s", "train.max_failures", "train.storage_path", "train.run_name",
    "train.fail_at_step", "train.final_eval", "train.parallelism", "train.activation_checkpointing",
    "train.report_every", "tracking.enabled", "tracking.uri", "tracking.system_metrics",
    "tracking.parent_run_id", "tracking.run_id", "tracking.flush_timeout_s", "sweep.name", "sweep.num_samples",
    "sweep.mode", "sweep.metric", "sweep.cost_metric", "sweep.search_space", "sweep.include_baseline",
    "sweep.max_concurrent_trials", "sweep.max_failures", "sweep.driver_resource", "sweep.time_budget_s",
    "sweep.asha_grace_steps", "sweep.prune_on", "sweep.seed",
}
# logged as MLflow tags before the roles (tracking.server.TAG_PREFIXES)
TAGS = {
    "experiment.workdir", "experiment.verbose", "storage.root", "storage.s3_endpoint", "storage.s3_region",
    "storage.s3_anonymous", "storage.gcs_endpoint", "storage.gcs_project", "storage.gcs_anonymous",
    "train.storage_path", "train.run_name", "tracking.enabled", "tracking.uri", "tracking.system_metrics",
    "tracking.parent_run_id", "tracking.run_id", "tracking.flush_timeout_s",
}
# what a resumed sweep could change before the roles (sweep.state.RESUME_MAY_DIFFER)
RESUME = {"experiment.verbose", "sweep.max_concurrent_trials", "sweep.time_budget_s", "sweep.max_failures",
          "train.max_failures", "train.resource_timeout_s"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_run_names_and_logged_params_are_pinned(variant):
    cfg = ExperimentConfig().replace(**VARIANTS[variant])
    params, tags = config_params(cfg)
    digest = hashlib.sha256(json.dumps([params, tags], sort_keys=True).encode()).hexdigest()[:16]
    assert (run_name(cfg), digest) == PINNED[variant]


def test_settings_outside_the_identity_keep_the_run_name():
    base = run_name(ExperimentConfig())
    for key, value in {"train.num_workers": 8, "storage.root": "/shared", "sweep.metric": "eval/fvd",
                       "train.resources_per_worker": {"TPU": 2.0}, "tracking.enabled": False,
                       "train.max_failures": 0}.items():
        assert run_name(ExperimentConfig().replace(**{key: value})) == base, key
    assert run_name(ExperimentConfig().replace(**{"train.lr": 1e-4})) != base


def test_roles_reproduce_the_three_lists_they_replace():
    flat = ExperimentConfig().to_flat()
    assert {k for k in flat if not in_identity(k)} == NOT_IDENTITY
    assert {k for k in flat if is_tag(k)} == TAGS == set(fields_with_role(BOOKKEEPING))
    assert set(resume_may_differ()) == RESUME
    # at its default a field added later (identity_if_set) is left out too: the names stay as they were
    assert set(identity_params(ExperimentConfig())) == set(flat) - NOT_IDENTITY - {"train.budget_gpu_hours"}


def test_every_field_has_a_known_role_and_flat_subkeys_take_their_fields():
    flat = ExperimentConfig().to_flat()
    assert set(fields_with_role(HYPER, RESOURCE, SEARCH, BOOKKEEPING)) == set(flat)
    assert set(fields_with_role(SEARCH)) | set(fields_with_role(RESOURCE)) >= {
        k for k in flat if k.startswith("sweep.")}
    assert field_role("train.resources_per_worker.GPU") == RESOURCE  # to_flat of a non-empty mapping
    assert field_role("experiment.verbose") == BOOKKEEPING and in_identity("experiment.verbose")  # kept: old names
    assert field_role("no.such_key") == HYPER and in_identity("no.such_key")
    with pytest.raises(ValueError, match="unknown field role"):
        fields_with_role("hyperparameter")


def test_old_constants_are_derived_from_the_roles():
    from arvid_ray.sweep import RESUME_MAY_DIFFER
    from arvid_ray.tracking import TAG_PREFIXES

    assert set(RESUME_MAY_DIFFER) == RESUME
    assert set(TAG_PREFIXES) == TAGS


def test_a_field_added_later_names_only_the_runs_that_set_it():
    """train.budget_gpu_hours (added after runs existed) is identity_if_set: at its default it is not hashed,
    so every existing run keeps its name; set, it gives the run a name of its own."""
    base = ExperimentConfig()
    assert "train.budget_gpu_hours" not in identity_params(base)
    budget = base.replace(**{"train.budget_gpu_hours": 0.3})
    assert identity_params(budget)["train.budget_gpu_hours"] == 0.3
    assert run_name(budget) != run_name(base) == PINNED["default"][0]
