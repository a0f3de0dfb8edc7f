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


def test_weight_decay_applies_to_matrices_only_and_warmup_ratio_shapes_the_schedule():
    """train.weight_decay and train.warmup_ratio, each by its effect."""
    model = make_model()
    optimizer, scheduler = optimizer_for(model, 1.0, TrainSettings(weight_decay=0.25, warmup_ratio=0.3),
                                         total_steps=10)
    decays = sorted((g["weight_decay"], tuple(p.ndim for p in g["params"])) for g in optimizer.param_groups)
    assert decays == [(0.0, (1, 1)), (0.25, (2, 2))]  # biases undecayed, weights at the setting
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = 3  # ceil(0.3 x 10): rising for 3 steps, then falling linearly to 0
    assert rates[:warmup + 1] == sorted(rates[:warmup + 1]) and rates[warmup] == 1.0
    assert rates[warmup:] == sorted(rates[warmup:], reverse=True) and rates[-1] < 0.2
    _, flat = optimizer_for(make_model(), 1.0, TrainSettings(warmup_ratio=0.0), total_steps=10)
    assert flat.get_last_lr()[0] == 1.0  # no warm-up: the first step at the full rate


def test_max_grad_norm_clips_and_bf16_precision_autocasts():
    """train.max_grad_norm bounds each step's gradient norm; train.precision: bf16 runs the forward in bfloat16."""
    from types import SimpleNamespace

    from peftsweep.trainers.loop import autocast, train_epoch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_model()
            self.dtypes: list[torch.dtype] = []

        def forward(self, x, labels):
            out = self.inner(x)
            self.dtypes.append(out.dtype)
            return SimpleNamespace(loss=1e4 * out.float().pow(2).mean())

    def run(settings: TrainSettings) -> tuple[Wrapped, torch.Tensor]:
        model = Wrapped()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        batch = {"x": torch.randn(4, 8), "labels": torch.zeros(4)}
        train_epoch(model, iter([batch]), optimizer, scheduler, settings, torch.device("cpu"))
        step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
        return model, step

    _, clipped = run(TrainSettings(max_grad_norm=0.5))
    assert abs(clipped.norm().item() - 0.5) < 1e-3  # SGD at lr 1: the step is the clipped gradient
    _, loose = run(TrainSettings(max_grad_norm=1e9))
    assert loose.norm().item() > 10
    fp32, _ = run(TrainSettings(precision="fp32"))
    bf16, _ = run(TrainSettings(precision="bf16"))
    assert fp32.dtypes == [torch.float32] and bf16.dtypes == [torch.bfloat16]
    with autocast(torch.device("cpu"), "auto"):  # auto: bf16 on a GPU only
        assert make_model()(torch.randn(1, 8)).dtype == torch.float32
