"""The sweep config: YAML in, a typed `SweepConfig` out, every problem reported at once under the key the user wrote.

Loading is three steps, each collecting problems rather than stopping at the first: parse the YAML safely, apply the
command line's dotted `--set key=value` overrides, validate the structure (unknown keys rejected). What needs the
method registry (range overrides, method names) is checked in `search.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from peftsweep.errors import UserError
from peftsweep.metric_names import TRAINABLE_PCT
from peftsweep.spaces import TaskName
from peftsweep.trainers.config import EvaluateSettings, ForgettingSettings, GenerationSettings, Resources, Strict, TrainSettings
from peftsweep.trainers.data import DataSpec


# What pyarrow (and so Ray Train) can write checkpoints to.
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def _gpu_count(value: Any) -> Any:
    """One clear message instead of pydantic's one per member of the union."""
    if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"GPUs per worker: a number >= 0, or auto (got {value!r})")


GpuCount = Annotated[float | Literal["auto"], BeforeValidator(_gpu_count)]


def _seeds(value: Any) -> Any:
    """One clear message instead of pydantic's one per member of the union."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100):
        return value
    raise ValueError("a whole number of seeds from 0 to 100, or auto")


SeedCount = Annotated[int | Literal["auto"], BeforeValidator(_seeds)]
# confirm.seeds: auto starts every configuration with this many seeds, then adds a batch at a time
AUTO_FIRST_SEEDS, AUTO_BATCH_SEEDS = 3, 2


StrategyChoice = Literal["ddp", "fsdp", "auto"]


class ResourceOverride(Strict):
    num_workers: int | None = Field(None, ge=1)
    cpus_per_worker: float | None = Field(None, gt=0)
    gpus_per_worker: GpuCount | None = None
    strategy: StrategyChoice | None = None
    cpu_offload: bool | None = None


class SweepResources(Resources):
    gpus_per_worker: GpuCount = Field(
        "auto", description="GPUs per worker (NCCL); auto: 1 when the Ray cluster has GPUs, else 0 (CPU, gloo)")
    strategy: StrategyChoice = Field(
        "auto", description="ddp | fsdp | auto: fsdp for the methods whose trials do not fit a worker under ddp "
                            "(the memory plan, docs/scale.md), else ddp")
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="memory of one GPU in GiB (as nvidia-smi shows it), for the memory plan where the "
                                "GPUs cannot be seen from where the sweep is validated (default: the GPUs' own)")
    per_method: dict[str, ResourceOverride] = Field(
        default_factory=dict, description="per-method overrides, e.g. {full: {num_workers: 4, strategy: fsdp}}")

    def for_method(self, method: str, cluster_has_gpus: bool = False, strategy: str | None = None) -> Resources:
        """The concrete resources of one method's trials; `auto` GPUs resolved against the cluster, `auto` strategy
        by the memory plan (`strategy`; ddp when none is given)."""
        base = self.model_dump(exclude={"per_method", "gpu_memory_gb"})
        override = self.per_method.get(method)
        chosen = base | (override.model_dump(exclude_none=True) if override else {})
        if chosen["gpus_per_worker"] == "auto":
            chosen["gpus_per_worker"] = 1.0 if cluster_has_gpus else 0.0
        if chosen["strategy"] == "auto":
            chosen["strategy"] = strategy or "ddp"
        return Resources(**chosen)

    def strategy_of(self, method: str) -> str:
        """What the user asked for one method: ddp, fsdp or auto."""
        override = self.per_method.get(method)
        return (override.strategy if override and override.strategy else None) or self.strategy

    def cpu_offload_of(self, method: str) -> bool:
        override = self.per_method.get(method)
        return override.cpu_offload if override and override.cpu_offload is not None else self.cpu_offload


class WarmStartSource(Strict):
    experiment: str = Field(description="an earlier sweep's MLflow experiment (its newest sweep)")
    tracking_uri: str | None = Field(None, description="its tracking store; default: this sweep's")
    allow_mismatch: bool = Field(False, description="take its trials even if its model, task, data, training "
                                                    "settings or methods differ from this sweep's")


class SearchSettings(Strict):
    algorithm: Literal["tpe", "nsga2", "random", "grid"] = Field(
        "tpe", description="tpe/nsga2/random: Optuna samplers (multi-objective; tpe's history is bounded in long "
                           "sweeps: the best and the most recent trials, docs/performance.md); grid: every point of "
                           "a coarse grid")
    num_samples: int = Field(12, ge=1, description="trials to run (grid: unused, every grid point runs once)")
    max_concurrent_trials: int = Field(1, ge=1, description="trials running at the same time")
    time_budget_s: float | None = Field(
        None, gt=0, description="end the sweep after this many seconds: no new trials start, running ones are stopped "
        "early (their Train jobs ended); a resumed sweep counts the time it spent before")
    seed: int = Field(0, description="seed of the searcher")
    start_points: Literal["smallest", "defaults", "none"] = Field(
        "smallest", description="the first trials run every method once: smallest = at its fewest trainable "
        "parameters (lowest r, virtual tokens, bottleneck), other hyperparameters at defaults; defaults = at its "
        "defaults; none = the searcher alone")
    grid_points: int = Field(3, ge=1, description="grid: points per numeric hyperparameter (log-spaced if log)")
    warm_start: list[WarmStartSource] = Field(
        default_factory=list, description="earlier sweeps whose completed trials seed the searcher (tpe, nsga2), e.g. "
        "`[{experiment: demo}]`; a method they already tried gets no start point")

    @field_validator("warm_start")
    @classmethod
    def _warm_start_needs_a_searcher(cls, value, info):
        if value and info.data.get("algorithm") in ("grid", "random"):
            raise ValueError(f"needs a searcher that learns from past trials (tpe or nsga2), not "
                             f"{info.data['algorithm']}")
        return value


class EarlyStopping(Strict):
    enabled: bool = Field(False, description="asynchronous successive halving at epoch rungs; stopped trials never "
                                             "join the front")
    objective: Literal["pareto", "accuracy"] = Field(
        "pareto", description="pareto: a trial goes on if it ranks in the top 1/reduction_factor of its rung by "
                              "non-dominated sorting over (val accuracy max, trainable % min), the cheapest first "
                              "inside a front (docs/resume.md); accuracy: Ray Tune's ASHA on validation accuracy alone")
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1, description="ASHA keeps about 1/reduction_factor at each rung")


class ConfirmSettings(Strict):
    seeds: SeedCount = Field(
        0, description="after the search, re-train the configurations that matter this many times, each "
        "with a new seed (weight init of new parameters, data order, dropout; never the search's), and summarize from "
        "those runs alone: means, t-intervals, the front on the means, PEFT vs full verdicts; 0: off (the front is "
        "unconfirmed). 2 gives an interval, 3 or more a useful one. `auto`: start with 3, then add 2 at a time to the "
        "configurations whose verdict is still undecided, up to `max_seeds` (docs/confirm.md)")
    max_seeds: int = Field(10, ge=AUTO_FIRST_SEEDS, le=100,
                           description="with `seeds: auto`: the most seeds any configuration gets")
    best_per_method: bool = Field(
        False, description="confirm the best trial of every method too, not only the front and the best full "
                           "fine-tune (every method then gets a verdict against full fine-tuning)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of the intervals and verdicts")
    margin: float = Field(0.01, ge=0, lt=1, description="accuracy: a gap to full fine-tuning shown to lie within "
                                                        "+-margin is `equivalent` (two one-sided tests); 0: never")
    failed_runs: Literal["withhold", "floor"] = Field(
        "withhold", description="a confirm run that failed in training (a NaN loss, out of memory): `withhold` gives "
                                "its configuration no verdict; `floor` scores the run at the floor's accuracy")

    @property
    def auto(self) -> bool:
        return self.seeds == "auto"

    @property
    def first_seeds(self) -> int:
        """Seeds of the first confirm pass."""
        return AUTO_FIRST_SEEDS if self.auto else int(self.seeds)

    @property
    def looks(self) -> int:
        """Passes after which verdicts are taken: alpha is split over all of them, as planned (Bonferroni)."""
        if not self.auto:
            return 1
        return 1 + -(-(self.max_seeds - AUTO_FIRST_SEEDS) // AUTO_BATCH_SEEDS)

    def rules(self):
        from peftsweep.search.results.confirmation import VerdictRules

        return VerdictRules(confidence=self.confidence, margin=self.margin, failed_runs=self.failed_runs,
                            looks=self.looks)


class Tracking(Strict):
    uri: str | None = Field(None, description="any MLflow tracking URI (a server on a cluster); default: SQLite at "
                                              "`<output_dir>/mlflow.db`, no server needed. A server that does not "
                                              "answer is reported before anything runs")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")


class SweepConfig(Strict):
    name: str = Field(description="the sweep's name: MLflow experiment and output folder by default")
    model: str = Field(description="local model directory, bundled model name (`all-MiniLM-L6-v2`) or hub id "
                                   "(needs network)")
    trust_remote_code: bool = Field(False, description="allow model code from the hub (off: safer)")
    task: TaskName = Field(
        TaskName.CLASSIFICATION, description="classification: a new head predicts the label (accuracy, macro-F1); "
                                      "generation: a causal LM generates the answer to a prompt (exact-match accuracy "
                                      "of greedy generations), from `data.prompt_column`/`data.target_column` or "
                                      "`data.template` over a classification data set")
    data: DataSpec
    methods: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"all": {}}, json_schema_extra={"shown_default": "all"},
        description="`all`, a list, or a mapping `method: {param: override}`; an override is `[low, high]` for "
                    "numbers, a list of choices, or one fixed value, e.g. `lora: {r: [4, 32], alpha_multiple: [1, 2], "
                    "dropout: 0.0}` (`peftsweep methods` lists every method's parameters)")
    train: TrainSettings = TrainSettings()
    generation: GenerationSettings = Field(GenerationSettings(), description="task: generation only: how answers are "
                                                                             "generated and compared")
    forgetting: ForgettingSettings | None = Field(
        None, description="task: generation: measure each trial's forgetting, the change of its mean per-token loss on "
                          "a general text it is not trained on (docs/generation.md); `forgetting` can then be a cost "
                          "of `objectives:` and a budget of `constraints:`")
    evaluate: EvaluateSettings = EvaluateSettings()
    metric: str | None = Field(
        None, description="the quality searched, put on the front and confirmed: classification `accuracy`, "
                          "`macro_f1` or `mcc`; generation `exact_match` (= `accuracy`: the share answered right, by "
                          "generation.scoring). Default: accuracy. It is the first objective (objectives then default "
                          "to [metric, trainable_pct]); every trial logs the task kind's other qualities too, and the "
                          "floor is measured in each (`peftsweep summary --metric` re-summarizes on another)")
    objectives: list[str] = Field(
        default_factory=lambda: ["accuracy", TRAINABLE_PCT], json_schema_extra={"shown_default": "[accuracy, trainable_pct]"},
        description="what the front is over: the quality first (accuracy), then one to three costs to minimize from "
                    "trainable_pct, peak_memory_mb, train_seconds, worker_seconds, checkpoint_mb, forgetting (with "
                    "`forgetting:`) (docs/metrics.md); "
                    "the searcher, the Pareto scheduler, the front, its hypervolume and the dashboard use them all")
    constraints: dict[str, float] = Field(
        default_factory=dict, description="budgets, e.g. `{peak_memory_mb: 2000, train_seconds: 600}`, from the same "
        "costs: a trial over one is infeasible (never on the front, tagged in MLflow, learned by the searcher); a "
        "trial whose memory the plan shows over `peak_memory_mb` before it runs is not run")
    search: SearchSettings = SearchSettings()
    early_stopping: EarlyStopping = EarlyStopping()
    confirm: ConfirmSettings = ConfirmSettings()
    resources: SweepResources = SweepResources()
    tracking: Tracking = Tracking()
    delete_dominated_checkpoints: bool = Field(
        False, description="when the sweep has finished, delete the checkpoints (Ray's and MLflow's copies) of every "
                           "completed trial not on the Pareto front and of every early-stopped trial (failed trials "
                           "keep theirs)")
    output_dir: str | None = Field(None, description="where MLflow's default store, checkpoints and summaries go; "
                                                     "default runs/<name>, relative to where the command runs")
    storage: str | None = Field(
        None, description="where Ray keeps the sweep's state and every trial's checkpoints; default output_dir. On a "
                          "cluster every node must reach it: a shared mount (same path on every node) or an object "
                          "store URI (s3://bucket/prefix, gs://...)")

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

    @field_validator("objectives")
    @classmethod
    def _quality_then_costs(cls, value: list[str]) -> list[str]:
        from peftsweep.search.results.objectives import COSTS, MAX_COSTS, QUALITIES

        problems = []
        if not value or value[0] not in QUALITIES:
            problems.append(f"the first is the quality: {' or '.join(QUALITIES)}")
        costs = value[1:]
        if not 1 <= len(costs) <= MAX_COSTS:
            problems.append(f"then 1 to {MAX_COSTS} costs")
        if unknown := [c for c in costs if c not in COSTS]:
            problems.append(f"unknown cost {', '.join(map(str, dict.fromkeys(unknown)))}: choose from {', '.join(COSTS)}")
        if len(set(costs)) != len(costs):
            problems.append("a cost named twice")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("constraints")
    @classmethod
    def _budgets_of_costs(cls, value: dict[str, float]) -> dict[str, float]:
        from peftsweep.search.results.objectives import COSTS, SIGNED_COSTS

        problems = [f"{key}: not a cost (choose from {', '.join(COSTS)})" for key in value if key not in COSTS]
        problems += [f"{key}: a budget above 0 (got {limit!r})" for key, limit in value.items()
                     if key in COSTS and key not in SIGNED_COSTS and not limit > 0]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="before")
    @classmethod
    def _objectives_start_with_the_metric(cls, data: Any) -> Any:
        """`metric:` names the quality: objectives left out are [metric, trainable_pct] (written, they must agree:
        search.plan checks it, with the task kind's qualities)."""
        from peftsweep.search.results.objectives import QUALITIES

        if isinstance(data, dict) and data.get("metric") in QUALITIES and "objectives" not in data:
            data = {**data, "objectives": [data["metric"], TRAINABLE_PCT]}
        return data

    @field_validator("metric")
    @classmethod
    def _a_quality(cls, value: str | None) -> str | None:
        from peftsweep.search.results.objectives import QUALITIES

        if value is not None and value not in QUALITIES:
            raise ValueError(f"not a quality (choose from {', '.join(QUALITIES)})")
        return value

    @property
    def objective_set(self):
        """The objectives and budgets, typed (search.results.objectives.Objectives)."""
        from peftsweep.search.results.objectives import Objectives

        return Objectives.from_config(self.objectives, self.constraints)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        """The name is an MLflow experiment and the folder runs/<name>: a plain name, never a path."""
        if not value.strip():
            raise ValueError("must not be empty")
        if any(c in value for c in "/\\") or value in (".", "..") or value.startswith("."):
            raise ValueError("a plain name, not a path (no / or \\, not starting with .): it names the MLflow "
                             "experiment and the folder runs/<name>; put paths in output_dir")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("control characters (newlines, tabs, ...) are not allowed")
        if len(value) > 200:
            raise ValueError(f"at most 200 characters (got {len(value)})")
        return value

    @field_validator("output_dir")
    @classmethod
    def _output_dir_is_a_folder(cls, value: str | None) -> str | None:
        if value is not None and (problem := folder_problem(Path(value).expanduser())):
            raise ValueError(problem)
        return value

    @field_validator("storage")
    @classmethod
    def _storage_scheme(cls, value: str | None) -> str | None:
        scheme = value.split("://", 1)[0] if value and "://" in value else None
        if scheme is not None and scheme not in STORAGE_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r}: use a path, or one of "
                             f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}")
        local = value if scheme is None else value[len("file://"):] if scheme == "file" else None
        if local and (problem := folder_problem(Path(local).expanduser())):
            raise ValueError(problem)
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
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
                        f"a sweep config is a YAML file") from None
    try:
        raw = yaml.safe_load(text)  # safe: YAML tags cannot construct Python objects
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys (name:, model:, data:, ...)")
    return raw


