import torch

from peftsweep.trainers.metrics import accuracy, confusion, macro_f1


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
