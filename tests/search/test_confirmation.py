"""The confirm stage's summary, from records alone: which configurations are confirmed, their means and intervals,
the front on the means, PEFT against full fine-tuning, and the selection bias."""

from __future__ import annotations

import math

import pytest

from peftsweep.search.confirmation import (BEST_FULL, BEST_OF_METHOD, FRONT, UNCONFIRMED, confirm, confirm_seeds,
                                           format_confirmation, select_configurations)
from peftsweep.search.records import Floor, TrialRecord
from peftsweep.search.summary import format_table, summarize, tag_front

SEEDS = confirm_seeds(0, 3)


def search_run(trial_id: str, method: str, val: float, pct: float) -> TrialRecord:
    return TrialRecord(f"run-{trial_id}", trial_id, method, "completed", {"method": method, "lr": "0.001"},
                       val_accuracy=val, test_accuracy=val, trainable_pct=pct, trainable_params=pct * 1000,
                       config_id=trial_id)


def repeats(config: TrialRecord, vals: list[float], tests: list[float], status: str = "completed") -> list[TrialRecord]:
    return [TrialRecord(f"run-{config.trial_id}-{seed}", f"c{config.trial_id}{seed}", config.method, status,
                        {"seed": str(seed), "selected_as": FRONT}, val_accuracy=v, test_accuracy=t,
                        trainable_pct=config.trainable_pct, stage="confirm", config_id=config.trial_id, seed=seed)
            for seed, v, t in zip(SEEDS, vals, tests)]


PROMPT = search_run("p", "prompt", 0.70, 0.01)
IA3 = search_run("i", "ia3", 0.86, 0.08)
LORA = search_run("l", "lora", 0.87, 0.5)
FULL = search_run("f", "full", 0.88, 100.0)
SEARCH = [PROMPT, IA3, LORA, FULL]
REPEATS = (repeats(PROMPT, [0.60, 0.62, 0.64], [0.61, 0.60, 0.62])
           + repeats(IA3, [0.85, 0.84, 0.86], [0.85, 0.85, 0.86])  # 0.85 mean: ties full's cheaper
           + repeats(LORA, [0.84, 0.83, 0.85], [0.80, 0.79, 0.81])  # worse than full on every seed
           + repeats(FULL, [0.85, 0.86, 0.84], [0.86, 0.84, 0.86]))


def test_seeds_are_new_shared_and_extend_as_a_prefix():
    assert confirm_seeds(0, 3) == [1000, 2000, 3000]
    assert 7 not in confirm_seeds(7, 5) and confirm_seeds(7, 5)[:2] == confirm_seeds(7, 2)


def test_selection_is_the_front_and_the_best_full_then_optionally_every_method():
    best = {"prompt": PROMPT, "ia3": IA3, "lora": LORA, "full": FULL}
    chosen = select_configurations([PROMPT, IA3, LORA, FULL], best, {"full"}, best_per_method=False)
    assert [(s.config_id, s.reasons) for s in chosen] == [
        ("p", (FRONT,)), ("i", (FRONT,)), ("l", (FRONT,)), ("f", (FRONT, BEST_FULL))]
    chosen = select_configurations([PROMPT], best, {"full"}, best_per_method=False)
    assert [s.config_id for s in chosen] == ["p", "f"]  # the best full fine-tune even off the front
    chosen = select_configurations([PROMPT], best, {"full"}, best_per_method=True)
    assert {s.config_id: s.reasons for s in chosen} == {
        "p": (FRONT, BEST_OF_METHOD), "f": (BEST_FULL,), "i": (BEST_OF_METHOD,), "l": (BEST_OF_METHOD,)}


def test_means_intervals_front_on_the_means_and_verdicts():
    conf = confirm(SEARCH, REPEATS, {"full"})
    by_id = {c.config_id: c for c in conf.configs}
    assert conf.seeds == SEEDS and conf.runs == 12 and conf.unfinished == 0
    assert [c.config_id for c in conf.configs] == ["p", "i", "l", "f"]  # cheapest first
    assert by_id["i"].val.mean == pytest.approx(0.85) and by_id["i"].val.n == 3
    assert by_id["p"].test.mean == pytest.approx(0.61)
    # The means: prompt 0.62, ia3 0.85, lora 0.84, full 0.85: lora is dominated by ia3, full ties ia3 at 100x cost.
    assert conf.front == ["p", "i"]
    assert conf.reference == "f"
    assert by_id["l"].verdict == "worse"  # test 0.80/0.79/0.81 against 0.86/0.84/0.86
    assert by_id["i"].verdict == "indistinguishable at 95%"  # +-0.01 around 0
    assert by_id["f"].gap_test is None and by_id["f"].verdict is None
    assert by_id["l"].gap_test.difference.mean == pytest.approx(-0.0533333, abs=1e-6)
    # Selection bias: search minus confirmed mean, per configuration and on average.
    assert by_id["p"].selection_bias == pytest.approx(0.08) and by_id["l"].selection_bias == pytest.approx(0.03)
    assert conf.selection_bias == pytest.approx((0.08 + 0.01 + 0.03 + 0.03) / 4)
    assert [c.method for c in conf.by_method] == ["full", "ia3", "lora", "prompt"]


