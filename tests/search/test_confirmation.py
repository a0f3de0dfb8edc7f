"""The confirm stage's summary, from records alone: which configurations are confirmed, their means and intervals,
the front on the means, PEFT against full fine-tuning, and the selection bias."""

from __future__ import annotations

import math

import pytest

from peftsweep.search.results.confirmation import (BEST_FULL, BEST_OF_METHOD, FRONT, UNCONFIRMED, VerdictRules, confirm,
                                           confirm_seeds, format_confirmation, select_configurations)
from peftsweep.search.results.records import Floor, TrialRecord
from peftsweep.search.results.summary import format_table, summarize
from peftsweep.search.tracking.runs import tag_front

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
    assert by_id["i"].verdict == "undecided: cannot tell at 95%"  # +-0.01 around 0: neither a gap nor within 1 pt
    assert by_id["f"].gap_test is None and by_id["f"].verdict is None
    assert by_id["l"].gap_test.difference.mean == pytest.approx(-0.0533333, abs=1e-6)
    # Selection bias: search minus confirmed mean, per configuration and on average.
    assert by_id["p"].selection_bias.mean == pytest.approx(0.08)
    assert by_id["l"].selection_bias.mean == pytest.approx(0.03)
    assert conf.selection_bias == pytest.approx((0.08 + 0.01 + 0.03 + 0.03) / 4)
    assert [c.method for c in conf.by_method] == ["full", "ia3", "lora", "prompt"]


def test_only_completed_confirm_runs_count_and_the_search_run_never_does():
    failed = repeats(LORA, [0.99, 0.99, 0.99], [0.99, 0.99, 0.99], status="failed")[:1]
    running = [TrialRecord("x", "y", "lora", "interrupted", {}, stage="confirm", config_id="l", seed=4000)]
    conf = confirm(SEARCH, REPEATS + failed + running, {"full"})
    lora = conf.config("l")
    assert lora.val.mean == pytest.approx(0.84) and lora.failed == 1 and conf.unfinished == 1
    assert lora.search_val_score == 0.87  # kept beside the mean, not in it
    assert lora.failures == "failed 1 of 4" and lora.verdict.startswith("withheld")


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
    wide, narrow = (summarize(SEARCH + REPEATS, references={"full"}, rules=VerdictRules(confidence=c)).confirmation
                    for c in (0.95, 0.8))
    assert narrow.confidence == 0.8
    for a, b in zip(wide.configs, narrow.configs):
        assert a.val.low < b.val.low <= b.val.mean <= b.val.high < a.val.high
    assert narrow.config("i").verdict == "undecided: cannot tell at 80%"
    assert "mean [80% t-interval]" in "\n".join(format_confirmation(narrow))


def test_the_console_and_the_dashboard_write_a_mean_and_its_interval_alike():
    from peftsweep.dashboards.report import interval
    from peftsweep.search.results.confirmation import format_interval
    from peftsweep.search.results.statistics import mean_interval

    two, one = mean_interval([0.80, 0.82], bounds=(0.0, 1.0)), mean_interval([0.7])
    assert format_interval(two).startswith("0.810 [") and format_interval(two).endswith("]")
    assert format_interval(one) == "0.700 (1 run: no interval)" and format_interval(None) == "n/a"
    assert format_interval(mean_interval([0.01, 0.03]), signed=True).startswith("+0.020 [")
    for i in (two, one, None):  # the dashboard's cell holds the console's text
        assert interval(i) == f"<td>{format_interval(i)}</td>"


def failed_in_training(config: TrialRecord, seed: int, reason: str = "NonFiniteLossError: loss is nan") -> TrialRecord:
    return TrialRecord(f"run-{config.trial_id}-{seed}-x", f"c{config.trial_id}{seed}x", config.method, "failed",
                       {"seed": str(seed), "selected_as": FRONT}, trainable_pct=config.trainable_pct, stage="confirm",
                       config_id=config.trial_id, seed=seed, failure=reason)


