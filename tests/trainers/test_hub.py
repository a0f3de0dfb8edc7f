"""A model name that is no local directory and no bundled model: answered at once when the hub cannot be reached,
with the closest bundled name; passed on to the hub when it answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import yaml

from peftsweep.errors import UserError
from peftsweep.trainers import hub
from peftsweep.trainers.model import load_model_config, resolve_model


@pytest.fixture
def online(monkeypatch):
    """As on a machine that may use the hub (the suite's conftest sets HF_HUB_OFFLINE)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub._unreachable.cache_clear()
    yield monkeypatch
    hub._unreachable.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_typo_is_answered_at_once_when_the_hub_refuses(online, tmp_path):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    import transformers.models.auto.configuration_auto  # noqa: F401 -- timed: the answer, not the import

    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        load_model_config("all-MiniLM-L6-v3")
    assert time.monotonic() - start < 3
    message = str(caught.value)
    assert "'all-MiniLM-L6-v3' is not a local directory, not a bundled model (" in message
    assert "SmolLM2-135M-Instruct" in message and "the Hugging Face hub is not reachable" in message
    assert "did you mean 'all-MiniLM-L6-v2'?" in message


def test_a_hub_that_never_answers_costs_at_most_the_reach_timeout(online):
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(UserError, match="hub is not reachable"):
            resolve_model("someone/some-model")
        assert time.monotonic() - start < 3


def test_offline_is_honoured_and_the_command_line_says_it_without_a_traceback(tmp_path, tiny_csv):
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"name": "typo", "model": "SmolLM2-135M-Instruc",
                                      "data": {"train_file": tiny_csv}, "methods": ["lora"]}))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "peftsweep.cli", "validate", str(config)], capture_output=True,
                          text=True, timeout=120)  # conftest's HF_HUB_OFFLINE=1 is inherited
    assert proc.returncode == 2, proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr and "did you mean 'SmolLM2-135M-Instruct'?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "Retrying" not in proc.stderr
    print(f"validate answered in {time.monotonic() - start:.1f} s")


def test_a_hub_id_goes_to_the_hub_when_it_answers(online):
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert resolve_model("someone/some-model") == "someone/some-model"
        assert hub.hub_problem() is None
    finally:
        server.shutdown()


def test_a_cached_hub_model_is_used_from_the_cache_without_the_hub(online, tmp_path, tiny_model):
    import shutil

    online.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "models--someone--cached" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (tmp_path / "models--someone--cached" / "refs").mkdir()
    (tmp_path / "models--someone--cached" / "refs" / "main").write_text("0" * 40)
    online.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert resolve_model("someone/cached") == str(snapshot)
