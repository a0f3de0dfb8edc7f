"""MLflow tracking: the client and its tags, the trial logger, reading a sweep's runs back, the saved front view, the
tracking server and checkpoint cleanup. It imports results, never Tune orchestration."""
