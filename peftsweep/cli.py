"""The `peftsweep` command: the only module that knows every package."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from peftsweep import console
from peftsweep.environment import apply_defaults
from peftsweep.errors import UserError
from peftsweep.search.results.objectives import QUALITIES as QUALITY_NAMES


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """`key=value` pairs; values parsed as YAML scalars (8 -> int, 1e-2 -> float, true -> bool)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected key=value")
        value = yaml.safe_load(raw)
        out[key] = float(raw) if isinstance(value, str) and _is_float(raw) else value
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def cmd_methods(args: argparse.Namespace) -> int:
    from peftsweep.spaces import REGISTRY

    for spec in REGISTRY.values():
        print("\n".join(spec.describe()))
    return 0


# `peftsweep train` without a config: the demo's model and data (the bundled TREC-6 questions), sized for one trial
TRAIN_DEFAULT = {"name": "train", "model": "all-MiniLM-L6-v2",
                 "data": {"preset": "trec6", "train_size": 800, "validation_size": 500, "test_size": 500}}


def cmd_train(args: argparse.Namespace) -> int:
    """One trial, outside a sweep: a one-method plan of the config (its model, task, data, training settings and
    resources), through the same preflight as `run`; the method's defaults, overridden by --hp."""
    from peftsweep.search.orchestration.sweep import trial_template
    from peftsweep.search.plan import plan_trial
    from peftsweep.trainers.launch import run_name_for, run_trial

    config = load_config(args, default=TRAIN_DEFAULT)
    planned = plan_trial(config, args.method, parse_assignments(args.hp, "--hp"),
                         available=local_resources_unless(args))
    show_plan(planned.plan)
    import ray

    from peftsweep.search.orchestration.cluster import connect_ray

    connect_ray()  # as a sweep does: worker logs stay in Ray's session log directory, not on the terminal
    cfg = trial_template(planned.plan).for_trial(args.method, planned.hparams)
    output = Path(args.output).resolve()
    print(f"training {args.method} with {cfg.resources.num_workers} Ray Train worker(s) ({cfg.resources.strategy}); "
          f"worker logs: /tmp/ray/session_latest/logs")
    from ray.train import TrainingFailedError

    from peftsweep.trainers.faults import FatalTrialError, training_failure

    name = run_name_for(cfg, f"{args.method}-train")  # another configuration never continues this one's checkpoint
    try:
        result = run_trial(cfg, ray.put(planned.plan.data), storage_path=str(output), name=name)
    except TrainingFailedError as exc:
        print(f"peftsweep train: training failed: {training_failure(exc)}", file=sys.stderr)
        return 1
    except FatalTrialError as exc:
        print(f"peftsweep train: training failed: {exc}", file=sys.stderr)
        return 1
    print_metrics(result.metrics)
    print(f"checkpoint: {result.checkpoint_path}")
    return 0


def load_config(args: argparse.Namespace, default: dict[str, Any] | None = None):
    from peftsweep.search.config import load_sweep_config

    return load_sweep_config(args.config, parse_assignments(args.set, "--set"), default)


def local_resources_unless(args: argparse.Namespace) -> dict[str, float] | None:
    """A local Ray gets this machine's resources; a cluster's are checked once connected (by Ray for `train`)."""
    from peftsweep.search.plan import local_resources

    on_cluster = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS")
    return None if on_cluster else local_resources()


def load_plan(args: argparse.Namespace):
    from peftsweep.search.plan import build_plan

    plan = build_plan(load_config(args), available=local_resources_unless(args))
    show_plan(plan)
    return plan


def show_plan(plan) -> None:
    for note in plan.notes:
        print(f"note: {note}")
    if plan.memory is not None:
        from peftsweep.search.memory_check import format_plan

        print("\n".join(format_plan(plan.memory)))


