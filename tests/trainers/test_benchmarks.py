"""Standard benchmarks (trainers.benchmarks): lm-evaluation-harness on a model built in memory, on a local multiple-choice
task, reads every option's log-likelihood as computed here one sequence at a time (also with a soft prompt, whose extra
logit positions HFLM drops), and ranks them. Needs the `peftsweep[eval]` extra (.ci/run installs it)."""

from __future__ import annotations

import pytest
import torch

from peftsweep.trainers.benchmarks import evaluate_in_memory, flat_scores, installed, problems, run_lm_eval
from peftsweep.trainers.config import LmEvalSettings
from peftsweep.trainers.model import build_model, load_tokenizer
from tests.tiny import GENERATE, LM_EVAL_TASK as TASK, write_lm_eval_task as write_local_task

pytestmark = pytest.mark.skipif(not installed(), reason="lm-eval is not installed: pip install 'peftsweep[eval]' "
                                                        "(.ci/run installs it)")


def by_hand(model, tokenizer, row: dict) -> list[float]:
    """Each option's summed log-probability after the prompt, one unpadded sequence at a time."""
    prompt = tokenizer(row["text"] + " type:", add_special_tokens=False)["input_ids"]
    scores = []
    for option in row["choices"]:
        ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + ids])).logits[0]
        logits = logits[len(logits) - len(prompt + ids):]  # a soft prompt's positions come first
        logp = torch.log_softmax(logits.double(), dim=-1)
        scores.append(sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ids)))
    return scores


def accuracy(rows: list[dict], scores: list[list[float]], per_byte: bool = False) -> float:
    """The share of rows whose best option is the answer (per byte of " option" for acc_norm, as lm-eval divides)."""
    right = 0
    for row, row_scores in zip(rows, scores):
        values = [s / len((" " + o).encode()) if per_byte else s for s, o in zip(row_scores, row["choices"])]
        right += values.index(max(values)) == row["answer"]
    return right / len(rows)


@pytest.mark.parametrize("method,hparams", [("full", {"lr": 1e-3}), ("prompt", {"num_virtual_tokens": 4})])
def test_lm_eval_on_a_local_task_equals_the_ranking_by_hand(tiny_causal, tmp_path, method, hparams):
    rows = write_local_task(tmp_path / "tasks")
    # the toy tokenizer is BERT's: its special tokens would wrap every text ([CLS] ... [SEP])
    settings = LmEvalSettings(tasks=[TASK], include_path=str(tmp_path / "tasks"), batch_size=7, add_bos_token=False)
    assert problems(settings) == []
    torch.manual_seed(1)
    model, _, _ = build_model(tiny_causal, method, hparams, [], task=GENERATE)
    tokenizer = load_tokenizer(tiny_causal)
    out = evaluate_in_memory(model, tokenizer, settings, log_samples=True)
    # lm-eval's log-likelihood of every option (batched, padded) is the one computed by hand
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    theirs = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    mine = [by_hand(model.eval(), tokenizer, row) for row in rows]
    assert sum(theirs, []) == pytest.approx(sum(mine, []), abs=1e-4)
    # and its scores are the rankings of those (the flat names the runs log)
    scores = flat_scores(out["results"])
    assert scores[f"lm_eval/{TASK}/acc"] == pytest.approx(accuracy(rows, theirs))
    assert scores[f"lm_eval/{TASK}/acc_norm"] == pytest.approx(accuracy(rows, theirs, per_byte=True))
    assert scores[f"lm_eval/{TASK}/acc_stderr"] > 0
    limited = run_lm_eval(model, tokenizer, settings.model_copy(update={"limit": 10}))
    assert limited[f"lm_eval/{TASK}/acc"] == pytest.approx(accuracy(rows[:10], theirs[:10]))


def test_unknown_tasks_and_folders_are_named(tmp_path):
    write_local_task(tmp_path / "tasks")
    assert problems(LmEvalSettings(tasks=[TASK, "no_such_task"], include_path=str(tmp_path / "tasks"))) == [
        "evaluate.lm_eval.tasks: unknown lm-eval task 'no_such_task' (nor in include_path)"]
    assert problems(LmEvalSettings(tasks=[TASK], include_path=str(tmp_path / "none"))) == [
        f"evaluate.lm_eval.include_path: not a folder: {tmp_path / 'none'}"]


def test_scores_come_back_as_metric_names():
    results = {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
                         "exact_match_stderr,flexible-extract": "N/A", "sample_len": 4},
               "arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.75}}
    assert flat_scores(results) == {"lm_eval/gsm8k/exact_match_strict-match": 0.25,
                                    "lm_eval/gsm8k/exact_match_stderr_strict-match": 0.1,
                                    "lm_eval/arc_easy/acc": 0.5, "lm_eval/arc_easy/acc_norm": 0.75}