# Keys of earlier versions: named with their replacement instead of a bare "unknown key".
RENAMED_KEYS = {"search.start_with_defaults": "renamed: search.start_points (true was defaults, false none; "
                                              "the default is now smallest)",
                "data.task": "renamed: data.preset (the top-level `task:` now says classification or generation)"}


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) a folder: it is something else, or a file stands where a parent would be."""
    if path.exists():
        return None if path.is_dir() else f"{path} exists and is not a folder"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, so {path} cannot be made a folder"
    return None


def describe_errors(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = RENAMED_KEYS.get(key, "unknown key") if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")  # pydantic's words for a validator's ValueError
        shown = repr(error["input"])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        got = f" (got {shown})" if error["type"] not in ("missing", "extra_forbidden") else ""
        problems.append(f"{key}: {message}{got}")
    return problems


def load_sweep_config(path: str | Path | None, overrides: dict[str, Any] | None = None,
                      default: dict[str, Any] | None = None) -> SweepConfig:
    """The config in the YAML file at `path` (or the mapping `default` when there is no path), with `overrides`
    (`--set key=value`) applied, validated."""
    raw = apply_overrides(read_yaml(Path(path)) if path is not None else dict(default or {}), overrides or {})
    if path is not None:
        raw.setdefault("name", Path(path).stem)
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe_errors(exc), f"{path or 'the default config'}: invalid sweep config") from None
