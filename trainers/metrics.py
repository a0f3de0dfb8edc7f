"""Classification metrics from a confusion matrix (so DDP ranks can sum their matrices exactly), and resource use."""

from __future__ import annotations

import resource
import sys

import torch


def confusion(preds: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Rows are true labels, columns are predictions."""
    index = labels.long() * num_labels + preds.long()
    return torch.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def accuracy(matrix: torch.Tensor) -> float:
    total = matrix.sum().item()
    return matrix.diag().sum().item() / total if total else 0.0


def macro_f1(matrix: torch.Tensor) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions (as scikit-learn's default set)."""
    tp = matrix.diag().double()
    fp = matrix.sum(0).double() - tp
    fn = matrix.sum(1).double() - tp
    present = (tp + fp + fn) > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    return f1[present].mean().item()


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
