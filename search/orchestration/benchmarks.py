"""After the sweep: standard benchmarks (`evaluate.lm_eval`, trainers.benchmarks) on the final model of every completed
run of the front's configurations (the confirmed front's, search and confirm runs alike, when the sweep was
confirmed) and on the base model, each in a Ray task with its method's worker resources (the base: the first
method's). A run's model is rebuilt from the checkpoint its MLflow run holds. Scores are logged to the run (the
base's to the parent run); a run that has them is not evaluated again (a resumed sweep, `peftsweep confirm`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch

from peftsweep.search.results.summary import Summary
from peftsweep.trainers.benchmarks import PREFIX, run_lm_eval
from peftsweep.trainers.config import LmEvalSettings, Resources, TrialTemplate

log = logging.getLogger(__name__)
CHECKPOINT_ARTIFACTS = "checkpoint"  # where the trial logger puts a run's method files (search.tracking.trial_logger)


def _benchmark_on_worker(tracking_uri: str, run_id: str | None, template: TrialTemplate,
                         settings: LmEvalSettings, threads: int) -> dict[str, float]:
    from peftsweep.environment import quiet_libraries
    from peftsweep.search.tracking.client import client_for
    from peftsweep.trainers.checkpoint import load_checkpoint
    from peftsweep.trainers.loop import uses_bf16
    from peftsweep.trainers.model import load_base, load_tokenizer
    from peftsweep.trainers.tasks import get_task

    quiet_libraries()
    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda") if torch.cuda.is_available() and ray.get_gpu_ids() else torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if run_id is None:
            model = load_base(template.model, [], task=get_task(template.task), device=device,
                              trust_remote_code=template.trust_remote_code)
        else:
            path = client_for(tracking_uri).download_artifacts(run_id, CHECKPOINT_ARTIFACTS, tmp)
            model, _ = load_checkpoint(Path(path), device=device, trust_remote_code=template.trust_remote_code)
    if uses_bf16(device, template.train.precision) and not getattr(model, "is_quantized", False):
        model = model.to(torch.bfloat16)  # nothing trains: every weight lean, as the zero-shot floor runs
    tokenizer = load_tokenizer(template.model, template.trust_remote_code)
    return run_lm_eval(model, tokenizer, settings, seed=template.train.seed)


def to_benchmark(summary: Summary) -> list[Any]:
    """The completed runs of the front's configurations that have no benchmark scores yet."""
    front = summary.front_configs
    return [r for r in summary.trials + summary.repeats
            if r.config_id in front and r.status == "completed" and not r.benchmarks]


def benchmark_front(client, summary: Summary, parent_run_id: str, tracking_uri: str, template: TrialTemplate,
                    settings: LmEvalSettings) -> int:
    """Evaluate what has no scores yet, log them; the number of models evaluated."""
    runs = to_benchmark(summary)
    base_done = any(key.startswith(PREFIX) for key in client.get_run(parent_run_id).data.metrics)
    jobs: list[tuple[str, Any]] = []  # (MLflow run to log to, the Ray task's result)
    first = next(iter(template.resources_by_method.values()))
    for run_id, resources in ([] if base_done else [(None, first)]) + [
            (r.run_id, template.resources_by_method.get(r.method, first)) for r in runs]:
        jobs.append((run_id or parent_run_id, _remote(resources).remote(tracking_uri, run_id, template, settings,
                                                                          int(resources.cpus_per_worker))))
    if not jobs:
        return 0
    tasks = ", ".join(settings.tasks)
    log.info(f"lm-eval ({tasks}): {len(jobs)} models ({len(runs)} runs of the front"
             + ("" if base_done else ", the base model") + ")")
    for run_id, ref in jobs:
        try:
            scores = ray.get(ref)
        except Exception as exc:  # one model's failure does not cost the others' scores, nor the summary
            log.warning(f"lm-eval on {'the base model' if run_id == parent_run_id else 'run ' + run_id} failed: "
                        f"{type(exc).__name__}: {str(exc)[:300]}")
            client.set_tag(run_id, "peftsweep.lm_eval_error", f"{type(exc).__name__}: {exc}"[:500])
            continue
        for name, value in scores.items():
            client.log_metric(run_id, name, value)
    return len(jobs)


def _remote(resources: Resources):
    return ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker,
                      max_retries=0)(_benchmark_on_worker)