def cmd_validate(args: argparse.Namespace) -> int:
    plan = load_plan(args)
    c = plan.config
    from peftsweep.search.orchestration.space import grid_size

    sizes = {name: len(split) for name, split in plan.data.splits.items()}
    trials = grid_size(plan.methods, c.search.grid_points) if c.search.algorithm == "grid" else c.search.num_samples
    what = (f"{plan.data.num_labels} labels" if not plan.data.max_new_tokens else
            f"answers of up to {plan.data.max_new_tokens} tokens, examples of up to {plan.data.max_length}")
    which = "the front, the best full fine-tune" + (" and every method's best" if c.confirm.best_per_method else "")
    seeds = (f"{c.confirm.first_seeds} new seeds each, 2 more at a time while a verdict is undecided (at most "
             f"{c.confirm.max_seeds})" if c.confirm.auto else f"{c.confirm.seeds} new seeds each")
    confirm = f" then {which} confirmed with {seeds}," if c.confirm.seeds else ""
    print(f"{args.config}: OK — {c.task}, {len(plan.methods)} methods ({', '.join(plan.methods)}), "
          f"{c.search.algorithm} x {trials} trials,{confirm} data {sizes}, {what}; front over "
          f"{c.objective_set.describe()}; MLflow {c.tracking_uri} experiment {c.experiment!r}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from peftsweep.search.orchestration.sweep import run_sweep

    plan = load_plan(args)
    return report(plan, run_sweep(plan, address=args.address, resume=args.resume, restart=args.restart))


def cmd_confirm(args: argparse.Namespace) -> int:
    from peftsweep.search.orchestration.sweep import confirm_sweep

    if args.seeds < 1:
        raise UserError(f"--seeds: at least 1 (got {args.seeds})")
    uri = args.tracking_uri or default_store(args.experiment)
    plan, outcome = confirm_sweep(uri, args.experiment, args.seeds, address=args.address,
                                  best_per_method=True if args.best_per_method else None)
    return report(plan, outcome)


def report(plan, outcome) -> int:
    """What `run` and `confirm` print at the end: the summary, where it went, the dashboard, how to browse it."""
    from peftsweep.search.tracking.front_view import front_view_url
    from peftsweep.search.results.summary import format_table

    print(format_table(outcome.summary))
    print(f"summary: {outcome.summary_json} and {outcome.summary_csv}")
    if outcome.summary.trials:
        from peftsweep.dashboards.report import build_dashboard

        board = build_dashboard(outcome.tracking_uri, plan.config.experiment, plan.config.output_path / "dashboard",
                                parent_run_id=outcome.parent_run_id, summary=outcome.summary)
        print(f"dashboard: {board.html} (also in MLflow, parent run artifacts under dashboard/)")
    print(f"MLflow: {outcome.tracking_uri} (experiment {plan.config.experiment!r}, parent run "
          f"{outcome.parent_run_id})")
    if outcome.tracking_uri.startswith(("http://", "https://")):
        print(f"  the front, in the MLflow UI: {front_view_url(outcome.tracking_uri, outcome.experiment_id)}")
    else:
        print(f"  browse it with: peftsweep ui --tracking-uri {outcome.tracking_uri} --experiment "
              f"{plan.config.experiment} (it prints the link to the front)")
    if outcome.status == "interrupted":
        return 130  # as a shell reports a program ended by Ctrl-C
    return 0 if outcome.summary.counts.get("completed") else 1


def cmd_summary(args: argparse.Namespace) -> int:
    import json

    from peftsweep.search.results.summary import as_dict, format_table
    from peftsweep.search.tracking.client import client_for, latest_sweep
    from peftsweep.search.tracking.runs import summarize_sweep

    uri = args.tracking_uri or default_store(args.experiment)
    client = client_for(uri)
    try:
        experiment_id, parent_run_id = latest_sweep(client, args.experiment)
    except LookupError as exc:
        raise UserError(f"--experiment: {exc} in {uri}") from None
    summary = summarize_sweep(client, experiment_id, parent_run_id, args.metric)
    print(json.dumps(as_dict(summary), indent=2) if args.json else format_table(summary))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from peftsweep.dashboards.report import build_dashboard
    from peftsweep.search.tracking.front_view import FRONT_FILTER, VIEW_NAME

    uri = args.tracking_uri or default_store(args.experiment)
    try:
        board = build_dashboard(uri, args.experiment, Path(args.out), log_to_mlflow=not args.no_log)
    except LookupError as exc:
        raise UserError(f"--experiment: {exc} in {uri}") from None
    print(f"dashboard: {board.html.resolve()}")
    print(f"plots: {', '.join(str(p.resolve()) for p in board.pngs)}")
    print(f"in MLflow's runs page: Views -> {VIEW_NAME!r}, or search {FRONT_FILTER}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the sweep's store, bound to loopback unless told otherwise."""

    from peftsweep.search.tracking.front_view import front_view_url, has_front_view
    from peftsweep.search.tracking.client import client_for
    from peftsweep.search.tracking.server import run_until_stopped, server_env

    uri = args.tracking_uri or default_store(args.experiment)
    if uri.startswith(("http://", "https://")):
        return print_server_link(uri, args.experiment)
    server = f"http://{args.host}:{args.port}"
    client = client_for(uri)
    found = client.get_experiment_by_name(args.experiment) if args.experiment else None
    link = (front_view_url(server, found.experiment_id, saved_view=has_front_view(client, found.experiment_id))
            if found else server)
    # One web worker, which uvicorn then runs without its supervisor: on a machine busy with a sweep the supervisor
    # took slow-starting workers for dead and killed them again and again, and the port never answered.
    # No uvicorn INFO lines (with one worker there is no supervisor whose "Child process died" they would carry).
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--registry-store-uri", uri,
               "--host", args.host, "--port", str(args.port), "--workers", "1",
               "--uvicorn-opts=--no-access-log --log-level warning"]
    print(f"starting MLflow's web UI on {server} (store {uri}) ...", flush=True)
    return run_until_stopped(command, server_env(),
                             f"http://127.0.0.1:{args.port}" if args.host in ("0.0.0.0", "::") else server,
                             args.start_timeout, f"MLflow UI for {uri}: {link}  (Ctrl-C stops it)")


def print_server_link(uri: str, experiment: str | None) -> int:
    """A tracking server serves its own UI (MLflow's `ui` refuses an http store): the link to the experiment's front
    there, or the server's address without --experiment."""
    from peftsweep.search.tracking.client import check_reachable, client_for
    from peftsweep.search.tracking.front_view import front_view_url, has_front_view

    if problems := check_reachable(uri, key="--tracking-uri"):
        raise UserError(problems)
    if experiment is None:
        print(f"MLflow UI of the tracking server: {uri}")
        return 0
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"--experiment: no experiment {experiment!r} in {uri}")
    print(f"the front of {experiment!r}, in the tracking server's MLflow UI: "
          f"{front_view_url(uri, found.experiment_id, saved_view=has_front_view(client, found.experiment_id))}")
    return 0


