import torch

import pytest

from peftsweep.trainers.metrics import accuracy, confusion, macro_f1, mcc
from tests.tiny import CLASSIFY


def test_confusion_accuracy_and_macro_f1_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    m = confusion(preds, labels, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(m) == 4 / 6
    # F1 per class: 0: 2*1/(2+1+1)=0.5; 1: 2*2/(4+1+0)=0.8; 2: 2*1/(2+0+1)=2/3
    assert abs(macro_f1(m) - (0.5 + 0.8 + 2 / 3) / 3) < 1e-12


@pytest.mark.parametrize("seed, classes, skew", [(0, 2, 0.87), (1, 3, 0.5), (2, 6, 0.3), (3, 4, 0.0)])
def test_macro_f1_and_mcc_equal_scikit_learns(seed, classes, skew):
    """Unbalanced labels (`skew`: the share of the majority class) and predictions that lean to it."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    g = torch.Generator().manual_seed(seed)
    labels = torch.where(torch.rand(300, generator=g) < skew, 0, torch.randint(0, classes, (300,), generator=g))
    preds = torch.where(torch.rand(300, generator=g) < 0.6, labels, torch.randint(0, classes, (300,), generator=g))
    m = confusion(preds, labels, classes)
    assert mcc(m) == pytest.approx(matthews_corrcoef(labels, preds), abs=1e-12)
    assert macro_f1(m) == pytest.approx(f1_score(labels, preds, average="macro"), abs=1e-12)
    assert mcc(confusion(torch.zeros(10, dtype=torch.long), labels[:10], classes)) == 0.0  # one class predicted


def test_evaluate_reports_scikit_learns_scores_of_the_models_predictions(tiny_model, tiny_data):
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    from peftsweep.trainers.classification import evaluate, predict
    from peftsweep.trainers.model import build_model

    torch.manual_seed(0)
    model, _, _ = build_model(tiny_model, "lora", {"r": 4, "alpha_multiple": 2, "dropout": 0.0,
                                                   "targets": "attention", "lr": 1e-3}, tiny_data.label_names,
                              task=CLASSIFY)
    split = tiny_data.splits["validation"]
    preds, labels = predict(model, split, tiny_data.pad_token_id, 8, torch.device("cpu"))
    scores = evaluate(model, split, tiny_data.num_labels, tiny_data.pad_token_id, 8, torch.device("cpu"))
    assert scores["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert scores["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert scores["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))


def test_macro_f1_ignores_classes_absent_from_labels_and_predictions():
    m = confusion(torch.tensor([0, 1]), torch.tensor([0, 1]), 4)
    assert macro_f1(m) == 1.0


def test_eval_batch_size_sets_the_forward_passes_of_an_evaluation(tiny_model, tiny_data):
    """train.eval_batch_size (the recipe hands it to the task kind through EvalContext): examples per forward pass;
    the accuracy does not depend on it."""
    import math

    from peftsweep.trainers.model import build_model
    from peftsweep.trainers.task_kind import EvalContext
    from peftsweep.trainers.tasks import get_task

    from peftsweep.spaces import REGISTRY

    model, _, _ = build_model(tiny_model, "lora", REGISTRY["lora"].defaults(), tiny_data.label_names, task=CLASSIFY)
    calls = []
    model.register_forward_hook(lambda module, args, kwargs_or_out: calls.append(1))
    split = tiny_data.splits["validation"]
    results = {}
    for size in (3, 64):
        calls.clear()
        context = EvalContext(batch_size=size, device=torch.device("cpu"), precision="fp32")
        results[size] = get_task("classification").evaluate(model, split, tiny_data, context)
        assert len(calls) == math.ceil(len(split.labels) / size)
    assert results[3]["accuracy"] == results[64]["accuracy"]
