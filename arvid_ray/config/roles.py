"""Field roles, read: what the run-name hash, MLflow's params and tags, and a sweep's ``--resume`` check
take from a config. The roles themselves are declared beside each field (``arvid_ray.config.base``)."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from arvid_ray.config.base import BOOKKEEPING, HYPER, ROLES
from arvid_ray.config.experiment import ExperimentConfig

_DEFAULT_META = {"role": HYPER, "may_differ_on_resume": False, "in_identity": True, "identity_if_set": False}


@functools.cache
def _field_metadata() -> dict[str, dict[str, Any]]:
    """Dotted key of every config field → its role metadata, in declaration order."""
    out: dict[str, dict[str, Any]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = {**_DEFAULT_META, **f.metadata}

    walk(ExperimentConfig, "")
    return out


def _metadata(key: str) -> dict[str, Any]:
    """A dotted key's field metadata. A flat key below a mapping field (``train.resources_per_worker.GPU``,
    what ``to_flat`` makes of a non-empty mapping) takes its field's; a key that is no field, ``hyper``."""
    fields, name = _field_metadata(), key
    while name and name not in fields:
        name = name.rpartition(".")[0]
    return fields[name] if name else _DEFAULT_META


def field_role(key: str) -> str:
    """The role of a dotted config key: 'hyper', 'resource', 'search' or 'bookkeeping'."""
    return _metadata(key)["role"]


def fields_with_role(*roles: str) -> tuple[str, ...]:
    """Dotted keys of the fields with one of ``roles``, in declaration order."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown field role(s) {sorted(unknown)}; one of {', '.join(ROLES)}")
    return tuple(k for k, meta in _field_metadata().items() if meta["role"] in roles)


def in_identity(key: str) -> bool:
    """Whether the key is part of a run's identity (the hash in its stable name)."""
    return bool(_metadata(key)["in_identity"])


@functools.cache
def _defaults() -> dict[str, Any]:
    return ExperimentConfig().to_flat()


def identity_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The flat config a run's stable name hashes: every key of ``cfg.to_flat()`` in its identity — a field
    marked ``identity_if_set`` only when it differs from its default."""
    defaults = _defaults()
    return {k: v for k, v in cfg.to_flat().items()
            if in_identity(k) and not (_metadata(k)["identity_if_set"] and k in defaults and v == defaults[k])}


def is_tag(key: str) -> bool:
    """Whether MLflow gets the key as a tag (bookkeeping) rather than as a param."""
    return field_role(key) == BOOKKEEPING


def resume_may_differ() -> tuple[str, ...]:
    """Dotted keys a resumed sweep may change: how long and how hard to try, not what it searches."""
    return tuple(k for k, meta in _field_metadata().items() if meta["may_differ_on_resume"])
