import optuna
import pytest

from peftsweep.spaces import REGISTRY, get_method
from peftsweep.spaces.base import ModelInfo
from peftsweep.spaces.params import ChoiceParam, FloatParam, IntParam

INFO = ModelInfo(model_type="bert", num_layers=2, hidden_size=32, max_position_embeddings=64, max_length=16)


def test_int_param_limits_and_types():
    r = IntParam(2, 64, 8, "rank", log=True, min=1)
    assert r.check(8) is None
    assert "must be >= 1" in r.check(0)
    assert "integer" in r.check(2.5)
    assert "integer" in r.check(True)


def test_ranges_report_every_problem():
    lr = FloatParam(1e-4, 1e-2, 1e-3, "lr", log=True, min=1e-8)
    problems = lr.with_range(-1.0, -2.0).check_range()
    assert any("greater than high" in p for p in problems)
    assert any("low must be >=" in p for p in problems)
    assert any("log-scaled" in p for p in problems)
    assert ChoiceParam((), None, "x").check_range() == ["needs at least one choice"]


def test_check_names_unknown_missing_and_out_of_range():
    lora = get_method("lora")
    problems = lora.check({"r": 0, "alpha_multiple": 3, "lr": 1e-3, "bogus": 1})
    assert any(p.startswith("bogus: unknown hyperparameter") for p in problems)
    assert "dropout: missing" in problems
    assert any(p.startswith("r: must be >= 1") for p in problems)
    assert any(p.startswith("alpha_multiple: must be one of") for p in problems)


@pytest.mark.parametrize("method", ["prompt", "ptuning", "prefix"])
def test_virtual_tokens_must_be_shorter_than_max_length(method):
    spec = get_method(method)
    hp = spec.defaults() | {"num_virtual_tokens": 16}
    assert any("smaller than data.max_length (16)" in p for p in spec.check(hp, INFO))
    assert spec.check(spec.defaults() | {"num_virtual_tokens": 8}, INFO) == []


def test_prompt_needs_free_positions():
    info = ModelInfo("bert", 2, 32, max_position_embeddings=40, max_length=32)
    problems = get_method("prompt").check({"num_virtual_tokens": 12, "lr": 0.1}, info)
    assert any("exceeds the model's 40 positions" in p for p in problems)
    assert get_method("prefix").check({"num_virtual_tokens": 12, "prefix_projection": False, "lr": 0.1}, info) == []


def test_conditional_parameter_only_when_its_condition_holds():
    prefix = get_method("prefix")
    assert prefix.check({"num_virtual_tokens": 8, "prefix_projection": False, "lr": 0.1}) == []
    assert "encoder_hidden_size: missing" in prefix.check({"num_virtual_tokens": 8, "prefix_projection": True,
                                                           "lr": 0.1})


@pytest.mark.parametrize("name", list(REGISTRY))
def test_optuna_define_by_run_samples_valid_hyperparameters(name):
    spec = REGISTRY[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        hp = spec.suggest(trial)
        assert spec.check(hp) == [], hp
        assert all(key.startswith(f"{name}.") for key in trial.params)  # no name clash across methods
        study.tell(trial, 0.0)


def test_registry_holds_the_eight_methods():
    assert set(REGISTRY) >= {"lora", "qlora", "prefix", "prompt", "ptuning", "adapter", "ia3", "full"}


@pytest.mark.parametrize("name,best_lr", [("full", 2e-4), ("lora", 1e-2), ("qlora", 5e-3), ("ia3", 3e-2),
                                          ("prefix", 1e-1), ("prompt", 3e-1), ("ptuning", 3e-2), ("adapter", 1e-2)])
def test_learning_rate_ranges_contain_the_measured_best(name, best_lr):
    lr = REGISTRY[name].params["lr"]
    assert lr.low <= best_lr <= lr.high
