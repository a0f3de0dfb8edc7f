"""The zero-shot floor of a generation config under each `generation.scoring`, and how long each took: the base model
loaded once, its validation and test answers scored every way in one process.

    .venv/bin/python bench/scoring.py                          # configs/llm-demo.yaml: SmolLM2-135M on TREC-6
    .venv/bin/python bench/scoring.py --config my-sweep.yaml   # any generation config (its data, model, batch size)
    .venv/bin/python bench/scoring.py --quick                  # tiny Llama, toy data: proves the script runs

Ways: `match` (greedy generation), `choice` (the prompt's KV cache shared by the options), `choice, rows` (every
option a row with its prompt: what prompt learning methods and FSDP evaluations do), `choice, per byte`
(length-normalised). The accuracies of the two choice ways are the same by construction (tests/trainers/
test_answer_scoring.py); the bench shows their time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import tiny_assets  # also puts the repository on sys.path

WAYS = {"match": {}, "choice": {"scoring": "choice"}, "choice, rows": {"scoring": "choice", "rows": True},
        "choice, per byte": {"scoring": "choice", "length_normalized": True}}


def measure(config_path: Path, threads: int) -> dict:
    import torch

    import peftsweep.trainers.generation as generation
    from peftsweep.search.config import load_sweep_config
    from peftsweep.trainers.launch import prepare_data
    from peftsweep.trainers.loop import autocast
    from peftsweep.trainers.model import load_base, load_tokenizer
    from peftsweep.trainers.tasks import get_task

    torch.set_num_threads(threads)
    config = load_sweep_config(config_path)
    task = get_task(config.task)
    if task.name != "generation":
        raise SystemExit(f"{config_path}: task {config.task}; scoring is for task: generation")
    # every way needs options: the config's data (a template's label words, or its choices column)
    data = prepare_data(config.model, config.data, task=task, trust_remote_code=config.trust_remote_code)
    device = torch.device("cpu")
    model = load_base(config.model, [], task=task, device=device, trust_remote_code=config.trust_remote_code)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    rows = {}
    shares = generation.shares_prompt_cache
    for way, settings in WAYS.items():
        generation.shares_prompt_cache = (lambda model: False) if settings.get("rows") else shares
        start = time.perf_counter()
        scores = {name: generation.evaluate(
            model, data.splits[name], decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            pad_token_id=data.pad_token_id, eos_token_id=data.eos_token_id,
            max_new_tokens=config.generation.max_new_tokens or data.max_new_tokens,
            batch_size=config.train.eval_batch_size, device=device, match=config.generation.match,
            scoring=settings.get("scoring", "match"), length_normalized=settings.get("length_normalized", False),
            autocast=lambda: autocast(device, config.train.precision))["accuracy"]
            for name in ("validation", "test")}
        rows[way] = {"validation": scores["validation"], "test": scores["test"],
                     "seconds": time.perf_counter() - start}
        print(f"{way:<18} val {scores['validation']:.3f}  test {scores['test']:.3f}  "
              f"{rows[way]['seconds']:6.1f} s", flush=True)
    generation.shares_prompt_cache = shares
    return {"config": str(config_path), "threads": threads, "examples": len(data.splits["validation"])
            + len(data.splits["test"]), "options": len(data.label_names), "rows": rows}


def quick_config(directory: Path) -> Path:
    import yaml

    from tests.tiny import ANSWER_TEMPLATE, make_causal_dir

    model = make_causal_dir(directory / "tiny-llama")
    _, data = tiny_assets(directory, n=120)  # its toy rows (the tiny BERT is not used)
    config = {"name": "scoring-quick", "model": str(model), "task": "generation",
              "data": {"train_file": data["train_file"], "template": ANSWER_TEMPLATE, "max_length": 24},
              "train": {"eval_batch_size": 8}}  # methods: all (the bench trains none)
    path = directory / "scoring-quick.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/llm-demo.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(quick_config(Path(tmp)) if args.quick else args.config, args.threads)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
