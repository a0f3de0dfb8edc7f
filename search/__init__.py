"""The sweep: config, Ray Tune orchestration, MLflow tracking, Pareto front."""
