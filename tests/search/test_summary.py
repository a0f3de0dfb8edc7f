import math

import pytest

from peftsweep.search.results.records import TrialRecord
from peftsweep.search.results.summary import format_table, summarize
from tests.tiny import CLASSIFY


def record(run_id, method, acc, pct, status="completed", test=0.5):
    return TrialRecord(run_id=run_id, trial_id=run_id, method=method, status=status, params={"lr": "0.01"},
                       val_accuracy=acc, test_accuracy=test, trainable_pct=pct, trainable_params=pct * 1e4,
                       train_seconds=10.0, peak_memory_mb=900.0)


def test_early_stopped_and_failed_trials_are_not_front_candidates():
    records = [record("stopped", "lora", 0.99, 0.01, status="early_stopped"),
               record("failed", "ia3", math.nan, 0.01, status="failed"),
               record("a", "lora", 0.90, 0.3), record("b", "full", 0.93, 100.0)]
    summary = summarize(records)
    assert [r.run_id for r in summary.front] == ["a", "b"]
    assert summary.counts == {"completed": 2, "early_stopped": 1, "failed": 1, "interrupted": 0, "running": 0, "not_run": 0,
                              "total": 4}


def test_best_per_method_and_comparison_to_full():
    records = [record("l1", "lora", 0.88, 0.3), record("l2", "lora", 0.90, 0.6), record("f", "full", 0.92, 100.0),
               record("p", "prompt", 0.80, 0.04)]
    summary = summarize(records)
    lora = next(m for m in summary.by_method if m.method == "lora")
    assert lora.best_run_id == "l2"
    assert math.isclose(lora.accuracy_gap_to_full, -0.02) and math.isclose(lora.param_ratio_to_full, 0.006)
    assert [r.run_id for r in summary.front] == ["p", "l1", "l2", "f"]  # l1 is cheaper than l2
    table = format_table(summary)
    assert "hypervolume" in table and "prompt" in table and "-0.020" in table


def test_without_full_the_comparison_is_not_invented():
    summary = summarize([record("a", "lora", 0.9, 0.3)])
    assert summary.by_method[0].accuracy_gap_to_full is None
    assert "n/a" in format_table(summary)


def test_summary_json_is_strict_json_even_with_failed_trials(tmp_path):
    import json

    from peftsweep.search.results.summary import write_files

    summary = summarize([record("ok", "lora", 0.9, 0.3), record("failed", "ia3", math.nan, math.nan, "failed")])
    json_path, _ = write_files(summary, tmp_path)
    data = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["trials"][1]["val_accuracy"] is None


def test_summarize_leaves_its_input_alone_and_asks_for_the_reference():
    records = [record("a", "lora", 0.90, 0.3), record("b", "full", 0.93, 100.0)]
    summary = summarize(records, references={"full"})
    assert [r.on_front for r in records] == [False, False]  # the input is not changed
    assert [r.on_front for r in summary.trials] == [True, True]
    assert summary.reference_method == "full" and summary.reference.best_run_id == "b"
    # no reference method in the sweep: nothing to compare with, whatever the methods are called
    assert summarize(records, references=set()).reference is None
    assert summarize(records, references=set()).by_method[0].accuracy_gap_to_full is None


def test_the_floor_dominates_trials_that_do_not_beat_it():
    from peftsweep.search.results.records import Floor
    from peftsweep.search.results.summary import as_dict

    records = [record("tiny", "prompt", 0.30, 0.01), record("equal", "ia3", 0.40, 0.05),
               record("a", "lora", 0.90, 0.3), record("b", "full", 0.93, 100.0)]
    assert [r.run_id for r in summarize(records).front] == ["tiny", "equal", "a", "b"]
    floor = Floor("majority class", 0.40, 0.38)
    summary = summarize(records, floor=floor)
    assert [r.run_id for r in summary.front] == ["a", "b"]  # 0.30 and 0.40 do not beat 0.40 at 0 parameters
    assert summary.below_floor == 2 and summary.floor == floor
    assert as_dict(summary)["floor"] == {"kind": "majority class", "val_accuracy": 0.40, "test_accuracy": 0.38}
    assert "floor (majority class, 0 trainable parameters): val acc 0.400, test acc 0.380; 2 completed trial(s) " \
           "did not beat it" in format_table(summary)


