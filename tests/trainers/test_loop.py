"""The optimizer's choice of AdamW kernel: fused on a GPU (measured on an H200: full fine-tuning steps 11 % shorter,
docs/performance.md), the default elsewhere; a fused optimizer trains like the default one."""

from __future__ import annotations

import torch

from peftsweep.trainers.config import TrainSettings
from peftsweep.trainers.loop import optimizer_for


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def train(model: torch.nn.Module, optimizer, scheduler, steps: int = 5) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 8)
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def test_adamw_is_fused_only_where_every_trainable_parameter_is_on_a_gpu_and_trains_alike():
    settings = TrainSettings()
    default_model, fused_model = make_model(), make_model()
    default, default_schedule = optimizer_for(default_model, 1e-2, settings, total_steps=10)
    assert not default.defaults["fused"]  # parameters on the CPU: PyTorch's default kernels
    fused, fused_schedule = optimizer_for(fused_model, 1e-2, settings, total_steps=10, fused=True)
    assert fused.defaults["fused"] is True
    train(default_model, default, default_schedule)
    train(fused_model, fused, fused_schedule)
    for a, b in zip(default_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(default_model.parameters(), make_model().parameters()))  # it trained
