"""How well the searchers find the front: hypervolume against trial count, against an exhaustive grid.

1. A real peftsweep grid sweep over a coarse version of the space (4 methods; LoRA r, virtual tokens and every
   learning rate at 3 points) measures each grid point once on the demo task: this is the table.
2. The searchers then run over the same space as in a sweep (the same define-by-run space, start points and Optuna
   samplers as `search.sweep`), each sampled point snapped to its nearest grid point (per parameter, on its log or
   linear scale) and scored from the table: a tabular benchmark, so many seeds cost seconds, not hours.
3. Hypervolume (search.pareto) after every trial, against the grid's; with the goal: multi-objective TPE reaches 95 %
   of the grid's hypervolume within a quarter of the grid's trials and beats random search at equal budget.

    .venv/bin/python bench/searchers.py            # MiniLM-L6 + TREC-6 (400 train, 3 epochs), 24-point grid, 10 seeds
    .venv/bin/python bench/searchers.py --task rotten_tomatoes   # the same on a second task
    .venv/bin/python bench/searchers.py --quick    # tiny BERT, 2-point grid: proves the script runs
    .venv/bin/python bench/searchers.py --out DIR --reuse-grid --seeds 30   # re-score an earlier run's grid
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

from common import REAL_MODEL, WORKLOADS, fresh_ray, run_sweep_config, tiny_assets

# The demo task near configs/demo.yaml's scale (3 epochs, batch 32; 400 training questions so that the grid fits in
# the 15 minutes): 200 examples x 2 epochs left most points near chance, and a table of near-chance accuracies ranks
# searchers by luck. rotten_tomatoes is the held-out check: a second task the methods' defaults were not chosen on.
TASKS = {"trec6": {"preset": "trec6", "train_size": 400, "validation_size": 200, "test_size": 100},
         "rotten_tomatoes": {"preset": "rotten_tomatoes", "train_size": 400, "validation_size": 200, "test_size": 100,
                             "max_length": 48}}
GRID_TRAIN = {"epochs": 3, "batch_size": 32}

COARSE_METHODS = WORKLOADS["searchers"]["methods"]
QUICK_METHODS = WORKLOADS["searchers"]["quick_methods"]
SEARCHERS = {  # name: (algorithm, search.start_points)
    "tpe": ("tpe", "smallest"), "nsga2": ("nsga2", "smallest"), "random": ("random", "smallest"),
    "tpe, start at defaults": ("tpe", "defaults"), "random, start at defaults": ("random", "defaults"),
    "tpe, no start points": ("tpe", "none"), "random, no start points": ("random", "none")}


def grid_table(model: str, data: dict, methods: dict, points: int, train: dict, out: Path,
               reuse: bool = False) -> tuple[list[dict], dict]:
    """Measure every grid point for real; rows of {method, hparams, accuracy, cost}."""
    from peftsweep.dashboards.sweep_data import hyperparameters

    config = {"name": "search-grid", "model": model, "data": data, "output_dir": str(out),
              "methods": methods, "train": train,
              "search": {"algorithm": "grid", "grid_points": points, "max_concurrent_trials": 2},
              "resources": {"num_workers": 1, "cpus_per_worker": 1}}
    if reuse:  # the table of an earlier run of this script (same output directory)
        from peftsweep.search.records import load_records
        from peftsweep.search.tracking import client_for, latest_sweep

        client = client_for(f"sqlite:///{out / 'mlflow.db'}")
        records = load_records(client, *latest_sweep(client, "search-grid"))
    else:
        fresh_ray()
        records = run_sweep_config(config).records
    rows = [{"method": r.method, "hparams": hyperparameters(r), "accuracy": r.val_accuracy, "cost": r.trainable_pct}
            for r in records if r.status == "completed"]
    return rows, config


def snap(method: str, hparams: dict, rows: list[dict], specs: dict) -> dict:
    """The grid row of the same method nearest to a sampled point (each parameter on its own scale)."""
    from peftsweep.spaces import ChoiceParam
    def distance(row: dict) -> float:
        total = 0.0
        for key, param in specs[method].params.items():
            if key not in hparams or key not in row["hparams"]:
                continue
            a, b = hparams[key], row["hparams"][key]
            if isinstance(param, ChoiceParam) or not isinstance(a, (int, float)) or isinstance(a, bool):
                total += a != b
            elif param.log:
                total += abs(math.log(a) - math.log(b)) / max(1e-12, math.log(param.high / param.low))
            else:
                total += abs(a - b) / max(1e-12, param.high - param.low)
        return total
    return min((r for r in rows if r["method"] == method), key=distance)


def simulate(algorithm: str, starts: str, seed: int, budget: int, rows: list[dict], plan) -> list[float]:
    """Hypervolume after each trial of one searcher run scored from the table."""
    import optuna

    from peftsweep.search.config import SearchSettings
    from peftsweep.search.pareto import Point, hypervolume
    from peftsweep.search.space import define_space, start_points, unflat
    from peftsweep.search.searcher import make_sampler

    points = start_points(plan.methods, starts)
    settings = SearchSettings(algorithm=algorithm, num_samples=budget, seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(settings, len(points)))
    for point in points:
        study.enqueue_trial(point)
    found, curve = [], []
    for i in range(budget):
        trial = study.ask()
        define_space(trial, plan.methods)
        method, hparams = unflat(trial.params)
        row = snap(method, hparams, rows, plan.methods)
        study.tell(trial, [row["accuracy"], row["cost"]])
        found.append(Point(str(i), row["accuracy"], row["cost"]))
        curve.append(hypervolume(found))
    return curve


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--task", choices=list(TASKS), default="trec6", help="bundled task of the grid (default trec6)")
    parser.add_argument("--seeds", type=int, default=None, help="searcher seeds (default 10, quick 2)")
    parser.add_argument("--out", default=None, help="where the grid sweep, plot and JSON go (default: a temp dir)")
    parser.add_argument("--reuse-grid", action="store_true",
                        help="score from the grid sweep already in --out (e.g. to try more seeds) instead of re-running")
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out or tempfile.mkdtemp(prefix="peftsweep-search-"))
    out.mkdir(parents=True, exist_ok=True)
    model, data = tiny_assets(out) if args.quick else (REAL_MODEL, TASKS[args.task])
    rows, config = grid_table(model, data, QUICK_METHODS if args.quick else COARSE_METHODS, 2 if args.quick else 3,
                              {"epochs": 1, "batch_size": 16} if args.quick else GRID_TRAIN, out / "grid",
                              reuse=args.reuse_grid)

    from peftsweep.search.config import SweepConfig
    from peftsweep.search.pareto import Point, hypervolume
    from peftsweep.search.plan import build_plan

    plan = build_plan(SweepConfig.model_validate(config))
    grid_hv = hypervolume([Point(str(i), r["accuracy"], r["cost"]) for i, r in enumerate(rows)])
    budget, quarter = len(rows), max(1, len(rows) // 4)
    curves = {name: [simulate(alg, starts, seed, budget, rows, plan) for seed in range(args.seeds or (2 if
              args.quick else 10))] for name, (alg, starts) in SEARCHERS.items()}
    report = summarize(curves, grid_hv, quarter, len(rows))
    plot(curves, grid_hv, quarter, out / "search_hypervolume.png")
    (out / "search.json").write_text(json.dumps({"grid": rows, "grid_hypervolume": grid_hv, "curves": curves,
                                                 "summary": report}, indent=2, default=str))
    print(f"plot: {out / 'search_hypervolume.png'}; figures: {out / 'search.json'}")
    return report


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


def plot(curves: dict, grid_hv: float, quarter: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, runs in curves.items():
        x = range(1, len(runs[0]) + 1)
        mean = [statistics.mean(c[i] for c in runs) / grid_hv for i in range(len(runs[0]))]
        low = [min(c[i] for c in runs) / grid_hv for i in range(len(runs[0]))]
        ax.plot(x, mean, label=name)
        ax.fill_between(x, low, mean, alpha=0.12)
    ax.axhline(0.95, color="#888", linestyle="--", label="95 % of the grid")
    ax.axvline(quarter, color="#bbb", linestyle=":", label="a quarter of the grid's trials")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume / grid's")
    ax.set_title("front found against trials (mean over seeds; band down to the worst seed)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
