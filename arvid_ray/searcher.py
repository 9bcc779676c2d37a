"""The sweep's Optuna searcher, whose pickled state is plain data.

Tune pickles the search algorithm twice: into ``tuner.pkl`` when the Tuner is built, and into the
searcher checkpoint (``OptunaSearch.save`` pickles its ``__dict__``) that ``Tuner.restore`` reads. Ray's
``OptunaSearch`` keeps the Optuna sampler and study in that state, so the sweep's life depended on a
sampler object being picklable — optuna 5.1's ``NSGAIISampler`` holds a ``threading.Lock`` and broke every
multi-objective sweep before its first trial.

:class:`SweepSearcher` never pickles a sampler, a study or an Optuna ``Trial``. It keeps a *sampler spec*
(kind, seed, population size) and builds the sampler and the in-memory study on first use; its pickled
state holds the study as data — every trial as an ``optuna.trial.FrozenTrial`` (finished, running or
waiting), the study's system and user attributes (NSGA-II caches its parent population there) — and each
Tune trial id as an Optuna trial number. Unpickling replays those trials into a fresh study in their
original order, so ``--resume`` continues the same study: the same trial numbers, storage ids and
history, running trials still told when they finish. The restored sampler is seeded with
``seed + len(trials)`` so a resumed sweep does not replay the random draws it already made.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    """What to build the Optuna sampler from: plain data, picklable whatever Optuna's objects are."""

    kind: str  # "tpe" (single objective) | "nsga2" (multi-objective)
    seed: int | None = None
    population_size: int = 50

    def build(self, offset: int = 0):
        import optuna

        seed = None if self.seed is None else self.seed + offset
        if self.kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if self.kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)
        raise ValueError(f"unknown sampler kind {self.kind!r} (expected 'tpe' or 'nsga2')")


@dataclass
class _StudyData:
    trials: list[Any]  # optuna.trial.FrozenTrial, in creation order
    system_attrs: dict[str, Any]
    user_attrs: dict[str, Any]


def _define_searcher_class():
    # Ray is imported on first use only (importing arvid_ray has no framework side effects); the class is
    # published as arvid_ray.searcher.SweepSearcher, so pickle finds it by name.
    from ray.tune.search.optuna import OptunaSearch

    class SweepSearcher(OptunaSearch):
        """``OptunaSearch`` with a lazily built sampler and study, and a plain-data pickled state.

        Quality exists only after a trial's final evaluation, so intermediate results without the searcher's
        metric are skipped (single-objective mode; Optuna ignores them in multi-objective mode anyway).
        """

        def __init__(self, space, *, metric, mode, sampler: SamplerSpec, **kwargs):
            self._sampler_spec = sampler
            self._study_mode: Any = None
            self._study_obj = None
            self._saved_study: _StudyData | None = None
            self._trials_map: dict[str, Any] = {}
            super().__init__(space, metric=metric, mode=mode, sampler=None, seed=None, **kwargs)

        # --- the study and its trials, built on first use -------------------------------------------------
        def _setup_study(self, mode):  # called by OptunaSearch.__init__ / set_search_properties
            self._study_mode = mode
            self._study_obj = None

        @property
        def _ot_study(self):
            if self._study_obj is None and self._study_mode is not None:
                self._build_study()
            return self._study_obj

        @_ot_study.setter
        def _ot_study(self, study) -> None:
            self.__dict__["_study_obj"] = study

        @property
        def _ot_trials(self) -> dict[str, Any]:
            self._ot_study  # noqa: B018 — materialise restored trial numbers as Optuna trials
            return self._trials_map

        @_ot_trials.setter
        def _ot_trials(self, trials: dict[str, Any]) -> None:
            self.__dict__["_trials_map"] = trials

        def _build_study(self) -> None:
            import optuna

            saved = self._saved_study
            n_before = len(saved.trials) if saved else 0
            self._sampler = self._sampler_spec.build(offset=n_before)
            try:
                if saved is None:
                    super()._setup_study(self._study_mode)  # creates the study, enqueues points_to_evaluate
                    return
                points, self._points_to_evaluate = self._points_to_evaluate, []  # already in the saved trials
                try:
                    super()._setup_study(self._study_mode)
                finally:
                    self._points_to_evaluate = points
            finally:
                self._sampler = None  # never kept outside the study: the study is never pickled
            study = self._study_obj
            storage, sid = study._storage, study._study_id
            for key, value in saved.system_attrs.items():
                storage.set_study_system_attr(sid, key, value)
            for key, value in saved.user_attrs.items():
                storage.set_study_user_attr(sid, key, value)
            study.add_trials(saved.trials)
            ids = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
            self._trials_map = {
                tid: (optuna.trial.Trial(study, ids[n]) if isinstance(n, int) else n)
                for tid, n in self._trials_map.items()
            }
            self._saved_study = None

        # --- plain-data state -------------------------------------------------------------------------
        def __getstate__(self) -> dict[str, Any]:
            state = self.__dict__.copy()
            state["_sampler"] = None
            study = state.pop("_study_obj", None)
            state["_study_obj"] = None
            if study is not None:
                sid = study._study_id
                state["_saved_study"] = _StudyData(
                    trials=study.get_trials(deepcopy=True),
                    system_attrs=dict(study._storage.get_study_system_attrs(sid)),
                    user_attrs=dict(study._storage.get_study_user_attrs(sid)),
                )
                state["_trials_map"] = {tid: t.number for tid, t in self._trials_map.items()}
            return state

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)

        def save(self, checkpoint_path: str) -> None:  # Tune's searcher checkpoint (Tuner.restore reads it)
            with open(checkpoint_path, "wb") as f:
                pickle.dump(self.__getstate__(), f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                state = pickle.load(f)
            if not isinstance(state, dict) or "_sampler_spec" not in state:
                raise ValueError(
                    f"{checkpoint_path} is not a SweepSearcher checkpoint (a sweep interrupted before optuna 5.1 "
                    "support?): start the sweep under a new sweep.name"
                )
            self.__setstate__(state)

        # --- Tune callbacks ---------------------------------------------------------------------------
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, str) and self.metric in result:
                super().on_trial_result(trial_id, result)

    SweepSearcher.__module__, SweepSearcher.__qualname__ = __name__, "SweepSearcher"
    return SweepSearcher


def _searcher_class():
    if "SweepSearcher" not in globals():
        globals()["SweepSearcher"] = _define_searcher_class()
    return globals()["SweepSearcher"]


def __getattr__(name: str):  # PEP 562: `from arvid_ray.searcher import SweepSearcher` and unpickling
    if name == "SweepSearcher":
        return _searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_searcher(space, *, mode: str, metric: str, cost_metric: str, seed: int | None,
                   num_samples: int):
    """The sweep's searcher: NSGA-II on (quality, cost) in multi-objective mode, else TPE on quality."""
    if mode == "multi":
        spec = SamplerSpec("nsga2", seed=seed, population_size=max(4, min(50, num_samples)))
        return _searcher_class()(space, metric=[metric, cost_metric], mode=["min", "min"], sampler=spec)
    return _searcher_class()(space, metric=metric, mode="min", sampler=SamplerSpec("tpe", seed=seed))
