"""Inference backends. One per module; heavy SDKs are imported only when used.

`make_backend(cfg)` builds the backend a `ModelConfig` names, through its row of the table
in `fdd_core.backends.registry`; `get_backend(cfg)` does the same but keeps one loaded
instance per process for backends that hold weights (hf, vllm), so the many shard tasks of
a run that land in one worker process load the weights once.
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
    """A new backend for `cfg`, built by its row of the backend table (SDKs load only here)."""
    from fdd_core.backends.registry import backend_spec

    return backend_spec(cfg).make(cfg, cache_dir, progress)


_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _memo_key(cfg: ModelConfig, cache_dir: str | None) -> tuple | None:
    """What decides the loaded weights (the table's memo key); None: holds none."""
    from fdd_core.backends.registry import backend_spec

    return backend_spec(cfg).memo_key(cfg, cache_dir)


def get_backend(
    cfg: ModelConfig, *, cache_dir: str | None = None, progress: bool | None = None
) -> Backend:
    """Like `make_backend`, but one loaded backend per process and weights config.

    The key is the table's memo key (for hf: model, adapter, device, dtype): a config that
    differs only in `batch_size` gets a view sharing the loaded weights
    (`Backend.with_batch_size`). A backend closed by its user is reloaded on next use.
    Backends whose memo key is None (openai: no weights) are built fresh each call.
    """
    key = _memo_key(cfg, cache_dir)
    if key is None:
        return make_backend(cfg, cache_dir=cache_dir, progress=progress)
    with _LOCK:  # shard tasks on a thread pool may ask at once: load only once
        backend = _LOADED.get(key)
        if backend is None or backend.closed:
            backend = make_backend(cfg, cache_dir=cache_dir, progress=progress)
            _LOADED[key] = backend
    batch_size = getattr(cfg, "batch_size", None)  # a field of the backends that batch
    if batch_size is not None and backend.batch_size != batch_size:
        return backend.with_batch_size(batch_size)
    return backend


def clear_backends() -> None:
    """Close and forget every memoized backend (frees memory, e.g. between tests)."""
    with _LOCK:
        backends = list(_LOADED.values())
        _LOADED.clear()
    for backend in backends:
        backend.close()
