import torch

from peftsweep.trainers.metrics import accuracy, confusion, macro_f1
from tests.tiny import CLASSIFY


def test_confusion_accuracy_and_macro_f1_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    m = confusion(preds, labels, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(m) == 4 / 6
    # F1 per class: 0: 2*1/(2+1+1)=0.5; 1: 2*2/(4+1+0)=0.8; 2: 2*1/(2+0+1)=2/3
    assert abs(macro_f1(m) - (0.5 + 0.8 + 2 / 3) / 3) < 1e-12


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
