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


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak anew: a process that runs one trial after another (trainers.session.InProcessSession)
    reports each trial's own peak. On Linux the process's peak resident memory is reset through /proc (since 4.0);
    elsewhere it stays the process's lifetime peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of this process on CPU (since the last
    `reset_peak_memory`, where the system allows it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
