"""Every figure's data is computed once (dashboards.figure_data) and drawn by both renderers from that one object."""

from __future__ import annotations

import math

import pytest

from peftsweep.dashboards import figures, static
from peftsweep.dashboards.figure_data import accuracy_range, compute, log_range, styles
from peftsweep.dashboards.sweep_data import SweepData
from peftsweep.search.results.records import TrialRecord
from peftsweep.search.results.summary import summarize


def record(run_id, method, acc, pct, params, status="completed"):
    return TrialRecord(run_id=run_id, trial_id=run_id, method=method, status=status, params=params,
                       val_accuracy=acc, test_accuracy=acc, trainable_pct=pct, trainable_params=pct * 1e3,
                       train_seconds=5.0, peak_memory_mb=100.0)


def sweep() -> SweepData:
    records = [record("l1", "lora", 0.80, 0.5, {"r": "4", "lr": "0.01"}),
               record("l2", "lora", 0.86, 1.0, {"r": "8", "lr": "0.01"}),
               record("p", "prompt", 0.70, 0.02, {"num_virtual_tokens": "8", "lr": "0.3"}),  # alone in its panel
               record("s", "ia3", 0.40, 0.08, {"lr": "0.03"}, status="early_stopped"),
               record("f", "full", 0.85, 100.0, {"lr": "0.0002"}),
               record("x", "ptuning", math.nan, 0.05, {"num_virtual_tokens": "8", "lr": "0.03"}, status="failed")]
    summary = summarize(records, references={"full"})
    return SweepData("t", "sqlite:///x.db", "parent", summary, [r.run_id for r in records],
                     {r.run_id: [(1, 0.5), (2, r.val_accuracy)] for r in summary.front})


def test_a_single_point_panel_has_an_accuracy_axis():
    data = compute(sweep())
    prompt = next(p for p in data.panels if p.method == "prompt")
    assert prompt.key == "num_virtual_tokens" and len(prompt.markers) == 1
    low, high = prompt.y_range
    assert 0.0 <= low < 0.70 < high <= 1.05  # not the 0.5..1.5 a plotting library picks for one point
    assert prompt.x_range[0] < 8 < prompt.x_range[1] and prompt.x_range[0] > 0
    assert accuracy_range([1.0]) == (0.95, 1.025) and accuracy_range([]) == (0.0, 1.0)
    assert log_range([4.0, 4.0]) == (2.0, 8.0)


def test_the_data_holds_what_the_figures_show():
    data = compute(sweep())
    assert [s.name for s in data.planes[0].series] == ["full", "ia3", "lora", "prompt"]  # ptuning: nothing to draw
    ia3 = next(s for s in data.planes[0].series if s.name == "ia3")
    assert [m.faded for m in ia3.markers] == [True]  # stopped early: drawn faded, never on the front
    assert data.planes[0].front == [(0.02, 0.70), (0.5, 0.80), (1.0, 0.86)]
    assert data.planes[0].reference.y == 0.85 and "0.850" in data.planes[0].reference.label
    assert len(data.hypervolume) == 6 and data.hypervolume == sorted(data.hypervolume)
    failed = next(p for p in data.panels if p.method == "ptuning")
    assert failed.markers == [] and failed.y_range == (0.0, 1.0)  # its only trial failed: an empty, sane panel
    assert [c.label for c in data.curves] == ["prompt 0.02%", "lora 0.5%", "lora 1%"]


def test_the_hypervolume_curve_is_measured_from_the_floor_and_ends_at_the_headline():
    from peftsweep.search.results.records import Floor

    base = sweep()
    summary = summarize(base.trials, references={"full"}, floor=Floor("majority class", 0.75, 0.75))
    data = compute(SweepData("t", "sqlite:///x.db", "parent", summary, base.start_order, base.curves))
    assert data.hypervolume[-1] == pytest.approx(summary.hypervolume)  # the report's own headline
    # l1 (0.80) and l2 (0.86) beat the floor and add area; prompt tuning (0.70) is below it and adds none
    assert 0 < data.hypervolume[0] < data.hypervolume[1] == data.hypervolume[2]


def test_both_renderers_draw_the_same_data(tmp_path):
    data = compute(sweep())
    fig = figures.pareto(data.planes[0])
    assert [t.name for t in fig.data if t.meta == "method"] == [s.name for s in data.planes[0].series]
    panels = figures.per_method(data)
    prompt_axis = [i for i, p in enumerate(data.panels) if p.method == "prompt"][0] + 1
    y_axis = panels.layout[f"yaxis{'' if prompt_axis == 1 else prompt_axis}"]
    assert tuple(y_axis.range) == next(p.y_range for p in data.panels if p.method == "prompt")
    for path in static.write_pngs(data, tmp_path):
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    assert math.isclose(fig.layout.shapes[0].y0, 0.85)  # the best full fine-tune's line