def cmd_tracking_server(args: argparse.Namespace) -> int:
    from peftsweep.search.tracking.server import ServerSettings, serve

    if not args.backend_store_uri:
        raise UserError("--backend-store-uri: required (or $MLFLOW_BACKEND_STORE_URI), e.g. "
                        "postgresql://mlflow:PASSWORD@localhost:5432/mlflow")
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    if (args.auth_credentials or args.auth_db_uri) and not args.auth:
        raise UserError("--auth-credentials / --auth-db-uri: only with --auth")
    return serve(ServerSettings(args.backend_store_uri, args.artifacts_destination, args.host, args.port,
                                args.workers, args.auth, args.auth_credentials, args.auth_db_uri), extra)


def default_store(experiment: str | None) -> str:
    if experiment is None:
        raise UserError("--tracking-uri: give the store's URI, or --experiment NAME for runs/NAME/mlflow.db here")
    db = Path("runs") / experiment / "mlflow.db"
    if not db.is_file():
        raise UserError(f"--tracking-uri: not given, and there is no local store at {db}; "
                        f"pass the URI the sweep logged to")
    return f"sqlite:///{db.resolve()}"


def print_metrics(metrics: dict[str, Any]) -> None:
    from peftsweep import metric_names as m

    keys = [m.VAL_ACCURACY, m.VAL_MACRO_F1, m.VAL_LOSS, m.TEST_ACCURACY, m.TEST_MACRO_F1, m.TEST_LOSS, m.TRAINABLE_PARAMS,
            m.TRAINABLE_PCT, m.STORED_PARAMS, m.HEAD_PARAMS, m.BASE_PARAMS, m.TRAIN_SECONDS, m.SAMPLES_PER_SECOND,
            m.EVAL_SAMPLES_PER_SECOND, m.PEAK_MEMORY_MB, "strategy", "frozen_dtype"]
    for key in keys:
        if key in metrics:
            value = metrics[key]
            print(f"  {key:<20} {value:.4g}" if isinstance(value, float) else f"  {key:<20} {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the fine-tuning methods with their hyperparameters and search ranges")
    docs = sub.add_parser("docs", help="write the reference pages generated from the code (config keys, methods)")
    docs.add_argument("--out", default="docs", help="folder to write them to")
    for name, text in (("run", "run a sweep"), ("validate", "check a sweep config, its model and data; run nothing")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", help="sweep YAML, e.g. configs/demo.yaml")
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, dotted (search.num_samples=30); repeatable")
        cmd.add_argument("--address", default=None,
                         help="Ray cluster address (default: $RAY_ADDRESS or local); validate: the sweep is bound for "
                              "that cluster, whose capacity `run` checks once connected")
        if name == "run":
            cmd.add_argument("--resume", action="store_true",
                             help="continue the interrupted sweep in the config's output_dir (same config)")
            cmd.add_argument("--restart", action="store_true",
                             help="abandon an interrupted sweep in output_dir and start a new one")
    confirm = sub.add_parser("confirm", help="re-confirm a finished sweep with more seeds: train the confirm runs it "
                                             "lacks (docs/confirm.md), then summarize again")
    confirm.add_argument("--experiment", required=True, help="the MLflow experiment; its newest sweep is confirmed")
    confirm.add_argument("--seeds", type=int, required=True,
                         help="confirm runs per configuration in all (seeds already run count; only the missing run)")
    confirm.add_argument("--tracking-uri", default=None, help="default: runs/<experiment>/mlflow.db here")
    confirm.add_argument("--best-per-method", action="store_true",
                         help="confirm the best trial of every method too (as confirm.best_per_method)")
    confirm.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    summary = sub.add_parser("summary", help="print a finished sweep's Pareto front and comparison from MLflow")
    summary.add_argument("--experiment", required=True)
    summary.add_argument("--tracking-uri", default=None, help="default: runs/<experiment>/mlflow.db here")
    summary.add_argument("--json", action="store_true")
    summary.add_argument("--metric", choices=sorted(QUALITY_NAMES), default=None,
                         help="summarize on this quality instead of the one the sweep searched (every trial logs its "
                              "task kind's qualities: accuracy, macro_f1, mcc for classification)")
    board = sub.add_parser("dashboard", help="write the interactive HTML report and PNG plots of a sweep")
    board.add_argument("--experiment", required=True)
    board.add_argument("--tracking-uri", default=None, help="default: runs/<experiment>/mlflow.db here")
    board.add_argument("--out", required=True, help="directory for dashboard.html and the PNGs")
    board.add_argument("--no-log", action="store_true", help="don't attach the files to the sweep's MLflow run")
    ui = sub.add_parser("ui", help="start the MLflow UI on a sweep's store (bound to 127.0.0.1); on a tracking server "
                                   "(http://...), print the link to the front in the server's own UI")
    ui.add_argument("--tracking-uri", default=None, help="the sweep's store (default: runs/<experiment>/mlflow.db); "
                                                         "a tracking server's http(s) URI: its own UI is linked")
    ui.add_argument("--experiment", default=None, help="use runs/<experiment>/mlflow.db here")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 exposes it to the network")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--start-timeout", type=float, default=180,
                    help="seconds to wait for the UI to answer before giving up with a message (default 180)")

    server = sub.add_parser("tracking-server", help="start the team's MLflow tracking server on a database "
                                                     "(PostgreSQL), artifacts proxied over HTTP")
    server.add_argument("--backend-store-uri", default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
                        help="postgresql://user:password@host:5432/db (default: $MLFLOW_BACKEND_STORE_URI)")
    server.add_argument("--artifacts-destination", default=str(Path("mlartifacts").resolve()),
                        help="where uploaded artifacts are stored: a directory or s3://... (default: ./mlartifacts)")
    server.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 for the cluster's nodes "
                                                             "(without --auth, anyone who reaches it can write: keep it on a private network)")
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--workers", type=int, default=2, help="server worker processes")
    server.add_argument("--auth", action="store_true",
                        help="MLflow's basic-auth app: every request needs a user and password; the admin's from "
                             "$MLFLOW_AUTH_ADMIN_USERNAME / $MLFLOW_AUTH_ADMIN_PASSWORD or --auth-credentials")
    server.add_argument("--auth-credentials", default=None, metavar="FILE",
                        help="with --auth: a file (mode 600) with `username: ...` and `password: ...` lines")
    server.add_argument("--auth-db-uri", default=None,
                        help="with --auth: where users and permissions are kept (default: the backend store)")
    server.add_argument("mlflow_args", nargs=argparse.REMAINDER, help="after --: more `mlflow server` options")

    train = sub.add_parser("train", help="train one method once (a single trial, outside a sweep)",
                           description="One trial of one method on a sweep config's model, task, data, training "
                                       "settings and resources, checked as `run` checks a sweep. Without a config: "
                                       "all-MiniLM-L6-v2 on the bundled TREC-6 questions, 2 workers.")
    train.add_argument("config", nargs="?", default=None, help="sweep YAML (its methods: and search: are not used)")
    train.add_argument("--method", required=True, help="the method to train (`peftsweep methods` lists them)")
    train.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                       help="hyperparameter (repeatable); others take the method's defaults")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (repeatable), e.g. train.epochs=1, resources.num_workers=1, "
                            "model=./my-model, data.train_file=data.csv, resources.strategy=fsdp")
    train.add_argument("--output", default="runs/train", help="where Ray keeps the trial's checkpoints")
    return parser


def cmd_docs(args: argparse.Namespace) -> int:
    from peftsweep.reference import write

    for path in write(Path(args.out)):
        print(f"wrote {path}")
    return 0


COMMANDS = {"methods": cmd_methods, "docs": cmd_docs, "train": cmd_train, "run": cmd_run, "validate": cmd_validate,
            "summary": cmd_summary, "confirm": cmd_confirm, "dashboard": cmd_dashboard, "ui": cmd_ui,
            "tracking-server": cmd_tracking_server}


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    console.install()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"peftsweep {args.command}: {exc.render()}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `peftsweep methods | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
