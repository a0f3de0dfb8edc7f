"""TPE that looks at a bounded history: the best trials of the whole sweep and the most recent ones.

Optuna's TPE works over every past trial at every ask, and with `group=True` (each method's parameters modelled
apart) it does so once per group: its ask grew linearly with the sweep, about 0.13 ms per past trial, 145 ms per ask
by trial 1,000 (bench/tpe_history.py). A sweep of many trials would spend its driver on it.

`BoundedTPESampler` is Optuna's TPESampler, given a view of the study in which, once more than `history` trials have
finished, only these finished trials are seen: the `history // 5` best of the whole sweep (Optuna's own split of good
from bad trials, the "below" set: feasible first, then by Pareto rank) and the most recent others, up to `history`
in all. Running trials are always seen (the constant liar). Up to `history` finished trials nothing changes. The
best trials are kept incrementally: the best of (the best so far + the trials finished since), so each ask costs
O(history) whatever the sweep's size.
"""

from __future__ import annotations

import heapq
from typing import Any

from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import FrozenTrial, TrialState

# Finished trials TPE sees at most. TPE's multi-objective "below" set is 10 % of what it sees: 30 of 300, chosen among
# the 60 best of the sweep.
TPE_HISTORY = 300
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class BoundedStudy:
    """The study as the sampler sees it: its trials filtered to `keep` (by number) and the running ones; all else is
    the study's own."""

    def __init__(self, study, keep: set[int]):
        self._study, self._keep = study, keep

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if t.number in self._keep or t.state == TrialState.RUNNING]

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_study" not in self.__dict__:  # pickle's probes, before __init__ has run
            raise AttributeError(name)
        return getattr(self._study, name)


class BoundedTPESampler(TPESampler):
    def __init__(self, *args, history: int = TPE_HISTORY, **kwargs):
        super().__init__(*args, **kwargs)
        self.history = history
        self._best: list[FrozenTrial] = []  # the best finished trials so far (Optuna's split)
        self._seen: set[int] = set()  # numbers of the finished trials already merged into _best
        self._view: tuple[tuple[int, int], BoundedStudy] | None = None  # per ask: (trial, finished count) -> view

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves the searcher (its study and sampler) with the sweep: the view of one ask is not kept
        return self.__dict__ | {"_view": None}

    def seen_by(self, study, trial: FrozenTrial):
        """The study TPE sees when sampling `trial` (the study itself while it holds at most `history` finished)."""
        finished = study._get_trials(deepcopy=False, states=FINISHED, use_cache=True)
        if len(finished) <= self.history:
            return study
        key = (trial.number, len(finished))
        if self._view is None or self._view[0] != key:
            self._view = key, BoundedStudy(study, self.kept(study, finished))
        return self._view[1]

    def kept(self, study, finished: list[FrozenTrial]) -> set[int]:
        new = [t for t in finished if t.number not in self._seen]
        self._seen.update(t.number for t in new)
        self._best = _split_trials(study, self._best + new, self.history // 5)[0]
        best = {t.number for t in self._best}
        recent = heapq.nlargest(self.history - len(best), (t.number for t in finished if t.number not in best))
        return best | set(recent)

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(self.seen_by(study, trial), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(self.seen_by(study, trial), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self.seen_by(study, trial), trial, param_name, param_distribution)
