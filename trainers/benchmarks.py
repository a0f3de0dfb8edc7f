"""Standard benchmarks: lm-evaluation-harness (`lm-eval`, the `peftsweep[eval]` extra) on a model built in memory.

The model is handed to lm-eval's HFLM as it is (a PEFT model with its adapter, a full fine-tune's weights): nothing is
merged or written. HFLM itself discards the logit positions a soft prompt adds in front (prompt and P-tuning):
tests/trainers/test_benchmarks.py checks every option's log-likelihood against one computed by hand, with and without
one.

Scores come back flat, as MLflow metric names: `lm_eval/<task>/<metric>` (`acc`, `acc_norm`, `exact_match`, ...) and
`lm_eval/<task>/<metric>_stderr`, with lm-eval's filter name appended when it is not `none`
(`lm_eval/gsm8k/exact_match_strict-match`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from peftsweep.metric_names import BENCHMARK_PREFIX as PREFIX
PIP_HINT = "pip install 'peftsweep[eval]'"


def installed() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def task_manager(settings):
    """lm-eval's TaskManager for these settings: the include_path's tasks alone when they are all the sweep names
    (indexing lm-eval's own ~15k task files takes seconds), else those and lm-eval's."""
    from lm_eval.tasks import TaskManager

    if settings.include_path:
        local = TaskManager(include_path=settings.include_path, include_defaults=False, verbosity="ERROR")
        if all(task in local.all_tasks for task in settings.tasks):
            return local
    return TaskManager(include_path=settings.include_path, verbosity="ERROR")


def problems(settings, key: str = "evaluate.lm_eval") -> list[str]:
    """What stops these settings from running: the extra not installed, a missing folder, an unknown task."""
    if not installed():
        return [f"{key}: needs lm-evaluation-harness: {PIP_HINT}"]
    if settings.include_path and not Path(settings.include_path).expanduser().is_dir():
        return [f"{key}.include_path: not a folder: {settings.include_path}"]
    _quiet()
    known = task_manager(settings).all_tasks
    return [f"{key}.tasks: unknown lm-eval task {task!r}" + (" (nor in include_path)" if settings.include_path else "")
            for task in settings.tasks if task not in known]


def _quiet() -> None:
    """lm-eval's notices and progress bars stay out of the sweep's console (peftsweep's own lines only)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("lm_eval", "lm-eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_lm_eval(model, tokenizer, settings, seed: int = 0) -> dict[str, float]:
    """lm-eval's scores of `model` on the settings' tasks, flat (`lm_eval/<task>/<metric>`). The model stays on its
    device, in eval mode."""
    return flat_scores(evaluate_in_memory(model, tokenizer, settings, seed)["results"])


def evaluate_in_memory(model, tokenizer, settings, seed: int = 0, log_samples: bool = False) -> dict[str, Any]:
    """lm-eval's own output (`results`, and `samples` with each request's response when `log_samples`)."""
    _quiet()
    from lm_eval import simple_evaluate

    model.eval()
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size,
              add_bos_token=settings.add_bos_token)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars (tqdm writes to stderr), not the sweep's
        return simple_evaluate(model=lm, tasks=list(settings.tasks), task_manager=task_manager(settings),
                               num_fewshot=settings.num_fewshot, limit=settings.limit, log_samples=log_samples,
                               random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                               fewshot_random_seed=seed)


def flat_scores(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's `results` ({task: {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}) as metric names."""
    out = {}
    for task, values in results.items():
        for key, value in values.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # alias, sample counts, names
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name in ("", "none") else f"{metric}_{filter_name}"
            if math.isfinite(float(value)):
                out[f"{PREFIX}{task}/{name}"] = float(value)
    return out
