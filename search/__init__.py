"""The sweep, one sub-package per job: config.py and plan.py (the config and its preflight, the memory plan in
memory_check.py), orchestration/ (Ray Tune: the sweep, its trials and their Train jobs), tracking/ (MLflow), results/
(records, Pareto front, summary, verdicts: pure functions). storage.py and points.py are below them all."""
