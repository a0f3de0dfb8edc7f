"""TPE's ask alone (no Ray), as the sweep builds it, with its history bounded (peftsweep's default,
search.orchestration.bounded_tpe) and unbounded (Optuna's own TPE), side by side in one run: ms per ask and the
hypervolume of what each has found, per block of trials.

Both search the sweep's joint space (every method, make_sampler's settings, `--concurrent` trials asked ahead of
their results, ending out of order as Tune's do) for a made-up landscape: each method has an accuracy and a trainable %
of its own, each hyperparameter a best value (from a hash of its name) that costs accuracy away from it, each size
(LoRA r, virtual tokens, ...) raises the trainable %; plus noise. It is not a model's landscape: it tells whether the
bounded history finds fronts as good as the unbounded one's where both search the same thing, and what each ask costs.

    .venv/bin/python bench/tpe_history.py                 # 1,000 trials, 32 running, 3 seeds
    .venv/bin/python bench/tpe_history.py --quick         # 100 trials, 1 seed: proves it runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections import deque
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path, sets the environment)


def unit(*names: str) -> float:
    """A fixed number in [0, 1) for these names."""
    return int(hashlib.sha256("/".join(names).encode()).hexdigest()[:8], 16) / 2 ** 32


def landscape(params: dict, distributions: dict, rng: random.Random) -> tuple[float, float]:
    """(accuracy, trainable %) of a point of the joint space (see the module's text)."""
    from optuna.distributions import CategoricalDistribution

    method = params["method"]
    accuracy, trainable = 0.5 + 0.35 * unit(method, "accuracy"), 10 ** (-2 + 4 * unit(method, "trainable"))
    for name, value in params.items():
        if name == "method":
            continue
        dist = distributions[name]
        if isinstance(dist, CategoricalDistribution):
            best = int(unit(name, "best") * len(dist.choices))
            accuracy -= 0.0 if dist.choices.index(value) == best else 0.04
            continue
        low, high, x = dist.low, dist.high, value
        if getattr(dist, "log", False):
            low, high, x = math.log(low), math.log(high), math.log(value)
        u = (x - low) / (high - low) if high > low else 0.5
        accuracy -= 0.3 * (u - unit(name, "best")) ** 2
        if any(size in name for size in ("_r", "tokens", "bottleneck")):
            trainable *= 1 + 9 * u
    return accuracy + rng.gauss(0, 0.01), trainable


def search(trials: int, running: int, block: int, seed: int, history: int | None) -> dict:
    """One TPE run: ms per ask and hypervolume per block; `history` None: Optuna's own TPE."""
    import optuna

    from peftsweep.search.config import SearchSettings
    from peftsweep.search.orchestration.searcher import make_sampler
    from peftsweep.search.orchestration.space import define_space
    from peftsweep.search.results.pareto import Point, hypervolume
    from peftsweep.spaces import REGISTRY

    rng = random.Random(seed)
    sampler = make_sampler(SearchSettings(algorithm="tpe", num_samples=trials, seed=seed), len(REGISTRY))
    sampler.history = history if history is not None else math.inf
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    live, seconds, points, hv = deque(), [], [], []
    while len(points) < trials:
        while len(live) < running and len(seconds) < trials:
            start = time.perf_counter()
            trial = study.ask()
            define_space(trial, REGISTRY)
            seconds.append(time.perf_counter() - start)
            live.append(trial)
        trial = live.popleft() if rng.random() < 0.5 else live.pop()  # trials end out of order
        accuracy, trainable = landscape(trial.params, trial.distributions, rng)
        study.tell(trial, [accuracy, trainable])
        points.append(Point(str(trial.number), accuracy, (trainable,)))
        if len(points) % block == 0:
            hv.append(hypervolume(points, reference_accuracy=0.5))
    ms = [1000 * sum(seconds[i:i + block]) / len(seconds[i:i + block]) for i in range(0, trials, block)]
    return {"ask_ms_per_block": ms, "hypervolume_per_block": hv}


def main() -> int:
    from peftsweep.search.orchestration.bounded_tpe import TPE_HISTORY

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--history", type=int, default=TPE_HISTORY, help="the bounded TPE's history")
    parser.add_argument("--quick", action="store_true", help="100 trials, 1 seed, history 40: proves it runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.block, args.seeds, args.history = 100, 50, 1, 40
    report = {"trials": args.trials, "concurrent": args.concurrent, "history": args.history, "runs": []}
    print(f"TPE alone, {args.trials} trials, {args.concurrent} running; per {args.block} trials: ms per ask | "
          f"hypervolume found")
    for seed in range(args.seeds):
        for name, history in (("bounded", args.history), ("unbounded", None)):
            run = search(args.trials, args.concurrent, args.block, seed, history) | {"seed": seed, "tpe": name}
            report["runs"].append(run)
            print(f"seed {seed} {name:>9} ({history or 'all'}): "
                  + " ".join(f"{ms:.0f}" for ms in run["ask_ms_per_block"]) + " | "
                  + " ".join(f"{v:.3f}" for v in run["hypervolume_per_block"]), flush=True)
    for name in ("bounded", "unbounded"):
        runs = [r for r in report["runs"] if r["tpe"] == name]
        last_ms = sum(r["ask_ms_per_block"][-1] for r in runs) / len(runs)
        final_hv = sum(r["hypervolume_per_block"][-1] for r in runs) / len(runs)
        report[name] = {"last_block_ask_ms": last_ms, "final_hypervolume": final_hv}
        print(f"{name:>9}: last block {last_ms:.0f} ms per ask; final hypervolume {final_hv:.3f} "
              f"(mean of {len(runs)} seeds)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