def test_majority_floor_by_hand():
    from peftsweep.trainers.classification import Split, majority_floor
    from peftsweep.trainers.data import TokenizedData

    data = TokenizedData(splits={"train": Split([[1]] * 5, [2, 2, 2, 0, 1]),
                                 "validation": Split([[1]] * 4, [2, 0, 0, 2]),
                                 "test": Split([[1]] * 5, [1, 1, 1, 1, 2])},
                         label_names=["a", "b", "c"], pad_token_id=0, max_length=8, task=CLASSIFY.name)
    floor = majority_floor(data)
    assert floor["validation"]["accuracy"] == 0.5 and floor["test"]["accuracy"] == 0.2
    # always "c": F1 of c on validation 2*2/(2*2+2+0) = 2/3, the others 0 (a is absent from the predictions but
    # present in the labels; b in neither, so left out): macro-F1 (2/3 + 0) / 2; MCC of a constant answer 0
    assert floor["validation"]["macro_f1"] == pytest.approx(1 / 3) and floor["validation"]["mcc"] == 0.0


def test_compute_totals_by_stage_and_the_printed_line():
    import math

    runs = [TrialRecord("a", "a", "lora", "completed", {}, val_accuracy=0.8, trainable_pct=1.0, worker_seconds=100.0),
            TrialRecord("b", "b", "ia3", "failed", {}),  # never reported: nothing to count
            TrialRecord("c", "c", "lora", "completed", {}, val_accuracy=0.7, trainable_pct=1.0, worker_seconds=30.0,
                        gpu_seconds=30.0, stage="confirm", config_id="a", seed=1000)]
    summary = summarize(runs, references=set())
    assert summary.compute == {"search_worker_seconds": 100.0, "confirm_worker_seconds": 30.0,
                               "total_worker_seconds": 130.0, "total_gpu_seconds": 30.0}
    assert "compute: 130 worker-seconds (search 100, confirm 30); 30 GPU-seconds" in format_table(summary)
    assert math.isnan(runs[1].worker_seconds)


def test_budgets_keep_trials_off_the_front_but_full_fine_tuning_stays_the_reference():
    from dataclasses import replace

    from peftsweep.search.results.objectives import Objectives

    records = [replace(record("small", "lora", 0.80, 0.1), checkpoint_mb=0.5, peak_memory_mb=400.0),
               replace(record("big", "lora", 0.86, 1.0), checkpoint_mb=6.0, peak_memory_mb=450.0),
               replace(record("ia3", "ia3", 0.84, 0.05), checkpoint_mb=7.0, peak_memory_mb=380.0),
               replace(record("full", "full", 0.88, 100.0), checkpoint_mb=80.0, peak_memory_mb=1200.0)]
    objectives = Objectives(costs=("trainable_pct", "peak_memory_mb"), budgets=(("checkpoint_mb", 5.0),))
    summary = summarize(records, references={"full"}, objectives=objectives)
    assert [r.run_id for r in summary.front] == ["small"] and summary.over_budget == 3
    assert {r.run_id: r.over_budget for r in summary.trials}["big"] == "checkpoint_mb 6 > 5"
    by_method = {m.method: m for m in summary.by_method}
    assert by_method["lora"].best_run_id == "small" and not by_method["lora"].over_budget  # its best that kept them
    assert by_method["ia3"].over_budget == "checkpoint_mb 7 > 5"  # none kept them: its best, marked
    assert summary.reference_method == "full" and by_method["full"].over_budget  # compared with, whatever its budget
    assert by_method["lora"].ratios_to_full["peak_memory_mb"] == pytest.approx(400 / 1200)
    table = format_table(summary)
    assert "budgets (checkpoint_mb <= 5): 3 completed trial(s) over budget" in table
    assert "! ia3" in table and "  lora" in table and "peak MiB" in table
