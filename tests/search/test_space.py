import optuna
import pytest

from peftsweep.search.plan import override_param
from peftsweep.search.orchestration.space import define_space, grid, start_points
from peftsweep.search.points import flat, unflat
from peftsweep.spaces import REGISTRY, get_method


def test_flat_round_trip():
    assert unflat(flat("lora", {"r": 8, "lr": 0.01})) == ("lora", {"r": 8, "lr": 0.01})
    assert unflat({"point": flat("ia3", {"lr": 0.1})}) == ("ia3", {"lr": 0.1})  # a grid search wraps each point


@pytest.mark.parametrize("kind", ["smallest", "defaults"])
def test_start_points_are_replayed_exactly_by_the_define_by_run_space(kind):
    methods = dict(REGISTRY)
    study = optuna.create_study(directions=["maximize", "minimize"])
    starts = start_points(methods, kind)
    assert [unflat(p)[0] for p in starts] == list(methods)  # one per method
    for point in starts:
        study.enqueue_trial(point)
    for point in starts:
        trial = study.ask()
        define_space(trial, methods)
        assert trial.params == point
        study.tell(trial, [0.5, 1.0])


@pytest.mark.parametrize("kind", ["smallest", "defaults"])
def test_start_points_respect_narrowed_ranges(kind):
    lora = get_method("lora")
    narrowed = lora.with_params({"r": override_param(lora.params["r"], [16, 32], "x")[0]})
    (point,) = start_points({"lora": narrowed}, kind)
    assert point["lora.r"] == 16


@pytest.mark.parametrize("name", list(REGISTRY))
def test_smallest_start_point_takes_sizes_low_and_everything_else_default(name):
    spec = REGISTRY[name]
    (smallest,) = start_points({name: spec}, "smallest")
    (defaults,) = start_points({name: spec}, "defaults")
    for key, value in unflat(smallest)[1].items():
        param = spec.params[key]
        numeric_size = getattr(param, "size", False) and hasattr(param, "low")  # a size choice keeps its default
        assert value == (param.low if numeric_size else unflat(defaults)[1][key]), key


def test_no_start_points():
    assert start_points(dict(REGISTRY), "none") == []


def test_grid_is_conditional_and_complete():
    prefix = get_method("prefix")
    points = grid({"prefix": prefix}, 2)
    without = [p for p in points if not p["prefix.prefix_projection"]]
    with_mlp = [p for p in points if p["prefix.prefix_projection"]]
    # 2 token counts x 2 learning rates, and the MLP size only where the projection is on
    assert len(without) == 4 and all("prefix.encoder_hidden_size" not in p for p in without)
    assert len(with_mlp) == 8 and {p["prefix.encoder_hidden_size"] for p in with_mlp} == {32, 512}
    for p in points:
        assert prefix.check(unflat(p)[1]) == []


def test_override_shapes():
    r = get_method("lora").params["r"]
    assert override_param(r, 8, "k")[0].low == 8 == override_param(r, 8, "k")[0].high
    choice = get_method("lora").params["alpha_multiple"]
    assert override_param(choice, [1, 2], "k")[0].choices == (1, 2)
