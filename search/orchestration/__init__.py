"""Tune orchestration: the sweep, its trials and their Ray Train jobs, the searcher and schedulers, the confirm stage,
warm start, resume and the floor. It may import tracking and results; neither imports it."""
