"""What every config section shares: ConfigError, the range checks, and the field roles.

A field's role says what kind of setting it is, once, beside the field — the run-name hash, the MLflow
params/tags split and the sweep ``--resume`` check derive from it (``arvid_ray.config.roles``) instead
of each keeping its own list of dotted keys:

- ``hyper`` (the default, no metadata): what a run trains or measures — part of the run's identity (the
  hash in its stable name), an MLflow param, and fixed when a sweep resumes. A few execution settings
  (``data.decode_*``, ``tokenizer.concurrency``, ...) are here too: the run-name hash has always included
  them, and taking them out would rename every existing run;
- ``resource``: where and how a run executes — workers and their resources, accelerator type,
  parallel layout, retries, time-outs, log and report cadence, the rank-0 final evaluation, the
  fault-injection test hook. Not in the identity; an MLflow param (the cost depends on them);
- ``search``: the sweep's own settings (its name, what it searches, how it ranks trials, how many). The
  same for every trial, so in no trial's identity; an MLflow param;
- ``bookkeeping``: names and places — storage, run names, tracking, console verbosity. Not in the
  identity; an MLflow tag (an unset one is not logged).

Three flags refine a role: ``may_differ_on_resume`` (how long and how hard to try: a resumed sweep may
change it), ``in_identity`` (a non-hyper field the run-name hash has always included; only
``experiment.verbose``) and ``identity_if_set`` (a hyper field added after runs existed: it enters the
identity only when set to something other than its default, so adding it renames no existing run).
"""

from __future__ import annotations

from typing import Any

HYPER = "hyper"
RESOURCE = "resource"
SEARCH = "search"
BOOKKEEPING = "bookkeeping"
ROLES = (HYPER, RESOURCE, SEARCH, BOOKKEEPING)


def role(kind: str, *, may_differ_on_resume: bool = False, in_identity: bool | None = None,
         identity_if_set: bool = False) -> dict[str, Any]:
    """Field metadata for a role: ``field(default=..., metadata=role(RESOURCE))``. ``in_identity``
    defaults to ``kind == HYPER``; ``identity_if_set``: in the identity only away from its default (every
    hyper field added after the first runs: ``field(default=..., metadata=role(HYPER, identity_if_set=True))``)."""
    if kind not in ROLES:
        raise ValueError(f"unknown field role {kind!r}; one of {', '.join(ROLES)}")
    return {"role": kind, "may_differ_on_resume": may_differ_on_resume,
            "in_identity": kind == HYPER if in_identity is None else in_identity,
            "identity_if_set": identity_if_set}


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
