"""The sweep config: YAML in, a typed `SweepConfig` out, every problem reported at once under the key the user wrote.

Loading is three steps, each collecting problems rather than stopping at the first: parse the YAML safely, apply the
command line's dotted `--set key=value` overrides, validate the structure (unknown keys rejected). What needs the
method registry (range overrides, method names) is checked in `search.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from spaces.errors import UserError
from trainers.config import Resources, Strict, TrainSettings
from trainers.data import DataSpec


class ResourceOverride(Strict):
    num_workers: int | None = Field(None, ge=1)
    cpus_per_worker: float | None = Field(None, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0)


class SweepResources(Resources):
    per_method: dict[str, ResourceOverride] = Field(
        default_factory=dict, description="per-method overrides, e.g. {full: {num_workers: 4}}")

    def for_method(self, method: str) -> Resources:
        base = self.model_dump(exclude={"per_method"})
        override = self.per_method.get(method)
        return Resources(**(base | (override.model_dump(exclude_none=True) if override else {})))


class SearchSettings(Strict):
    algorithm: Literal["tpe", "nsga2", "random", "grid"] = Field(
        "tpe", description="tpe/nsga2/random: Optuna samplers (multi-objective); grid: every point of a coarse grid")
    num_samples: int = Field(12, ge=1, description="trials to run (grid: unused, every grid point runs once)")
    max_concurrent_trials: int = Field(1, ge=1, description="trials running at the same time")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting new trials after this many seconds")
    seed: int = Field(0, description="seed of the searcher")
    start_with_defaults: bool = Field(
        True, description="the first trials run every method once at its defaults, so no method goes untried")
    grid_points: int = Field(3, ge=1, description="grid: points per numeric hyperparameter (log-spaced if log)")


class EarlyStopping(Strict):
    enabled: bool = Field(False, description="ASHA on validation accuracy; stopped trials never join the front")
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1, description="ASHA keeps about 1/reduction_factor at each rung")


class Tracking(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite in output_dir")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")


class SweepConfig(Strict):
    name: str = Field(description="the sweep's name: MLflow experiment and output folder by default")
    model: str = Field(description="local model directory, bundled model name or hub id")
    trust_remote_code: bool = Field(False, description="allow model code from the hub (off: safer)")
    data: DataSpec
    methods: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"all": {}},
        description="methods to search, each with optional range overrides; a list or 'all' also works")
    train: TrainSettings = TrainSettings()
    search: SearchSettings = SearchSettings()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: SweepResources = SweepResources()
    tracking: Tracking = Tracking()
    delete_dominated_checkpoints: bool = Field(
        False, description="when the sweep has finished, delete the checkpoints (Ray's and MLflow's copies) of every "
                           "trial not on the Pareto front")
    output_dir: str | None = Field(None, description="where MLflow's default store, checkpoints and summaries go; "
                                                     "default runs/<name>, relative to where the command runs")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_shapes(cls, value: Any) -> Any:
        if value == "all" or value is None:
            return {"all": {}}
        if isinstance(value, list):
            return {str(m): {} for m in value}
        if isinstance(value, dict):
            return {k: (v if v is not None else {}) for k, v in value.items()}
        return value

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}").expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.output_path / 'mlflow.db'}"

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def apply_overrides(raw: dict[str, Any], assignments: dict[str, Any]) -> dict[str, Any]:
    """`search.num_samples=30` sets raw['search']['num_samples'], creating sections as needed."""
    for dotted, value in assignments.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return raw


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())  # safe: YAML tags cannot construct Python objects
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys (name:, model:, data:, ...)")
    return raw


def describe_errors(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        shown = repr(error["input"])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        got = f" (got {shown})" if error["type"] not in ("missing", "extra_forbidden") else ""
        problems.append(f"{key}: {message}{got}")
    return problems


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or {})
    raw.setdefault("name", path.stem)
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe_errors(exc), f"{path}: invalid sweep config") from None
