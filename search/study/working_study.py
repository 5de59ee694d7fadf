"""The in-memory study NSGA-II samples in, with a bounded history.

Optuna's GA samplers scan the whole trial history on every trial (to find the trial's
generation and the parent population), so a trial's sampling cost grows with the study:
about 2 ms per trial at 2000 trials on this project's reference machine, the entire
budget. NSGA-II itself only needs its elite: so once the working study holds ``limit``
trials it is rebuilt from the parent population NSGA-II would select next (its own
elitist selection, constraint-aware), re-labelled as generation 0 of a fresh study. The
search continues exactly as from that generation; the full history stays in the record.

Trials from elsewhere (a resumed study's history, other workers) *migrate* in as members
of the current generation, as in an island-model GA, and compete at the next selection.
"""
from __future__ import annotations

from typing import Any, Iterable

import optuna
from optuna.trial import TrialState, create_trial

from tp_search.search.study.record import Entry
from tp_search.search.space.candidates import SearchSpace

try:  # Study.tell deep-copies the finished trial for its return value: ~0.3 ms
    from optuna.study._tell import _tell_with_warning
except ImportError:  # another Optuna version: the public, slower path
    _tell_with_warning = None

DIRECTIONS = ("maximize", "minimize")  # proxy metric, predicted latency (first machine)


class WorkStudy:
    def __init__(self, space: SearchSpace, seed: int, population: int,
                 limit: int | None = None) -> None:
        self.space, self.population, self.seed = space, population, seed
        self.limit = limit or max(10 * population, 200)
        self.compactions = 0
        self.study = self._fresh()

    def _fresh(self) -> Any:
        """A new in-memory study and sampler (the sampler caches per-study state); the
        sampler seed follows from the run's seed and the compaction count."""
        seed = (self.seed + 7919 * self.compactions) % 2**32
        self.sampler = optuna.samplers.NSGAIISampler(population_size=self.population,
                                                     seed=seed)
        return optuna.create_study(directions=list(DIRECTIONS), sampler=self.sampler)

    @property
    def _gen_key(self) -> str:
        return self.sampler._get_generation_key()  # "NSGAIISampler:generation"

    # ---- the ask/tell interface ---------------------------------------------------------
    def ask(self) -> Any:
        return self.study.ask()

    def tell(self, trial: Any, values: Any) -> Any:
        """Finish ``trial``; returns its FrozenTrial (not a copy: do not modify it)."""
        study = trial.study  # compaction only ever happens here, between trials
        if _tell_with_warning is None:
            ft = study.tell(trial, values)
        else:
            _tell_with_warning(study=study, trial=trial, value_or_values=values,
                               suppress_warning=True)
            ft = study.get_trials(deepcopy=False)[trial.number]
        self.maybe_compact()
        return ft

    def maybe_compact(self) -> None:
        """Compact once the history reaches ``limit`` (never while a trial is running)."""
        if self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        if len(self.study.get_trials(deepcopy=False)) >= self.limit:
            self.compact()

    def enqueue(self, params: dict[str, Any]) -> None:
        self.study.enqueue_trial(params, skip_if_exists=True)

    # ---- history ------------------------------------------------------------------------
    def _complete(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def generation(self) -> int:
        gens = [t.system_attrs.get(self._gen_key, 0) for t in self._complete()]
        return max(gens, default=0)

    def migrate(self, entries: Iterable[Entry]) -> None:
        """Add finished trials from elsewhere as members of the current generation."""
        gen = self.generation()
        trials = []
        for e in entries:
            ft = e.frozen(self.space)
            ft.system_attrs[self._gen_key] = gen
            trials.append(ft)
        if trials:
            self.study.add_trials(trials)
            self.maybe_compact()  # deferred to the next tell if a trial is running

    def compact(self) -> None:
        """Keep only the parents NSGA-II would select next, as generation 0 of a new study."""
        done = self._complete()
        if not done:
            return
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        elite = self.sampler.select_parent(self.study, self.generation() + 1)
        keep = []
        for t in elite:
            system = {**t.system_attrs, self._gen_key: 0}
            keep.append(create_trial(state=TrialState.COMPLETE, values=t.values,
                                     params=t.params, distributions=t.distributions,
                                     user_attrs=t.user_attrs, system_attrs=system))
        self.compactions += 1
        self.study = self._fresh()
        self.study.add_trials(keep)
        for t in waiting:
            self.study.enqueue_trial(t.system_attrs.get("fixed_params", {}))
