"""Where a sweep lives, and what ``--resume`` may finish.

Design trade-off: Tune's own state (``tuner.pkl`` and the trials' directories) says how to continue a
sweep but not what was asked for, so the sweep writes ``arvid_sweep.json`` beside it: the flat config
and whether it finished. ``--resume`` then refuses, before Ray starts, a sweep name that has no state (a
typo must not start a new full sweep) and a config that differs from the interrupted sweep's in
anything but how it runs; a bare ``--resume`` finishes the latest interrupted sweep of its name. Sweeps
from before the state file still resume (counted as interrupted, configs not compared).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig, resume_may_differ

log = logging.getLogger(__name__)

SWEEP_STATE = "arvid_sweep.json"  # beside Tune's tuner.pkl: the sweep's config and whether it finished
TUNE_STATE = "tuner.pkl"  # what Tuner.can_restore looks for
# what a resume may change: how the sweep runs, not what it searches or measures (the fields marked
# may_differ_on_resume: arvid_ray/config/base.py)
RESUME_MAY_DIFFER = resume_may_differ()


def sweep_storage(cfg: ExperimentConfig) -> str:
    """Tune storage: train.storage_path, else ``<storage root>/sweeps`` (local path or URI)."""
    from arvid_ray import storage as st

    return st.absolute(cfg.train.storage_path) if cfg.train.storage_path else st.join(st.storage_root(cfg), "sweeps")


def fresh_sweep_name(cfg: ExperimentConfig, storage: str) -> ExperimentConfig:
    """A new sweep never silently resumes an old one: suffix the name if its directory exists."""
    from arvid_ray import storage as st

    base, n = cfg.sweep.name, 1
    name = base
    while st.exists(st.join(storage, name), cfg.storage):
        n += 1
        name = f"{base}-{n}"
    return cfg.replace(**{"sweep.name": name}) if name != base else cfg


def _sweep_states(cfg: ExperimentConfig, storage: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, state) of every sweep under ``storage`` holding Tune state, oldest first. A sweep that
    predates the state file, or whose process died, has no 'finished' state: it counts as interrupted."""
    from pyarrow import fs

    from arvid_ray import storage as st

    filesystem, inner = st.resolve(storage, cfg.storage)
    if filesystem.get_file_info(inner).type != fs.FileType.Directory:
        return []
    found = []
    for info in filesystem.get_file_info(fs.FileSelector(inner)):
        tune_state = filesystem.get_file_info(f"{info.path}/{TUNE_STATE}")
        if info.type != fs.FileType.Directory or tune_state.type != fs.FileType.File:
            continue
        name = info.base_name
        state: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, OSError, ValueError):
            state = json.loads(st.read_text(st.join(storage, name, SWEEP_STATE), cfg.storage))
        started = float(state.get("started") or (tune_state.mtime.timestamp() if tune_state.mtime else 0.0))
        found.append((name, {**state, "started": started}))
    return sorted(found, key=lambda item: (item[1]["started"], item[0]))


def interrupted_sweeps(cfg: ExperimentConfig, storage: str) -> list[str]:
    """Names of the sweeps under ``storage`` that did not finish, oldest first."""
    return [name for name, state in _sweep_states(cfg, storage) if state.get("status") != "finished"]


def resume_target(cfg: ExperimentConfig, storage: str, named: bool) -> ExperimentConfig:
    """The config ``--resume`` finishes: the sweep named by sweep.name when the command line names one
    (refused when it has no Tune state to restore: a typo must not start a new full sweep), else the
    latest interrupted sweep of the config's sweep.name (``name`` or ``name-N``)."""
    states = dict(_sweep_states(cfg, storage))
    interrupted = interrupted_sweeps(cfg, storage)
    listing = f"interrupted sweeps there: {', '.join(interrupted)}" if interrupted else "there is no interrupted sweep"
    if named:
        if cfg.sweep.name not in states:
            raise ConfigError(f"--resume: no sweep named sweep.name={cfg.sweep.name} under {storage} ({listing}); "
                              f"name one of them, or drop --resume to start a new sweep")
        return cfg
    family = [n for n in interrupted if re.fullmatch(rf"{re.escape(cfg.sweep.name)}(-\d+)?", n)]
    if not family:
        raise ConfigError(f"--resume: no interrupted sweep named {cfg.sweep.name} or {cfg.sweep.name}-N under "
                          f"{storage} ({listing}); pass sweep.name=<name>, or drop --resume to start a new sweep")
    return cfg.replace(**{"sweep.name": family[-1]})


def names_sweep(overrides: list[str]) -> bool:
    """Whether command-line overrides name the sweep (``sweep.name=...``)."""
    return any(item.partition("=")[0].strip() == "sweep.name" for item in overrides)


def config_differences(saved: dict[str, Any], cfg: ExperimentConfig) -> list[str]:
    """Dotted keys whose value in ``cfg`` differs from the interrupted sweep's saved flat config. A key
    the saved config lacks (a field added to arvid-ray since the sweep started) differs only when ``cfg``
    sets it to other than its default; a key ``cfg`` lacks (a field since removed) is read by nothing."""
    now, default = cfg.to_flat(), ExperimentConfig().to_flat()

    def text(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    keys = sorted((set(saved) & set(now)) - set(RESUME_MAY_DIFFER))
    added = sorted(set(now) - set(saved) - set(RESUME_MAY_DIFFER))
    return sorted([k for k in keys if text(saved[k]) != text(now[k])]
                  + [k for k in added if text(now[k]) != text(default.get(k))])


def check_resume_config(cfg: ExperimentConfig, storage: str) -> None:
    """Refuse to resume with a config other than the interrupted sweep's: the restored trials and the
    searcher would mix two experiments. Sweeps from before the state file are not checked."""
    from arvid_ray import storage as st

    try:
        saved = json.loads(st.read_text(st.join(storage, cfg.sweep.name, SWEEP_STATE), cfg.storage))["config"]
    except (FileNotFoundError, OSError, ValueError, KeyError):
        log.warning("sweep %s has no saved config (%s); resuming without comparing configs", cfg.sweep.name,
                    SWEEP_STATE)
        return
    differ = config_differences(saved, cfg)
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k, '(not set)')!r} -> {cfg.to_flat().get(k)!r}" for k in differ[:8])
        more = f" (+{len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ConfigError(f"--resume: the command line's config differs from interrupted sweep "
                          f"{cfg.sweep.name}'s in {shown}{more}; resume with the same config and overrides, "
                          f"or drop --resume to start a new sweep")


def _write_sweep_state(cfg: ExperimentConfig, storage: str, status: str, started: float | None = None) -> None:
    from arvid_ray import storage as st

    uri = st.join(storage, cfg.sweep.name, SWEEP_STATE)
    if started is None:
        with contextlib.suppress(FileNotFoundError, OSError, ValueError, KeyError):
            started = json.loads(st.read_text(uri, cfg.storage))["started"]
    state = {"status": status, "started": started or time.time(), "config": cfg.to_flat()}
    st.write_text(uri, json.dumps(state, indent=1, default=str), cfg.storage)
