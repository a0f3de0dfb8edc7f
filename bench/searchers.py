"""How well the searchers find the front, against trials and against compute, with an exhaustive grid as reference.

1. A real peftsweep grid sweep over a coarse version of the space (4 methods; LoRA r, virtual tokens and every
   learning rate at 3 points) measures each grid point once: this is the table (bench/search_table.py), with each
   point's validation accuracy after every epoch and the worker-seconds it had spent by then.
2. The searchers then run over the same space as in a sweep (the same define-by-run space, start points, Optuna
   samplers and early-stopping schedulers as `search.orchestration.sweep`), each sampled point snapped to its nearest grid point
   and scored from the table: a tabular benchmark, so many seeds cost seconds, not hours. A trial an early-stopping
   scheduler stops after epoch k costs what the real trial had spent at epoch k, is told to the searcher with the
   values it had then (as Ray's OptunaSearch does) and never joins the front.
3. Hypervolume (search.results.pareto) against trials (goal: 95 % of the grid's within a quarter of its trials) and against
   cumulative worker-seconds (goal: 95 % of the grid's using at most 15 % of the grid's worker-seconds), and the warm
   start: a second sweep seeded with a first one of half the budget, against a cold one.

    .venv/bin/python bench/searchers.py            # MiniLM-L6 + TREC-6 (400 train, 3 epochs), 24-point grid, 10 seeds
    .venv/bin/python bench/searchers.py --task rotten_tomatoes   # the held-out table
    .venv/bin/python bench/searchers.py --quick    # tiny BERT, small grid: proves the script runs
    .venv/bin/python bench/searchers.py --out DIR --reuse-grid --seeds 30   # re-score an earlier run's grid
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace

from common import REAL_MODEL, WORKLOADS, tiny_assets
from search_table import GridRow, grid_config, grid_floor, grid_table, snap

# The demo task near configs/demo.yaml's scale (3 epochs, batch 32; 400 training questions so that the grid fits in
# the 15 minutes): 200 examples x 2 epochs left most points near chance, and a table of near-chance accuracies ranks
# searchers by luck. rotten_tomatoes is the held-out check: a second task the methods' defaults were not chosen on.
TASKS = {"trec6": {"preset": "trec6", "train_size": 400, "validation_size": 200, "test_size": 100},
         "rotten_tomatoes": {"preset": "rotten_tomatoes", "train_size": 400, "validation_size": 200, "test_size": 100,
                             "max_length": 48}}
GRID_TRAIN = {"epochs": 3, "batch_size": 32}

COARSE_METHODS = WORKLOADS["searchers"]["methods"]
QUICK_METHODS = WORKLOADS["searchers"]["quick_methods"]
SEARCHERS = {  # against trials -- name: (algorithm, search.start_points)
    "tpe": ("tpe", "smallest"), "nsga2": ("nsga2", "smallest"), "random": ("random", "smallest"),
    "tpe, start at defaults": ("tpe", "defaults"), "random, start at defaults": ("random", "defaults"),
    "tpe, no start points": ("tpe", "none"), "random, no start points": ("random", "none")}
VARIANTS = {  # against compute -- name: (algorithm, early_stopping.objective or None for no early stopping)
    "TPE, no early stopping": ("tpe", None), "TPE + ASHA on accuracy": ("tpe", "accuracy"),
    "TPE + Pareto ASHA": ("tpe", "pareto"), "random + Pareto ASHA": ("random", "pareto")}
COMPUTE_GOAL = 0.15  # share of the grid's worker-seconds within which 95 % of its hypervolume is the goal


def new_study(plan, algorithm: str, starts: str, seed: int, budget: int, warm: list = ()):
    """The study a sweep's OptunaSearch would hold: its sampler, its start points (none for methods the warm-start
    trials already cover, as search.orchestration.searcher does), the warm-start trials added as completed."""
    import optuna

    from peftsweep.search.config import SearchSettings
    from peftsweep.search.orchestration.searcher import make_sampler
    from peftsweep.search.orchestration.space import start_points

    tried = {t.params["method"] for t in warm}
    points = [p for p in start_points(plan.methods, starts) if p["method"] not in tried]
    settings = SearchSettings(algorithm=algorithm, num_samples=budget, seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(settings, len(points)))
    study.add_trials(list(warm))
    for point in points:
        study.enqueue_trial(point)
    return study


def ask(study, plan, rows: list[GridRow]) -> tuple:
    from peftsweep.search.orchestration.space import define_space
    from peftsweep.search.points import unflat

    trial = study.ask()
    define_space(trial, plan.methods)
    method, hparams = unflat(trial.params)
    return trial, method, hparams, snap(method, hparams, rows, plan.methods)


def by_trials(algorithm: str, starts: str, seed: int, budget: int, rows: list[GridRow], plan,
              floor: float = 0.0) -> list[float]:
    """Hypervolume (from the floor) after each trial of one searcher run scored from the table (every trial runs to
    the end)."""
    from peftsweep.search.results.pareto import Point, hypervolume

    study, found, curve = new_study(plan, algorithm, starts, seed, budget), [], []
    for i in range(budget):
        trial, _, _, row = ask(study, plan, rows)
        study.tell(trial, [row.accuracy, row.cost])
        found.append(Point(str(i), row.accuracy, (row.cost,)))
        curve.append(hypervolume(found, reference_accuracy=floor))
    return curve


def run_trial(row: GridRow, scheduler, trial_id: str) -> int:
    """Epochs the trial runs under the scheduler (all of them with none): its results go to the scheduler one
    epoch at a time, as Tune sends them."""
    from ray.tune.schedulers import TrialScheduler

    from peftsweep.metric_names import QUALITY, TRAINABLE_PCT

    epochs = len(row.history)
    if scheduler is None:
        return epochs
    trial = SimpleNamespace(trial_id=trial_id, config={"method": row.method}, status="RUNNING")
    scheduler.on_trial_add(None, trial)
    for epoch, accuracy in enumerate(row.history, start=1):
        result = {"epoch": epoch, "training_iteration": epoch, QUALITY: accuracy, TRAINABLE_PCT: row.cost}
        if epoch == epochs:
            scheduler.on_trial_complete(None, trial, result)
        elif scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            return epoch
    return epochs


def by_compute(study, plan, rows: list[GridRow], scheduler_plan, seconds: float, max_trials: int,
               until_hv: float | None = None, floor: float = 0.0) -> list[tuple[float, float]]:
    """(cumulative worker-seconds, hypervolume from the floor) after each trial, until `seconds` are spent (or
    `until_hv` is reached); trials run one after another. Stopped trials cost what they spent and are not on the
    front. The scheduler is the one a sweep builds, given the same floor."""
    from peftsweep.search.results.pareto import Point, hypervolume
    from peftsweep.search.orchestration.searcher import scheduler_for

    scheduler = scheduler_for(scheduler_plan, floor) if scheduler_plan else None
    found, spent, curve = [], 0.0, []
    for i in range(max_trials):
        trial, _, _, row = ask(study, plan, rows)
        epochs = run_trial(row, scheduler, str(i))
        spent += row.seconds[epochs - 1]
        study.tell(trial, [row.history[epochs - 1], row.cost])  # Ray's OptunaSearch: the last result's values
        if epochs == len(row.history):
            found.append(Point(str(i), row.accuracy, (row.cost,)))
        curve.append((spent, hypervolume(found, reference_accuracy=floor)))
        if spent >= seconds or (until_hv is not None and curve[-1][1] >= until_hv - 1e-12):
            break
    return curve


def hv_at(curve: list[tuple[float, float]], seconds: float) -> float:
    """Hypervolume of the trials finished within `seconds` of compute."""
    return max((hv for spent, hv in curve if spent <= seconds + 1e-9), default=0.0)


def seconds_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((spent for spent, hv in curve if hv >= target - 1e-12), None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--task", choices=list(TASKS), default="trec6", help="bundled task of the grid (default trec6)")
    parser.add_argument("--seeds", type=int, default=None, help="searcher seeds (default 10, quick 2)")
    parser.add_argument("--out", default=None, help="where the grid sweep, plots and JSON go (default: a temp dir)")
    parser.add_argument("--reuse-grid", action="store_true",
                        help="score from the grid sweep already in --out (e.g. to try more seeds) instead of re-running")
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out or tempfile.mkdtemp(prefix="peftsweep-search-"))
    out.mkdir(parents=True, exist_ok=True)
    # --quick: enough toy rows (600) that its grid learns past the floor (with 200 it stayed at the majority class)
    model, data = tiny_assets(out, n=600) if args.quick else (REAL_MODEL, TASKS[args.task])
    config = grid_config(model, data, QUICK_METHODS if args.quick else COARSE_METHODS, 2 if args.quick else 3,
                         {"epochs": 2, "batch_size": 16} if args.quick else GRID_TRAIN, out / "grid")
    rows = grid_table(config, reuse=args.reuse_grid)
    floor = grid_floor(config)  # the grid sweep's floor: every hypervolume here is measured from it

    from peftsweep.search.config import SweepConfig
    from peftsweep.search.results.pareto import Point, hypervolume
    from peftsweep.search.plan import build_plan

    plan = build_plan(SweepConfig.model_validate(config))
    scheduler_plans = {objective: build_plan(SweepConfig.model_validate(
        config | {"search": {"algorithm": "tpe"}, "early_stopping": {"enabled": True, "objective": objective}}))
        for objective in ("pareto", "accuracy")}  # the schedulers a sweep with early stopping would build
    grid_hv = hypervolume([Point(str(i), r.accuracy, (r.cost,)) for i, r in enumerate(rows)], reference_accuracy=floor)
    from peftsweep.search.orchestration.space import start_points

    starts = len(start_points(plan.methods, "smallest"))  # the trials every variant begins with
    if grid_hv <= 0:
        raise SystemExit(f"no grid point beats the floor ({floor:.3f} validation accuracy): there is no front to "
                         f"find, so nothing to score the searchers on")
    grid_seconds = sum(r.worker_seconds for r in rows)
    seeds = range(args.seeds or (2 if args.quick else 10))
    budget, quarter = len(rows), max(1, len(rows) // 4)

    curves = {name: [by_trials(alg, start, seed, budget, rows, plan, floor) for seed in seeds]
              for name, (alg, start) in SEARCHERS.items()}
    report = summarize(curves, grid_hv, quarter, len(rows))
    plot(curves, grid_hv, quarter, out / "search_hypervolume.png")

    compute = {name: [by_compute(new_study(plan, alg, "smallest", seed, budget), plan, rows,
                                 scheduler_plans.get(objective), grid_seconds, 4 * len(rows), floor=floor)
                      for seed in seeds]
               for name, (alg, objective) in VARIANTS.items()}
    grid_curve, spent = [], 0.0
    for i, row in enumerate(rows):  # the grid in the order its sweep started the points
        spent += row.worker_seconds
        grid_curve.append((spent, hypervolume([Point(str(j), r.accuracy, (r.cost,)) for j, r in enumerate(rows[:i + 1])],
                                              reference_accuracy=floor)))
    compute["grid (the reference)"] = [grid_curve]
    compute_report = summarize_compute(compute, grid_hv, grid_seconds, starts)
    plot_compute(compute, grid_hv, grid_seconds, out / "search_compute.png")

    warm = warm_start(plan, rows, seeds, budget, floor)
    (out / "search.json").write_text(json.dumps(
        {"grid": [vars(r) for r in rows], "floor": floor, "start_points": starts, "grid_hypervolume": grid_hv,
         "grid_worker_seconds": grid_seconds,
         "curves": curves, "summary": report, "compute_curves": compute, "compute_summary": compute_report,
         "warm_start": warm}, indent=2, default=str))
    print(f"plots: {out / 'search_hypervolume.png'}, {out / 'search_compute.png'}; figures: {out / 'search.json'}")
    return {"trials": report, "compute": compute_report, "warm_start": warm}


def warm_start(plan, rows: list[GridRow], seeds, budget: int, floor: float = 0.0) -> dict:
    """A first TPE sweep of half the budget; then a second one warm-started from it (its completed trials replayed
    into the new study, as search.orchestration.warm_start does) and a cold one: trials and worker-seconds each takes to reach the
    first sweep's final hypervolume with its own trials."""
    from peftsweep.search.results.pareto import Point, hypervolume
    from peftsweep.search.points import unflat
    from peftsweep.search.orchestration.warm_start import replay

    half = max(1, budget // 2)
    results = {"warm": [], "cold": []}
    for seed in seeds:
        first, found = new_study(plan, "tpe", "smallest", seed, half), []
        for i in range(half):
            trial, _, _, row = ask(first, plan, rows)
            first.tell(trial, [row.accuracy, row.cost])
            found.append(Point(str(i), row.accuracy, (row.cost,)))
        target = hypervolume(found, reference_accuracy=floor)
        taken = [replay(*unflat(t.params), tuple(t.values), plan.methods) for t in first.trials]
        for kind, warm in (("warm", [t for t in taken if t is not None]), ("cold", [])):
            study = new_study(plan, "tpe", "smallest", seed + 1000, budget, warm)
            curve = by_compute(study, plan, rows, None, float("inf"), budget, until_hv=target, floor=floor)
            reached = curve[-1][1] >= target - 1e-12
            results[kind].append({"trials": len(curve) if reached else None,
                                  "worker_seconds": curve[-1][0] if reached else None})
    summary = {}
    print(f"\nwarm start: a first TPE sweep of {half} trials; trials / worker-seconds a second sweep needs to reach "
          f"the first's final hypervolume with its own trials (median over {len(results['warm'])} seeds; "
          f"at most {budget} trials)")
    for kind, runs in results.items():
        done = [r for r in runs if r["trials"] is not None]
        trials = statistics.median(r["trials"] for r in done) if done else None
        seconds = statistics.median(r["worker_seconds"] for r in done) if done else None
        summary[kind] = {"median_trials": trials, "median_worker_seconds": seconds, "reached": len(done),
                         "runs": runs}
        label = "warm-started from the first" if kind == "warm" else "cold (no warm start)"
        print(f"  {label:30} {trials if trials is not None else '-':>6} trials {seconds or 0:8.0f} worker-s   "
              f"reached in {len(done)} of {len(runs)}")
    return summary


def summarize(curves: dict, grid_hv: float, quarter: int, grid_trials: int) -> dict:
    """Hypervolume as a share of the grid's at a quarter, half and all of the grid's trials (mean over seeds)."""
    budgets = sorted({quarter, max(1, grid_trials // 2), grid_trials})
    print(f"\ngrid: {grid_trials} points, hypervolume {grid_hv:.3f}; goal: 95 % within {quarter} trials (a quarter "
          f"of the grid); {len(next(iter(curves.values())))} seeds each")
    print(f"{'searcher':28}" + "".join(f"{f'{b} trials':>11}" for b in budgets)
          + f"{f'worst at {quarter}':>12}{'trials to 95%':>15}{'seeds at 95%':>14}")
    report = {}
    for name, runs in curves.items():
        share = {b: statistics.mean(c[b - 1] for c in runs) / grid_hv for b in budgets}
        worst = min(c[quarter - 1] for c in runs) / grid_hv
        reach = [next((i + 1 for i, v in enumerate(c) if v >= 0.95 * grid_hv), None) for c in runs]
        reached = [r for r in reach if r is not None]
        median_reach = statistics.median(reached) if len(reached) == len(reach) else None
        report[name] = {"fraction_at": {str(b): v for b, v in share.items()}, "mean_fraction_at_budget":
                        share[quarter], "worst_fraction": worst, "median_trials_to_95pct": median_reach,
                        "seeds_reaching_95pct": len(reached)}
        print(f"{name:28}" + "".join(f"{v:11.1%}" for v in share.values()) + f"{worst:12.1%}"
              f"{str(median_reach) if median_reach else 'not all':>15}{f'{len(reached)} of {len(runs)}':>14}")
    return report


def summarize_compute(curves: dict, grid_hv: float, grid_seconds: float, starts: int = 0) -> dict:
    """Hypervolume share at 15 %, 25 % and 50 % of the grid's worker-seconds; where each run reaches 95 %; and where
    its start points end (every variant begins with the same `starts` trials: what differs comes after them)."""
    shares = (COMPUTE_GOAL, 0.25, 0.5)
    print(f"\ngrid: {grid_seconds:.0f} worker-seconds; goal: 95 % of its hypervolume within {COMPUTE_GOAL:.0%} of "
          f"them ({COMPUTE_GOAL * grid_seconds:.0f} worker-seconds); the first {starts} trials of a variant are its "
          f"start points")
    print(f"{'variant':28}" + "".join(f"{f'at {s:.0%}':>9}" for s in shares)
          + f"{'worst at 15%':>14}{'95% reached at':>16}{'seeds by 15%':>14}{'start points end at':>21}")
    report = {}
    for name, runs in curves.items():
        at = {s: statistics.mean(hv_at(c, s * grid_seconds) for c in runs) / grid_hv for s in shares}
        worst = min(hv_at(c, COMPUTE_GOAL * grid_seconds) for c in runs) / grid_hv
        reach = [seconds_to(c, 0.95 * grid_hv) for c in runs]
        reached = [r / grid_seconds for r in reach if r is not None]
        median = statistics.median(reached) if len(reached) == len(reach) else None
        by_goal = sum(r <= COMPUTE_GOAL + 1e-9 for r in reached)
        ends = [c[min(starts, len(c)) - 1] for c in runs if c and starts and len(runs) > 1]
        start_share = statistics.median(s / grid_seconds for s, _ in ends) if ends else None
        start_hv = statistics.median(hv / grid_hv for _, hv in ends) if ends else None
        report[name] = {"fraction_at": {f"{s:.2f}": v for s, v in at.items()}, "worst_fraction_at_goal": worst,
                        "median_compute_share_to_95pct": median, "seeds_reaching_95pct_by_goal": by_goal,
                        "seeds": len(runs), "start_points_compute_share": start_share,
                        "start_points_fraction": start_hv}
        then = (f"{start_share:.0%} ({start_hv:.0%} HV)" if start_share is not None else "-")
        print(f"{name:28}" + "".join(f"{v:9.1%}" for v in at.values()) + f"{worst:14.1%}"
              f"{f'{median:.0%}' if median is not None else 'not all':>16}{f'{by_goal} of {len(runs)}':>14}{then:>21}")
    return report


def plot(curves: dict, grid_hv: float, quarter: int, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, runs in curves.items():
        x = range(1, len(runs[0]) + 1)
        mean = [statistics.mean(c[i] for c in runs) / grid_hv for i in range(len(runs[0]))]
        low = [min(c[i] for c in runs) / grid_hv for i in range(len(runs[0]))]
        ax.plot(x, mean, label=name)
        ax.fill_between(x, low, mean, alpha=0.12)
    finish(plt, fig, ax, path, "95 % of the grid", (quarter, "a quarter of the grid's trials"), "trials", "trials")


def plot_compute(curves: dict, grid_hv: float, grid_seconds: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = [i / 200 for i in range(201)]
    for name, runs in curves.items():
        mean = [statistics.mean(hv_at(c, s * grid_seconds) for c in runs) / grid_hv for s in x]
        low = [min(hv_at(c, s * grid_seconds) for c in runs) / grid_hv for s in x]
        style = {"color": "black", "linestyle": "-."} if len(runs) == 1 else {}
        ax.plot([100 * s for s in x], mean, label=name, drawstyle="steps-post", **style)
        if len(runs) > 1:
            ax.fill_between([100 * s for s in x], low, mean, alpha=0.12, step="post")
    budget = (100 * COMPUTE_GOAL, f"{COMPUTE_GOAL:.0%} of the grid's compute")
    finish(plt, fig, ax, path, "95 % of the grid's hypervolume", budget, "cumulative worker-seconds, % of the grid's",
           "compute")


def finish(plt, fig, ax, path: Path, goal_label: str, budget: tuple[float, str], xlabel: str, against: str) -> None:
    """What both plots share: the 95 % line, the budget line, labels, legend; saved and closed."""
    ax.axhline(0.95, color="#888", linestyle="--", label=goal_label)
    ax.axvline(budget[0], color="#bbb", linestyle=":", label=budget[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("hypervolume / grid's")
    ax.set_title(f"front found against {against} (mean over seeds; band down to the worst seed)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


if __name__ == "__main__":
    main()
