"""A trial's point: the flat config Tune hands a trial, {"method": M, "M.r": 8, "M.lr": 0.01, ...}, and back.

Names are prefixed with the method M so that Optuna never mixes two methods' ranges for one name. Below both Tune
orchestration (which makes points) and tracking (which names and logs them).
"""

from __future__ import annotations

from typing import Any


def flat(method: str, hparams: dict[str, Any]) -> dict[str, Any]:
    return {"method": method} | {f"{method}.{k}": v for k, v in hparams.items()}


def unflat(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method, its hyperparameters) from a trial's config; a grid search wraps each point as {"point": ...}."""
    config = config.get("point", config)
    method = config["method"]
    prefix = f"{method}."
    return method, {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


# A confirm run's point also carries what it repeats: the training seed, the search trial whose configuration it is,
# that trial's MLflow run and why it was chosen (keys without a method prefix: `unflat` leaves them out).
SEED_KEY, CONFIG_KEY, RUN_KEY, REASONS_KEY = "confirm_seed", "confirm_config", "confirm_run", "confirm_reasons"


def repeat_point(method: str, hparams: dict[str, Any], seed: int, config_id: str, run_id: str,
                 reasons: str) -> dict[str, Any]:
    return flat(method, hparams) | {SEED_KEY: seed, CONFIG_KEY: config_id, RUN_KEY: run_id, REASONS_KEY: reasons}


def repeat_of(config: dict[str, Any]) -> dict[str, Any] | None:
    """A confirm run's seed, config id, run id and reasons (by key), or None for a search trial."""
    config = config.get("point", config)
    if SEED_KEY not in config:
        return None
    return {"seed": int(config[SEED_KEY]), "config_id": str(config[CONFIG_KEY]), "run_id": str(config[RUN_KEY]),
            "reasons": str(config[REASONS_KEY])}
