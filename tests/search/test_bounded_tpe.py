"""BoundedTPESampler (search.orchestration.bounded_tpe): TPE as Optuna has it up to `history` finished trials, then a
view of the sweep's best and most recent trials, and of every running one."""

from __future__ import annotations

import random

import optuna
from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState

from peftsweep.search.orchestration.bounded_tpe import BoundedStudy, BoundedTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(trial) -> None:
    method = trial.suggest_categorical("method", ["a", "b"])
    trial.suggest_float(f"{method}_lr", 1e-4, 1e-1, log=True)
    if method == "b":
        trial.suggest_int("b_r", 1, 64)


def run(sampler, trials: int, running: int = 4, seed: int = 0) -> optuna.Study:
    """`trials` asks with `running` trials in flight (told late, as Tune's concurrent trials are), made-up values of
    two objectives."""
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    live = []
    for _ in range(trials):
        trial = study.ask()
        space(trial)
        live.append(trial)
        if len(live) > running:
            done = live.pop(rng.randrange(len(live)))  # trials end out of order
            study.tell(done, [rng.random(), 10 ** rng.uniform(-3, 2)])
    return study


def test_up_to_history_it_is_optunas_tpe():
    kw = dict(seed=3, multivariate=True, group=True, n_startup_trials=4, constant_liar=True)
    ours, theirs = run(BoundedTPESampler(history=60, **kw), 50), run(TPESampler(**kw), 50)
    assert [t.params for t in ours.trials] == [t.params for t in theirs.trials]


def test_past_history_it_sees_the_best_the_most_recent_and_the_running_trials():
    sampler = BoundedTPESampler(history=40, seed=0, multivariate=True, group=True, n_startup_trials=4,
                                constant_liar=True)
    study = run(sampler, 200)
    running = study.ask()
    view = sampler.seen_by(study, running)
    assert isinstance(view, BoundedStudy)
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    seen = view.get_trials(deepcopy=False)
    seen_finished = [t for t in seen if t.state == TrialState.COMPLETE]
    assert len(finished) > 150 and len(seen_finished) == 40
    # every running trial (the constant liar's), whatever its age
    assert {t.number for t in study.get_trials(states=(TrialState.RUNNING,))} <= {t.number for t in seen}
    # the sweep's best, as Optuna's own split of all of them ranks them
    best = {t.number for t in _split_trials(study, finished, 8)[0]}
    assert best <= {t.number for t in seen_finished}
    # the rest: the most recent
    others = sorted(t.number for t in seen_finished if t.number not in best)
    assert others == sorted(t.number for t in finished if t.number not in best)[-len(others):]
    # what TPE is asked through the view is only the view
    assert view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True) == seen_finished
    assert view.directions == study.directions


def test_it_is_saved_and_restored_with_the_study_and_goes_on_alike():
    """Tune saves the searcher with the sweep (--resume restores it): past its history, pickled mid-sweep, the restored
    sampler suggests what the uninterrupted one does."""
    import pickle

    sampler = BoundedTPESampler(history=40, seed=0, multivariate=True, group=True, n_startup_trials=4,
                                constant_liar=True)
    study = run(sampler, 100)
    assert isinstance(sampler._view[1], BoundedStudy)  # a view is held: the case the pickling must survive
    restored = pickle.loads(pickle.dumps(study))
    assert restored.sampler._view is None and len(restored.sampler._best) == len(sampler._best)
    after = []
    for s in (study, restored):  # the same random state in both, so that only what they have seen can differ
        s.sampler._rng.rng.seed(7)
        s.sampler._random_sampler._rng.rng.seed(7)
        trial = s.ask()
        space(trial)
        after.append(trial.params)
    assert after[0] == after[1]
