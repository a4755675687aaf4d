"""Inference backends. One per module; heavy SDKs are imported only when used.

`make_backend(cfg)` builds the backend a `ModelConfig` names; `get_backend(cfg)` does the
same but keeps one loaded instance per process for backends that hold weights (hf, vllm),
so the many shard tasks of a run that land in one worker process load the weights once.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fdd_core.backends.base import Backend, Completion, Prompt, SamplingParams

if TYPE_CHECKING:
    from fdd_core.config import ModelConfig

__all__ = [
    "Backend",
    "Completion",
    "Prompt",
    "SamplingParams",
    "clear_backends",
    "get_backend",
    "make_backend",
]


def make_backend(
    cfg: ModelConfig, *, cache_dir: str | None = None, progress: bool | None = None
) -> Backend:
    """A new backend for `cfg` (hf, openai or vllm); each SDK is imported only here."""
    if cfg.backend == "hf":
        from fdd_core.backends.hf import HFBackend

        return HFBackend(
            cfg.model,
            adapter=cfg.adapter,
            device=cfg.device,
            dtype=cfg.dtype,
            batch_size=cfg.batch_size,
            cache_dir=cache_dir,
            progress=progress,
        )
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ValueError(
                f"backend 'openai' needs `base_url` (e.g. http://127.0.0.1:8000/v1) for model "
                f"{cfg.model!r}; it is unset"
            )
        from fdd_core.backends.openai_api import OpenAIBackend

        return OpenAIBackend(
            base_url=cfg.base_url,
            model=cfg.model,
            api_key_env=cfg.api_key_env,
            endpoint=cfg.endpoint,
            max_concurrency=cfg.max_concurrency,
            timeout_s=cfg.request_timeout_s,
            max_retries=cfg.max_retries,
        )
    if cfg.backend == "vllm":
        from fdd_core.backends.vllm_offline import VLLMBackend
        from fdd_core.models import resolve_model

        return VLLMBackend(
            model=resolve_model(cfg.model, cache_dir),
            adapter=cfg.adapter,
            dtype=cfg.dtype,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
        )
    raise ValueError(f"backend must be one of hf, openai, vllm; got {cfg.backend!r}")


_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _memo_key(cfg: ModelConfig, cache_dir: str | None) -> tuple | None:
    """What decides the loaded weights; None for backends that hold none (openai)."""
    if cfg.backend == "hf":
        return ("hf", cfg.model, cfg.adapter, cfg.device, cfg.dtype, cache_dir)
    if cfg.backend == "vllm":
        return (
            "vllm",
            cfg.model,
            cfg.adapter,
            cfg.dtype,
            cfg.gpu_memory_utilization,
            cfg.tensor_parallel_size,
            cache_dir,
        )
    return None


def get_backend(
    cfg: ModelConfig, *, cache_dir: str | None = None, progress: bool | None = None
) -> Backend:
    """Like `make_backend`, but one loaded hf/vllm backend per process and weights config.

    For hf the key is (model, adapter, device, dtype): a different `batch_size` gets a view
    that shares the loaded weights. A backend closed by its user is reloaded on next use.
    openai backends hold no weights and are built fresh each call.
    """
    key = _memo_key(cfg, cache_dir)
    if key is None:
        return make_backend(cfg, cache_dir=cache_dir, progress=progress)
    with _LOCK:  # shard tasks on a thread pool may ask at once: load only once
        backend = _LOADED.get(key)
        if backend is None or getattr(backend, "closed", False):
            backend = make_backend(cfg, cache_dir=cache_dir, progress=progress)
            _LOADED[key] = backend
    if cfg.backend == "hf" and backend.batch_size != cfg.batch_size:
        return backend.with_batch_size(cfg.batch_size)
    return backend


def clear_backends() -> None:
    """Close and forget every memoized backend (frees memory, e.g. between tests)."""
    with _LOCK:
        backends = list(_LOADED.values())
        _LOADED.clear()
    for backend in backends:
        backend.close()
