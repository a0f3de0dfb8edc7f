"""A thousand trials: does the driver, the tracking store or the review path grow with the trial count?

One sweep of N trials through the real driver: Tune, the configured Optuna sampler (TPE), the Pareto ASHA scheduler,
the MLflow trial logger, resume state, the summary and the dashboard. Its trials are stand-ins (trainers/stand_in.py:
the same session, reports and checkpoints as a trial's, made-up plausible metrics, no training), many at once on a
fraction of a CPU each. Per block of trials (in the order they end) it reports the driver's CPU and wall seconds per
trial, the searcher's suggest time, the scheduler's decision time, MLflow calls and their seconds per trial and the
driver's memory; then the time of the summary and of the dashboard (and the HTML's size), measured again from the
store as a reviewer would.

    .venv/bin/python bench/scale.py                      # 1,000 trials, 32 at a time, SQLite
    .venv/bin/python bench/scale.py --quick              # 100 trials: proves it runs (no timing claims)
    .venv/bin/python bench/scale.py --json out.json      # also write the figures
    .venv/bin/python bench/scale.py --tracking server --kill-at 500 --browser
        # MLflow's server on PostgreSQL; the driver SIGKILLed after 500 trials and the sweep `--resume`d (the table is
        # the resumed driver's); then the MLflow views' first load in headless Chromium

TPE's ask alone, without Ray (its growth with the trial count, bounded and not): bench/tpe_history.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ["PEFTSWEEP_STAND_IN_TRIALS"] = "1"  # before Ray starts: its processes inherit it (trainers/stand_in.py)

from common import tiny_assets  # noqa: E402  (puts the repository on sys.path, sets the environment)


@dataclass
class Block:
    trials: int  # trials ended by the end of this block
    wall_s_per_trial: float
    driver_cpu_s_per_trial: float
    suggest_ms_per_trial: float
    scheduler_ms_per_trial: float
    tune_state_ms_per_trial: float  # Tune saving the sweep's state (what --resume reads), on the driver's main thread
    mlflow_calls_per_trial: float
    mlflow_s_per_trial: float
    driver_rss_mb: float


@dataclass
class Counters:
    """What the driver spent, summed since the start (the patched methods below add to it)."""

    ended: int = 0
    suggest_s: float = 0.0
    scheduler_s: float = 0.0
    tune_state_s: float = 0.0
    mlflow_calls: int = 0
    mlflow_s: float = 0.0
    blocks: list[Block] = field(default_factory=list)
    last: tuple = ()  # (ended, wall, cpu, suggest, scheduler, tune state, calls, mlflow) at the last block's end


COUNT = Counters()


def _timed(method, into: str):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            setattr(COUNT, into, getattr(COUNT, into) + time.perf_counter() - start)
            if into == "mlflow_s":
                COUNT.mlflow_calls += 1
    return wrapper


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _snapshot() -> tuple:
    return (COUNT.ended, time.perf_counter(), _cpu(), COUNT.suggest_s, COUNT.scheduler_s, COUNT.tune_state_s,
            COUNT.mlflow_calls, COUNT.mlflow_s)


def _close_block() -> None:
    now = _snapshot()
    n = now[0] - COUNT.last[0]
    if n <= 0:
        return
    d = [b - a for a, b in zip(COUNT.last, now)]
    COUNT.blocks.append(Block(now[0], d[1] / n, d[2] / n, 1000 * d[3] / n, 1000 * d[4] / n, 1000 * d[5] / n,
                              d[6] / n, d[7] / n, _rss_mb()))
    COUNT.last = now


def instrument(block: int) -> None:
    """Time the driver's parts where they are called: the searcher's suggest, the scheduler's decisions, every
    MlflowClient call; count the trials that ended (the trial logger's completion and error hooks)."""
    from mlflow.tracking import MlflowClient
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from peftsweep.search.orchestration.pareto_asha import ParetoASHA
    from peftsweep.search.orchestration.searcher import BudgetedOptunaSearch
    from peftsweep.search.tracking.trial_logger import MlflowTrialLogger

    BudgetedOptunaSearch.suggest = _timed(BudgetedOptunaSearch.suggest, "suggest_s")
    for name in ("on_trial_result", "on_trial_complete", "choose_trial_to_run"):
        setattr(ParetoASHA, name, _timed(getattr(ParetoASHA, name), "scheduler_s"))
    _ExperimentCheckpointManager.sync_up_experiment_state = _timed(
        _ExperimentCheckpointManager.sync_up_experiment_state, "tune_state_s")
    for name in dir(MlflowClient):
        if not name.startswith("_") and callable(getattr(MlflowClient, name)):
            setattr(MlflowClient, name, _timed(getattr(MlflowClient, name), "mlflow_s"))

    def counting(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            out = method(self, *args, **kwargs)
            COUNT.ended += 1
            if COUNT.ended % block == 0:
                _close_block()
            return out
        return wrapper

    MlflowTrialLogger.on_trial_complete = counting(MlflowTrialLogger.on_trial_complete)
    MlflowTrialLogger.on_trial_error = counting(MlflowTrialLogger.on_trial_error)
    COUNT.last = _snapshot()


def sweep_config(directory: Path, trials: int, concurrent: int, tracking_uri: str | None = None) -> dict:
    model, data = tiny_assets(directory)
    config = {"name": "scale", "model": model, "data": data, "output_dir": str(directory / "out"),
              "methods": "all", "train": {"epochs": 3, "batch_size": 16},
              "search": {"algorithm": "tpe", "num_samples": trials, "max_concurrent_trials": concurrent, "seed": 0,
                         "start_points": "none"},
              "early_stopping": {"enabled": True, "grace_period": 1, "reduction_factor": 3},
              # a sliver of a CPU each: `concurrent` stand-ins at once on any machine (they compute nothing)
              "resources": {"num_workers": 1, "cpus_per_worker": round(1 / concurrent, 4)}}
    if tracking_uri:
        config["tracking"] = {"uri": tracking_uri}
    return config


@contextlib.contextmanager
def tracking_server(directory: Path) -> Iterator[str]:
    """PostgreSQL and `peftsweep tracking-server` on it (artifacts proxied), as a cluster's tracking is set up
    (docs/cluster.md); yields the server's URI."""
    from tests.services import VENV_BIN, background, free_port, mlflow_healthy, postgres, wait_for

    port = free_port()
    with postgres(directory / "pg") as database, \
            background([f"{VENV_BIN}/peftsweep", "tracking-server", "--backend-store-uri", database,
                        "--artifacts-destination", str(directory / "artifacts"), "--port", str(port)],
                       directory / "mlflow-server.log") as server:
        uri = f"http://127.0.0.1:{port}"
        wait_for(lambda: mlflow_healthy(uri), 180, "the MLflow server", server)
        yield uri


def kill_driver_at(args, directory: Path, tracking_uri: str | None) -> dict:
    """Run the sweep's driver in a process of its own and SIGKILL it once `args.kill_at` trials have ended (its
    progress lines say so), then stop the local Ray it started, as a user's `ray stop` would."""
    command = [sys.executable, __file__, "--driver-only", str(directory), "--trials", str(args.trials),
               "--concurrent", str(args.concurrent)] + (["--tracking-uri", tracking_uri] if tracking_uri else [])
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    done = 0
    try:
        for line in driver.stdout:
            print(line, end="", flush=True)  # the first driver's progress lines
            if (found := DONE.search(line)) and (done := int(found.group(1))) >= args.kill_at:
                driver.kill()
                break
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    if done < args.kill_at:
        raise RuntimeError(f"the first driver ended (code {driver.returncode}) before {args.kill_at} trials")
    return {"killed_after": done}


DONE = re.compile(r"\] (\d+)/\d+ done")  # a progress line: "[  12s] 34/1000 done, 8 running, ..."


def run_counts(outcome) -> dict:
    """What MLflow holds: child runs of the sweep, the trial ids they carry, and any trial with two runs."""
    from collections import Counter

    from peftsweep.search.tracking.client import TRIAL_TAG, client_for, trial_runs

    runs = trial_runs(client_for(outcome.tracking_uri), outcome.experiment_id, outcome.parent_run_id)
    per_trial = Counter(r.data.tags.get(TRIAL_TAG) for r in runs)
    return {"mlflow_runs": len(runs), "mlflow_trial_ids": len(per_trial),
            "duplicated_trials": sorted(t for t, n in per_trial.items() if n > 1),
            "mlflow_statuses": dict(Counter(r.info.status for r in runs))}


def front_view_load(outcome) -> dict:
    """The front's saved view (the link `peftsweep ui` prints; on a tracking server, the server's own UI) and the
    every-trial view, opened in headless Chromium as the dashboard test does: seconds from the request until the
    count, the chart and the run list are drawn."""
    from peftsweep.search.tracking.front_view import TRIALS_VIEW_ID, VIEW_ID, front_view_url
    from tests.dashboards.mlflow_page import open_view, other_view, serve_ui

    with contextlib.ExitStack() as stack:
        if outcome.tracking_uri.startswith("http"):
            link = front_view_url(outcome.tracking_uri, outcome.experiment_id, saved_view=True)
        else:
            link = stack.enter_context(serve_ui(outcome.tracking_uri, "scale"))[0]
        tmp, out = Path(stack.enter_context(tempfile.TemporaryDirectory())), {}
        for name, view in (("front_view", VIEW_ID), ("trials_view", TRIALS_VIEW_ID)):
            page = open_view(other_view(link, view), tmp / f"{name}.png")
            out |= {f"{name}_load_s": page.load_s, f"{name}_runs": page.matching}
    return out


def review_times(outcome) -> dict:
    """What a reviewer pays on the finished store: the summary (read, computed, written) and the dashboard."""
    from peftsweep.dashboards.report import build_dashboard
    from peftsweep.search.results.summary import write_files
    from peftsweep.search.tracking.client import client_for
    from peftsweep.search.tracking.runs import summarize_sweep

    client = client_for(outcome.tracking_uri)
    start = time.perf_counter()
    summary = summarize_sweep(client, outcome.experiment_id, outcome.parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        write_files(summary, Path(tmp))
        summary_s = time.perf_counter() - start
        start = time.perf_counter()
        board = build_dashboard(outcome.tracking_uri, "scale", Path(tmp) / "board", log_to_mlflow=False)
        dashboard_s = time.perf_counter() - start
        html_mb = board.html.stat().st_size / 2**20
    return {"summary_s": summary_s, "dashboard_s": dashboard_s, "dashboard_html_mb": html_mb,
            "runs": len(summary.trials), "distinct_trials": len({r.trial_id for r in summary.trials}),
            "statuses": summary.counts, "front": len(summary.front)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100 trials, 4 at a time: proves the script runs")
    parser.add_argument("--tracking", choices=("sqlite", "server"), default="sqlite",
                        help="server: a PostgreSQL-backed `peftsweep tracking-server` (needs PostgreSQL's binaries)")
    parser.add_argument("--kill-at", type=int, default=0,
                        help="SIGKILL the driver once this many trials ended, then measure the `--resume`d driver")
    parser.add_argument("--browser", action="store_true", help="also time the MLflow views' first load (Chromium)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--driver-only", type=Path, help=argparse.SUPPRESS)  # the driver --kill-at kills
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.concurrent, args.block = 100, 4, 50
    from peftsweep.search.config import SweepConfig
    from peftsweep.search.orchestration.sweep import run_sweep
    from peftsweep.search.plan import build_plan

    def plan_in(directory: Path, uri: str | None):
        return build_plan(SweepConfig.model_validate(sweep_config(directory, args.trials, args.concurrent, uri)))

    if args.driver_only:
        run_sweep(plan_in(args.driver_only, args.tracking_uri))
        return 0
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp, contextlib.ExitStack() as stack:
        uri = stack.enter_context(tracking_server(Path(tmp))) if args.tracking == "server" else None
        killed = kill_driver_at(args, Path(tmp), uri) if args.kill_at else {}
        plan = plan_in(Path(tmp), uri)
        instrument(args.block)
        start, cpu = time.perf_counter(), _cpu()
        outcome = run_sweep(plan, resume=bool(killed))
        sweep_wall, sweep_cpu = time.perf_counter() - start, _cpu() - cpu
        _close_block()  # the last, partial block
        review = review_times(outcome) | run_counts(outcome) | (front_view_load(outcome) if args.browser else {})
    report = {"trials": args.trials, "concurrent": args.concurrent, "tracking": args.tracking, **killed,
              "sweep_wall_s": sweep_wall, "sweep_driver_cpu_s": sweep_cpu, "blocks": [asdict(b) for b in COUNT.blocks],
              **review}
    print(f"{args.trials} stand-in trials, {args.concurrent} at a time, tracking: {args.tracking}"
          + (f"; driver SIGKILLed after {killed['killed_after']} trials, resumed" if killed else "")
          + f": {sweep_wall:.0f} s wall, driver {sweep_cpu:.0f} CPU-s")
    print(f"MLflow: {review['mlflow_runs']} runs of {review['mlflow_trial_ids']} trials, "
          f"{len(review['duplicated_trials'])} trials with more than one run; front {review['front']}")
    print(f"{'trials':>7} {'wall s/trial':>12} {'driver CPU s':>12} {'suggest ms':>10} {'sched ms':>9} "
          f"{'state ms':>9} {'MLflow calls':>12} {'MLflow s':>9} {'RSS MiB':>8}")
    for b in COUNT.blocks:
        print(f"{b.trials:>7} {b.wall_s_per_trial:>12.3f} {b.driver_cpu_s_per_trial:>12.3f} "
              f"{b.suggest_ms_per_trial:>10.1f} {b.scheduler_ms_per_trial:>9.2f} {b.tune_state_ms_per_trial:>9.1f} "
              f"{b.mlflow_calls_per_trial:>12.1f} {b.mlflow_s_per_trial:>9.3f} {b.driver_rss_mb:>8.0f}")
    print(f"review: summary {review['summary_s']:.1f} s, dashboard {review['dashboard_s']:.1f} s "
          f"({review['dashboard_html_mb']:.1f} MiB of HTML)"
          + (f"; MLflow front view first load {review['front_view_load_s']:.1f} s ({review['front_view_runs']} runs), "
             f"every-trial view {review['trials_view_load_s']:.1f} s ({review['trials_view_runs']} runs)"
             if args.browser else ""))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
