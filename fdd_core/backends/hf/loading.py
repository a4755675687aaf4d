"""Loading for the hf backend: device and dtype choice, the model and tokenizer (a local
checkpoint, the embedded GGUF, a hub id, or a base model plus a LoRA adapter merged in),
and the identity string (`model_id`) that cache keys and provenance use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fdd_core.models import (
    MODEL_LOAD_LOCK,
    ModelNotFoundError,
    hub_error,
    peft_quietly,
    resolve_model,
)

INSTALL_HINT = "pip install 'fdd[train]'  (torch, transformers, peft)"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the 'hf' backend needs torch and transformers: {INSTALL_HINT}") from exc
    return torch


def pick_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA device is checked."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was asked for but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use device 'auto' or 'cpu'"
        )
    return device


def pick_dtype(dtype: str, device: str):
    """'auto' -> bfloat16 on a CUDA device that supports it, else float32."""
    torch = _torch()
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _folder_fingerprint(path: Path, samples: int = 16, chunk: int = 4096) -> str:
    """A short content hash of a checkpoint folder, cheap even for gigabytes of weights.

    Small files (configs, tokenizer) are hashed whole; a weight file contributes its size
    and `samples` chunks read at evenly spaced offsets. Retraining changes weights
    everywhere, so a folder retrained in place gets a new id (no stale cache entries),
    while a copy of the folder on another machine keeps its id (a moved shard still hits
    the request cache). Part of the model id.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.name}|{size};".encode())
        with f.open("rb") as fh:
            if size <= samples * chunk:
                h.update(fh.read())
                continue
            for i in range(samples):
                fh.seek((size - chunk) * i // (samples - 1))
                h.update(fh.read(chunk))
    return h.hexdigest()[:12]


def _identity(name: str, source: str) -> str:
    path = Path(source)
    if name == source and not path.is_dir():
        return name  # a hub id
    if not Path(name).expanduser().exists():
        return name  # a named model (the embedded one) converted to a local folder
    # Folder name plus content, not the full path: a copy elsewhere is the same model.
    return f"{path.resolve().name}#{_folder_fingerprint(path)}"


def _split_adapter(
    model: str, adapter: str | None, cache_dir: str | None
) -> tuple[str, str, str | None]:
    """(base name, base source, adapter folder); `model` may itself be an adapter folder."""
    source = resolve_model(model, cache_dir)
    folder = Path(source)
    if (
        folder.is_dir()
        and (folder / "adapter_config.json").is_file()
        and not (folder / "config.json").is_file()
    ):
        if adapter is not None:
            raise ModelNotFoundError(
                f"{folder} is a LoRA adapter folder, and adapter={adapter!r} was given too: "
                "pass the base model as `model` and the adapter folder as `adapter`"
            )
        base = json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
        if not base:
            raise ModelNotFoundError(
                f"{folder / 'adapter_config.json'} names no base_model_name_or_path; pass the "
                "base model as `model` and this folder as `adapter`"
            )
        return base, resolve_model(base, cache_dir), str(folder)
    if adapter is not None:
        apath = Path(adapter).expanduser()
        if not (apath / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"adapter folder {apath} holds no adapter_config.json (expected a peft LoRA "
                "adapter saved with save_pretrained)"
            )
        adapter = str(apath)
    return model, source, adapter


def load_model(
    model: str,
    *,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | None = None,
) -> tuple[Any, Any, str]:
    """Load (model, tokenizer, model_id) in eval mode on the chosen device.

    The model id names what is served (it keys the request cache): the model name for the
    embedded model and hub ids, the folder name plus a content fingerprint for local
    checkpoints, and ``+adapter:`` with the adapter's folder name and fingerprint when a
    LoRA adapter is merged.
    """
    _torch()  # a clear message when the extra is missing
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    base_name, source, adapter_dir = _split_adapter(model, adapter, cache_dir)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        config = AutoConfig.from_pretrained(source)
        tok_source = source
        if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").is_file():
            tok_source = adapter_dir  # an adapter may ship its own (e.g. extended) tokenizer
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
        cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        with MODEL_LOAD_LOCK:  # concurrent loads in threads can meet meta tensors
            net = cls.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        if Path(source).is_dir():
            raise ModelNotFoundError(f"could not load the checkpoint in {source}: {exc}") from exc
        raise hub_error(base_name, exc) from exc
    if adapter_dir:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ImportError(f"loading a LoRA adapter needs peft: {INSTALL_HINT}") from exc
        # Merging the LoRA deltas into the base weights makes inference as fast as the base.
        with MODEL_LOAD_LOCK, peft_quietly():  # peft reads a deprecated transformers property
            net = PeftModel.from_pretrained(net, adapter_dir).merge_and_unload()
    net.to(dev)
    net.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_id = _identity(base_name, source)
    if adapter_dir:
        apath = Path(adapter_dir)
        model_id += f"+adapter:{apath.resolve().name}#{_folder_fingerprint(apath)}"
    return net, tokenizer, model_id
