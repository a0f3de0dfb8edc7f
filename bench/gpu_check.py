"""Every method on one CUDA GPU, without Ray: build (QLoRA in 4 bits), train with bf16 autocast, evaluate, reload the
checkpoint, and time training steps on a BERT-base-shaped model (random weights, random token data).

    python bench/gpu_check.py [--layers 12 --hidden 768 --steps 40 --batch 32 --seq 64]

Checks, per method: frozen weights unchanged after training, checkpoint reload gives the same logits. Prints a table
of samples/s, peak GPU memory and the share of the GPU's bf16 matmul peak (measured in the same process) that the
training steps reach, counting FLOPs as bench/roofline.py does (6 or 4 x non-embedding parameters x tokens). Needs a
GPU, torch, transformers, peft, pydantic, safetensors (bitsandbytes for QLoRA); not Ray.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roofline import non_embedding_params, train_factor, virtual_tokens  # noqa: E402
from peftsweep.spaces import REGISTRY  # noqa: E402
from peftsweep.trainers.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from peftsweep.trainers.config import TrainSettings  # noqa: E402
from peftsweep.trainers.classification import Split  # noqa: E402
from peftsweep.trainers.classification import TASK as CLASSIFY, evaluate, train_loader  # noqa: E402
from peftsweep.trainers.loop import optimizer_for, train_epoch  # noqa: E402
from peftsweep.trainers.model import build_model  # noqa: E402

LABELS = ["a", "b", "c", "d"]


def random_split(n: int, seq: int, vocab: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    labels = (ids[:, 1] % len(LABELS)).tolist()  # learnable: the first real token decides the class
    return Split(input_ids=[[2] + row.tolist() + [3] for row in ids], labels=labels)


def matmul_peak_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """bf16 matmul TFLOP/s on random data: the denominator of the share of peak."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):  # warm-up (and clocks up)
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def training_tflops(name: str, hp: dict, samples_per_s: float, seq: int, n_params: int) -> float:
    """Training FLOP/s of the timed steps, counted as bench/roofline.py counts them ([CLS] + seq + [SEP] tokens)."""
    tokens = seq + 2 + virtual_tokens(name, hp)
    return train_factor(name) * n_params * tokens * samples_per_s / 1e12


def check_method(name: str, model_dir: str, train: Split, val: Split, args) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    hp = REGISTRY[name].defaults()
    if "num_virtual_tokens" in hp:
        hp["num_virtual_tokens"] = min(hp["num_virtual_tokens"], args.seq // 2)
    model, counts, _ = build_model(model_dir, name, hp, LABELS, device=device, task=CLASSIFY)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    settings = TrainSettings(batch_size=args.batch, precision="auto")
    loader = train_loader(train, args.batch, 0, seed=0)
    optimizer, scheduler = optimizer_for(model, hp["lr"], settings, args.steps)
    train_epoch(model, loader, optimizer, scheduler, settings, device, max_steps=3)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    seen = train_epoch(model, loader, optimizer, scheduler, settings, device, max_steps=args.steps).examples
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    unchanged = all(torch.equal(frozen[n], p.detach()) for n, p in model.named_parameters() if n in frozen)
    accuracy = evaluate(model, val, len(LABELS), 0, 256, device, "auto")["accuracy"]
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(model, Path(tmp), model_name=model_dir, method=name, hparams=hp, label_names=LABELS,
                        max_length=args.seq + 2, counts=counts, epoch=1, task=CLASSIFY)
        reloaded, _ = load_checkpoint(Path(tmp), device=device)
        batch = torch.tensor(val.input_ids[:16], device=device)
        model.eval()
        with torch.no_grad():
            same = torch.allclose(model(input_ids=batch).logits.float(), reloaded(input_ids=batch).logits.float(),
                                  atol=1e-2, rtol=1e-2)
    four_bit = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    return {"method": name, "hp": hp, "trainable_pct": counts.trainable_pct, "samples_per_s": seen / seconds,
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"), "frozen_unchanged": unchanged,
            "reload_same": same, "val_acc": accuracy, "4bit_layers": four_bit}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--methods", default=",".join(REGISTRY))
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    from transformers import BertConfig, BertForSequenceClassification

    print(f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'} torch {torch.__version__}")
    config = BertConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                        intermediate_size=4 * args.hidden, num_labels=len(LABELS))
    with tempfile.TemporaryDirectory() as model_dir:
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(model_dir)
        peak = matmul_peak_tflops(torch.device(args.device), 8192 if args.device == "cuda" else 1024)
        n_params = non_embedding_params(model_dir, LABELS)
        train = random_split(args.batch * (args.steps + 3), args.seq, config.vocab_size, 0)
        val = random_split(512, args.seq, config.vocab_size, 1)
        rows, failed = [], 0
        for name in args.methods.split(","):
            try:
                rows.append(check_method(name, model_dir, train, val, args))
            except Exception as exc:  # report every method, then fail
                failed += 1
                print(f"{name}: FAILED {type(exc).__name__}: {exc}")
    print(f"bf16 matmul peak {peak:.3g} TFLOP/s; {n_params:,} non-embedding parameters; batch {args.batch}, "
          f"{args.seq} tokens")
    print(f"{'method':<9} {'trainable %':>11} {'samples/s':>10} {'TFLOP/s':>8} {'of peak':>7} {'peak MB':>8} "
          f"{'val acc':>7} {'4-bit':>5}  checks")
    for r in rows:
        ok = "ok" if r["frozen_unchanged"] and r["reload_same"] else "MISMATCH"
        failed += ok != "ok"
        achieved = training_tflops(r["method"], r["hp"], r["samples_per_s"], args.seq, n_params)
        print(f"{r['method']:<9} {r['trainable_pct']:>11.4g} {r['samples_per_s']:>10.0f} {achieved:>8.1f} "
              f"{achieved / peak:>7.1%} {r['peak_mb']:>8.0f} {r['val_acc']:>7.3f} {r['4bit_layers']:>5}  {ok}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