def test_a_failed_confirm_run_shows_everywhere_and_withholds_the_verdict(tmp_path):
    import csv
    import json

    from peftsweep.dashboards.report import confirmed_table
    from peftsweep.search.results.summary import write_files

    # prompt tuning's third seed diverged: it ran 3, failed 1 (its mean is over the 2 that finished)
    records = SEARCH + [r for r in REPEATS if not (r.config_id == "p" and r.seed == SEEDS[2])]
    records.append(failed_in_training(PROMPT, SEEDS[2]))
    summary = summarize(records, references={"full"})
    prompt = summary.confirmation.config("p")
    assert prompt.failures == "failed 1 of 3" and prompt.val.n == 2
    assert prompt.verdict == "withheld: its runs failed 1 of 3 in training"
    assert summary.confirmation.config("l").verdict == "worse"  # the others keep theirs
    table = format_table(summary)
    assert "failed 1 of 3" in table and "withheld: its runs failed 1 of 3 in training" in table
    write_files(summary, tmp_path)
    rows = {r["config_id"]: r for r in csv.DictReader((tmp_path / "confirmed.csv").open())}
    assert rows["p"]["failures"] == "failed 1 of 3" and rows["p"]["verdict"].startswith("withheld")
    assert rows["i"]["failures"] == "failed 0 of 3"
    saved = json.loads((tmp_path / "summary.json").read_text())["confirmed"]
    assert {c["config_id"]: c["failures"] for c in saved["configs"]}["p"] == "failed 1 of 3"
    assert saved["failed"] == 1
    assert "failed 1 of 3" in confirmed_table(summary.confirmation)


def test_a_failed_full_fine_tune_withholds_every_verdict_and_floor_scoring_gives_them_back():
    records = SEARCH + [r for r in REPEATS if not (r.config_id == "f" and r.seed == SEEDS[0])]
    records.append(failed_in_training(FULL, SEEDS[0], "OutOfMemoryError: CUDA out of memory"))
    withheld = summarize(records, references={"full"}).confirmation
    assert all(c.verdict == "withheld: the full fine-tune's runs failed 1 of 3 in training" for c in withheld.compared)
    floor = Floor("majority class", 0.30, 0.25)
    scored = summarize(records, references={"full"}, floor=floor,
                       rules=VerdictRules(failed_runs="floor")).confirmation
    full = scored.config("f")
    assert full.test.mean == pytest.approx((0.25 + 0.84 + 0.86) / 3)  # the failed run at the floor's test accuracy
    # a verdict again (the full fine-tune's floor-level seed makes prompt tuning's gap too uncertain to call)
    assert scored.config("p").verdict == "undecided: cannot tell at 95%"
    assert "count at the floor" in "\n".join(format_confirmation(scored))


def test_a_run_lost_to_the_infrastructure_is_not_the_configurations_failure():
    records = SEARCH + [r for r in REPEATS if not (r.config_id == "l" and r.seed == SEEDS[2])]
    records.append(failed_in_training(LORA, SEEDS[2], "rank 0: ActorDiedError: The actor died unexpectedly"))
    lora = summarize(records, references={"full"}).confirmation.config("l")
    assert lora.failed == 1 and lora.failed_training == 0 and lora.failures == "failed 0 of 3, 1 lost"
    assert not lora.verdict.startswith("withheld")


def test_verdicts_are_holm_adjusted_over_the_comparisons_printed():
    from peftsweep.search.results.statistics import holm_adjust

    conf = confirm(SEARCH, REPEATS, {"full"})
    assert conf.comparisons == 3 and [c.config_id for c in conf.compared] == ["i", "l", "p"]
    raw = [c.gap_test.p_value for c in conf.compared]
    assert [c.gap_test.p_adjusted for c in conf.compared] == pytest.approx(holm_adjust(raw))
    lines = "\n".join(format_confirmation(conf))
    assert "Holm-adjusted over 3 comparisons" in lines and " 0.000 " not in lines


def test_the_reference_and_each_methods_configuration_are_chosen_on_the_search_runs():
    """Two LoRA configurations: the one the search ranked first is compared, even though the other has the higher
    confirmed mean (choosing on the means the verdict is judged on would make its gap optimistic)."""
    lucky = search_run("l2", "lora", 0.80, 0.4)  # lower in the search, higher when confirmed
    records = SEARCH + [lucky] + REPEATS + repeats(lucky, [0.88, 0.89, 0.90], [0.88, 0.89, 0.90])
    conf = summarize(records, references={"full"}).confirmation
    assert {c.method: c.config_id for c in conf.by_method}["lora"] == "l"
    assert conf.reference == "f"
    bias = conf.config("l2").selection_bias
    assert bias.mean == pytest.approx(-0.09) and bias.low < bias.mean < bias.high  # one run minus a mean: SE s*sqrt(1+1/n)


def test_auto_seeds_look_again_at_the_undecided_and_their_reference_only():
    from peftsweep.search.orchestration.confirm_stage import next_look, plan_work

    summary = summarize(SEARCH + REPEATS, references={"full"})
    conf = summary.confirmation
    assert {c.config_id for c in conf.compared if c.undecided} == {"i"}
    assert next_look(conf, 3, 10) == (5, {"i", "f"})
    assert next_look(conf, 9, 10) == (10, {"i", "f"}) and next_look(conf, 10, 10) is None
    work = plan_work(summary, 0, 5, best_per_method=False, only={"i", "f"})
    assert {p["confirm_config"] for p in work.points} == {"i", "f"}
    assert sorted({p["confirm_seed"] for p in work.points}) == confirm_seeds(0, 5)[3:]


