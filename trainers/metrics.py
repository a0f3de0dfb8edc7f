"""Classification metrics from a confusion matrix (so DDP ranks can sum their matrices exactly), and resource use."""

from __future__ import annotations

import ctypes
import gc
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


def mcc(matrix: torch.Tensor) -> float:
    """Matthews correlation coefficient, multiclass (Gorodkin's R_K, as scikit-learn's matthews_corrcoef): 0 when
    every prediction is one class or every label is."""
    m = matrix.double()
    total, correct = m.sum(), m.diag().sum()
    true, predicted = m.sum(1), m.sum(0)
    numerator = correct * total - (true * predicted).sum()
    denominator = ((total ** 2 - (predicted ** 2).sum()) * (total ** 2 - (true ** 2).sum())).sqrt()
    return (numerator / denominator).item() if denominator > 0 else 0.0


class PeakMemory:
    """The memory a trial's tensors needed at their peak, counted from `start()` (before its model is built).

    GPU: torch's peak allocated (and reserved: `reserved_mb`) since the start. CPU: the process's peak resident memory
    (VmHWM, Linux) above what it held at the start, after freed heap was handed back to the system (glibc's
    malloc_trim), so the interpreter and its libraries are not counted, and a process that ran another trial before
    does not hide this one's tensors in memory the last one freed. Elsewhere: the process's lifetime peak, less what
    it held at the start."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline_mb = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = 0.0  # allocated memory is the trial's from here (a reused process freed its last)
            return
        gc.collect()
        _return_freed_heap()
        try:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident size (Linux 4.0+)
                f.write("5")
        except OSError:
            pass
        self.baseline_mb = _resident_mb("VmRSS") or 0.0

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _resident_mb("VmHWM")
        if peak is None:
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB on Linux
        return max(0.0, peak - self.baseline_mb)

    def reserved_mb(self) -> float | None:
        """GPU: torch's peak reserved memory; None on CPU (no caching allocator to tell apart)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_reserved(self.device) / 2**20
        return None


def _resident_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def _return_freed_heap() -> None:
    """glibc keeps freed heap memory resident for reuse; malloc_trim(0) gives it back (a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
