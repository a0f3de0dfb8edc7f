"""QLoRA with bitsandbytes installed (without it: tests/search/test_preflight.py, which never skips)."""

import pytest
import torch

from peftsweep.trainers.model import build_model
from tests.tiny import CLASSIFY

bnb = pytest.importorskip("bitsandbytes")


def test_qlora_quantizes_every_body_linear_to_4_bit(tiny_model, tiny_data):
    model, counts, _ = build_model(tiny_model, "qlora", {"r": 4, "alpha_multiple": 2, "dropout": 0.0, "targets": "attention", "lr": 1e-3},
                                   tiny_data.label_names, task=CLASSIFY)
    four_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    linears = [n for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in n and "classifier" not in n]
    # 6 per layer (q, k, v, attention output, FFN in, FFN out) x 2 layers + the pooler
    assert len(four_bit) == 13
    assert set(four_bit) <= set(linears) | {n.rsplit(".base_layer", 1)[0] for n in linears}
    weight = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)).weight
    assert weight.dtype == torch.uint8 and weight.numel() * 2 == weight.quant_state.shape.numel()
    assert counts.trainable_params == 2 * 2 * 4 * (32 + 32) + (32 * 3 + 3)  # LoRA on q, v + the head
