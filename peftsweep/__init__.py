"""peftsweep: search the fine-tuning method together with its hyperparameters."""

__version__ = "0.1.0"
