"""What people look at: Pareto and comparison plots, reports, MLflow views."""
