"""Moved to :mod:`arvid_ray.sweep.space` (the sweep package owns its search space); this name stays
importable for existing imports and for Tune state pickled before the move (``arvid_ray.search.DefineByRun``,
``arvid_ray.search.Dimension``)."""

from arvid_ray.sweep.space import (  # noqa: F401
    ROLE_KEY,
    DefineByRun,
    Dimension,
    check_batch,
    check_metrics,
    check_sweep,
    pareto_front,
    parse_space,
    trial_overrides,
)

__all__ = ["ROLE_KEY", "DefineByRun", "Dimension", "check_batch", "check_metrics", "check_sweep", "parse_space",
           "pareto_front", "trial_overrides"]