def test_only_completed_confirm_runs_count_and_the_search_run_never_does():
    failed = repeats(LORA, [0.99, 0.99, 0.99], [0.99, 0.99, 0.99], status="failed")[:1]
    running = [TrialRecord("x", "y", "lora", "interrupted", {}, stage="confirm", config_id="l", seed=4000)]
    conf = confirm(SEARCH, REPEATS + failed + running, {"full"})
    lora = conf.config("l")
    assert lora.val.mean == pytest.approx(0.84) and lora.failed == 1 and conf.unfinished == 1
    assert lora.search_val_accuracy == 0.87  # kept beside the mean, not in it


def test_the_floor_keeps_a_confirmed_mean_that_does_not_beat_it_off_the_front():
    conf = confirm(SEARCH, REPEATS, {"full"}, floor=Floor("majority class", 0.65, 0.6))
    assert conf.front == ["i"] and not conf.config("p").on_front


def test_no_confirm_runs_means_unconfirmed_and_the_summary_says_so():
    assert confirm(SEARCH, [], {"full"}) is None
    summary = summarize(SEARCH, references={"full"})
    assert summary.confirmation is None and UNCONFIRMED in format_table(summary)


def test_summarize_splits_the_stages_and_tags_the_confirmed_front():
    summary = summarize(SEARCH + REPEATS, references={"full"})
    assert len(summary.trials) == 4 and len(summary.repeats) == 12 and summary.counts["total"] == 4
    assert [r.trial_id for r in summary.front] == ["p", "i", "l", "f"]  # the search's own front: one run each
    table = format_table(summary)
    assert "Confirmed over 3 new seeds (1000, 2000, 3000)" in table and "worse" in table
    assert "0.850 [0.825, 0.875]" in table  # ia3's val mean with its t-interval (sd 0.01)

    class Tags:
        def __init__(self):
            self.tags = {}

        def set_tag(self, run_id, key, value):
            self.tags[run_id] = value

    client = Tags()
    tag_front(client, summary)
    on = {run for run, value in client.tags.items() if value == "true"}
    assert on == {"run-p", "run-i"} | {r.run_id for r in REPEATS if r.config_id in ("p", "i")}


def test_format_without_a_full_fine_tune_says_so():
    conf = confirm(SEARCH[:2], REPEATS[:6], {"full"})
    lines = format_confirmation(conf)
    assert any("no confirmed full fine-tune" in line for line in lines)
    assert math.isfinite(conf.hypervolume) and conf.hypervolume > 0


def test_the_confidence_setting_reaches_intervals_verdicts_and_the_printed_summary():
    wide, narrow = (summarize(SEARCH + REPEATS, references={"full"}, confidence=c).confirmation for c in (0.95, 0.8))
    assert narrow.confidence == 0.8
    for a, b in zip(wide.configs, narrow.configs):
        assert a.val.low < b.val.low <= b.val.mean <= b.val.high < a.val.high
    assert narrow.config("i").verdict == "indistinguishable at 80%"
    assert "mean [80% t-interval]" in "\n".join(format_confirmation(narrow))


def test_the_console_and_the_dashboard_write_a_mean_and_its_interval_alike():
    from peftsweep.dashboards.report import interval
    from peftsweep.search.confirmation import format_interval
    from peftsweep.search.statistics import mean_interval

    two, one = mean_interval([0.80, 0.82], bounds=(0.0, 1.0)), mean_interval([0.7])
    assert format_interval(two).startswith("0.810 [") and format_interval(two).endswith("]")
    assert format_interval(one) == "0.700 (1 run: no interval)" and format_interval(None) == "n/a"
    assert format_interval(mean_interval([0.01, 0.03]), signed=True).startswith("+0.020 [")
    for i in (two, one, None):  # the dashboard's cell holds the console's text
        assert interval(i) == f"<td>{format_interval(i)}</td>"