def test_auto_seeds_plan_their_looks_and_split_alpha_over_them():
    from peftsweep.search.config import ConfirmSettings

    auto = ConfirmSettings(seeds="auto", max_seeds=10)
    assert auto.auto and auto.first_seeds == 3 and auto.looks == 5  # 3, 5, 7, 9, 10 seeds
    assert auto.rules().looks == 5 and ConfirmSettings(seeds=4).rules().looks == 1
    assert ConfirmSettings(seeds="auto", max_seeds=3).looks == 1
    # every confirm key reaches the rules the summary applies
    assert ConfirmSettings(seeds=3, confidence=0.9, margin=0.02, failed_runs="floor").rules() == VerdictRules(
        confidence=0.9, margin=0.02, failed_runs="floor", looks=1)


def test_the_rules_a_sweep_logged_are_read_back_for_its_summary():
    """`peftsweep summary` and the dashboard summarize a finished sweep by the rules its parent run logged."""
    from types import SimpleNamespace

    from peftsweep.search.tracking.runs import logged_rules

    def client(params):
        return SimpleNamespace(get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(params=params)))

    logged = {"confirm_confidence": "0.9", "confirm_margin": "0.02", "confirm_failed_runs": "floor",
              "confirm_looks": "5"}
    assert logged_rules(client(logged), "p") == VerdictRules(0.9, 0.02, "floor", 5)
    assert logged_rules(client({}), "p") == VerdictRules()  # a sweep from before these keys existed
    assert logged_rules(client({"confirm_confidence": "x", "confirm_failed_runs": "?"}), "p") == VerdictRules()


def test_confirmed_costs_give_the_front_on_their_means_and_ratios_to_full_with_intervals():
    """Peak memory as a second cost objective: means over each configuration's confirm runs, the front over them, and
    each configuration's memory, time and size over the full fine-tune's, paired by seed."""
    from dataclasses import replace

    from peftsweep.search.results.objectives import Objectives

    memory = {"p": [300.0, 310.0, 305.0], "i": [320.0, 330.0, 325.0], "l": [500.0, 520.0, 480.0],
              "f": [1000.0, 1000.0, 1000.0]}
    runs = [replace(r, peak_memory_mb=memory[r.config_id][SEEDS.index(r.seed)], train_seconds=10.0,
                    checkpoint_mb=1.0 if r.method != "full" else 80.0) for r in REPEATS]
    objectives = Objectives(costs=("trainable_pct", "peak_memory_mb"), budgets=(("peak_memory_mb", 900.0),))
    conf = confirm(SEARCH, runs, {"full"}, objectives=objectives)
    by_id = {c.config_id: c for c in conf.configs}
    assert by_id["l"].costs["peak_memory_mb"] == pytest.approx(500.0)
    assert by_id["f"].over_budget == "peak_memory_mb 1000 > 900" and not by_id["f"].on_front
    assert conf.front == ["p", "i"]  # lora: less accurate than ia3 and costlier in both; full: over the budget
    ratio = by_id["l"].ratios_to_full["peak_memory_mb"]
    assert ratio.mean == pytest.approx((0.5 * 0.52 * 0.48) ** (1 / 3)) and ratio.low < ratio.mean < ratio.high
    assert by_id["l"].ratios_to_full["checkpoint_mb"].mean == pytest.approx(1 / 80)
    lines = "\n".join(format_confirmation(conf))
    assert "Costs over the full fine-tune's" in lines and "0.5 [" in lines

    # the dashboard's comparison table gives the same ratios with their intervals, as the console writes them
    from peftsweep.dashboards.report import comparison_table
    from peftsweep.dashboards.sweep_data import SweepData
    from peftsweep.search.results.confirmation import format_ratio

    searched = [replace(r, peak_memory_mb=memory[r.config_id][0], train_seconds=10.0, checkpoint_mb=1.0) for r in SEARCH]
    summary = summarize(searched + runs, references={"full"}, objectives=replace(objectives, budgets=()))
    assert [m.method for m in summary.by_method] == ["full", "ia3", "lora", "prompt"]
    html = comparison_table(SweepData("t", "sqlite:///x.db", "parent", summary, [], {}))
    assert "confirmed x full memory (95% CI)" in html and "confirmed x full size (95% CI)" in html
    lora = next(c for c in summary.confirmation.by_method if c.method == "lora")
    assert f"<td>{format_ratio(lora.ratios_to_full['peak_memory_mb'])}</td>" in html
