"""Results: trial records, the Pareto front and hypervolume, the summary, the confirm stage's verdicts and their
statistics. Pure functions of records: no Ray, no MLflow."""