def test_a_sweep_interrupted_before_any_trial_ended_still_draws(tmp_path):
    """Ctrl-C during the first trial: its run has a validation accuracy but no parameter count yet. Both renderers
    draw the plane (with the floor line) without a point to place on the log axis."""
    from peftsweep.search.results.records import Floor

    records = [record("i", "ia3", 0.5, math.nan, {"lr": "0.03"}, status="interrupted")]
    summary = summarize(records, references={"full"}, floor=Floor("majority class", 0.3, 0.3))
    data = compute(SweepData("t", "sqlite:///x.db", "parent", summary, ["i"], {}))
    assert data.planes[0].series == [] and data.planes[0].floor.y == 0.3 and data.planes[0].x_range == (0.1, 10.0)
    assert static.pareto_png(data, data.planes[0], tmp_path / "p.png").stat().st_size > 5_000
    figures.pareto(data.planes[0]).to_html(include_plotlyjs=False)


def confirmed_sweep() -> SweepData:
    """sweep() with its front and best full fine-tune confirmed over 3 seeds."""
    base = sweep()
    repeats = []
    for config, vals in (("p", [0.66, 0.68, 0.70]), ("l1", [0.79, 0.80, 0.81]), ("l2", [0.80, 0.81, 0.82]),
                         ("f", [0.84, 0.85, 0.86])):
        origin = next(r for r in base.trials if r.run_id == config)
        repeats += [TrialRecord(f"{config}-{seed}", f"c{config}{seed}", origin.method, "completed", {},
                                val_accuracy=v, test_accuracy=v, trainable_pct=origin.trainable_pct, stage="confirm",
                                config_id=config, seed=seed) for seed, v in zip((1000, 2000, 3000), vals)]
    summary = summarize(base.trials + repeats, references={"full"})
    return SweepData("t", "sqlite:///x.db", "parent", summary, base.start_order, base.curves)


def test_a_confirmed_sweep_draws_error_bars_and_the_front_of_the_means(tmp_path):
    from peftsweep.dashboards.report import render

    data = confirmed_sweep()
    drawn = compute(data)
    bars = {b.method: b for b in drawn.planes[0].confirmed if b.method != "lora"}
    assert len(drawn.planes[0].confirmed) == 4
    assert bars["prompt"].y == pytest.approx(0.68) and bars["prompt"].low < 0.68 < bars["prompt"].high
    # the front of the means (l2's search run had 0.86; its mean is 0.81), full's 0.85 on top
    assert drawn.planes[0].front == [(0.02, 0.68), (0.5, pytest.approx(0.80)), (1.0, pytest.approx(0.81)),
                                  (100.0, pytest.approx(0.85))]
    assert "confirmed mean 0.850" in drawn.planes[0].reference.label and "3 seeds" in drawn.planes[0].confirmed_note
    fig = figures.pareto(drawn.planes[0])
    confirmed = [t for t in fig.data if t.meta == "confirmed"]
    assert [t.name for t in confirmed] == ["prompt confirmed", "lora confirmed", "full confirmed"]
    assert list(confirmed[0].error_y.array) == [bars["prompt"].high - 0.68]
    assert static.pareto_png(drawn, drawn.planes[0], tmp_path / "p.png").stat().st_size > 10_000
    page = render(data, drawn)
    assert 'id="confirmed"' in page and "0.680 [" in page and "worse" in page  # prompt: 0.17 below full on every seed
    assert "reference" in page


def test_an_unconfirmed_sweep_says_so_on_the_dashboard():
    from peftsweep.dashboards.report import render

    data = sweep()
    drawn = compute(data)
    assert drawn.planes[0].confirmed == [] and drawn.planes[0].confirmed_note == ""
    assert "The front is unconfirmed" in render(data, drawn)


def test_hyperparameter_importance_finds_the_parameter_that_matters():
    """The dashboard's importance panel (fANOVA within a method, from MIN_TRIALS trials of it): LoRA's accuracy here
    follows its learning rate alone, so lr carries most of the importance (8 trials: not all); a method with
    fewer trials gets no panel."""
    from peftsweep.dashboards.importance import MIN_TRIALS, method_importance

    rates, ranks = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1], [16, 4, 32, 8, 4, 16, 8, 32]
    records = [record(f"l{i}", "lora", 0.4 + 0.05 * i, 0.5, {"r": str(r), "lr": str(lr), "alpha_multiple": "2",
                                                             "dropout": "0.05", "targets": "attention"})
               for i, (lr, r) in enumerate(zip(rates, ranks))]
    records += [record(f"p{i}", "prompt", 0.5 + 0.1 * i, 0.02, {"num_virtual_tokens": str(4 * (i + 1)),
                                                                  "lr": str(0.1 * (i + 1))})
                for i in range(MIN_TRIALS - 1)]
    summary = summarize(records, references={"full"})
    data = SweepData("t", "sqlite:///x.db", "parent", summary, [r.run_id for r in records], {})
    scores = method_importance(data)
    assert set(scores) == {"lora"}
    assert scores["lora"]["lr"] > 3 * scores["lora"].get("r", 0.0), scores  # 0.81 against 0.19 (fANOVA, seed 0)


def test_every_method_of_the_registry_gets_its_own_colour_and_shape_pair():
    from peftsweep.spaces import REGISTRY

    methods = sorted(REGISTRY)  # 12 today: past the palette's 10 colours
    assert len(methods) > 10
    drawn = styles(methods)
    assert len({(s.colour, s.symbol) for s in drawn.values()}) == len(methods)
    assert len({(s.colour, static.marker(s)) for s in drawn.values()}) == len(methods)
