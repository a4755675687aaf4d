"""The backend table: everything the code must know about a kind of backend, in one row.

A row (`BackendSpec`) names the backend's config model, how to build it, how to check it
before a run, whether it holds a local GPU and what decides its loaded weights (the key under
which `get_backend` keeps one instance per process). `make_backend`, `get_backend`, the
preflight, the flows' `gpu` tag and the run config's `backend` choice all read this table;
none of them branches on a backend name.

Adding a backend = one module (its config model, a subclass of `ModelConfig`, and its
`Backend` class) plus one `register_backend(BackendSpec(...))` call: see
docs/architecture.md and tests/test_backend_registry.py, which does exactly that.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from fdd_core.backends.configs import (
    DEFAULT_BACKEND,
    AutoConfig,
    HFConfig,
    InProcessConfig,
    LlamaServerConfig,
    ModelConfig,
    OpenAIConfig,
    VLLMConfig,
)

if TYPE_CHECKING:
    from fdd_core.backends.base import Backend

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "backend_names",
    "backend_spec",
    "config_class",
    "device_on_gpu",
    "register_backend",
    "resolve_auto",
    "role_members",
    "role_union",
    "unregister_backend",
]


@dataclass(frozen=True)
class BackendSpec:
    """One row of the backend table.

    make(cfg, cache_dir, progress) -> Backend: builds it; import its SDK inside, not at the
        top of the module, so the table stays cheap to import.
    preflight(who, cfg, cache_dir): raise fdd_core.config.ConfigError when the model or the
        endpoint is not usable (`who` is 'teacher' or 'student', for the message).
    uses_gpu(cfg) -> bool: whether work with this model holds a GPU of this machine (such
        tasks carry the `gpu` tag).
    memo_key(cfg, cache_dir) -> tuple | None: what decides the loaded weights; None for
        backends that hold none (built fresh on every call).
    trainable: whether a student can be served by it (the student is trained in process).
    """

    name: str
    config: type[ModelConfig]
    make: Callable[[Any, str | None, bool | None], Backend]
    preflight: Callable[[str, Any, str | None], None]
    uses_gpu: Callable[[Any], bool]
    memo_key: Callable[[Any, str | None], tuple | None]
    trainable: bool = True


def device_on_gpu(device: str) -> bool:
    """Whether in-process work with this device setting holds a GPU here."""
    if device == "cpu":
        return False
    if device == "cuda":
        return True
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- built-in rows


def _make_hf(cfg: HFConfig, cache_dir: str | None, progress: bool | None) -> Backend:
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


def _make_openai(cfg: OpenAIConfig, cache_dir: str | None, progress: bool | None) -> Backend:
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


def _make_vllm(cfg: VLLMConfig, cache_dir: str | None, progress: bool | None) -> Backend:
    from fdd_core.backends.vllm_offline import VLLMBackend
    from fdd_core.models import resolve_model

    return VLLMBackend(
        model=resolve_model(cfg.model, cache_dir),
        adapter=cfg.adapter,
        dtype=cfg.dtype,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
    )


def _check_local_model(who: str, cfg: InProcessConfig, cache_dir: str | None) -> None:
    from fdd_core.preflight import check_local_model

    check_local_model(who, cfg, cache_dir)


def _check_endpoint(who: str, cfg: OpenAIConfig, cache_dir: str | None) -> None:
    from fdd_core.preflight import check_endpoint

    check_endpoint(who, cfg)


def _make_llama_server(
    cfg: LlamaServerConfig, cache_dir: str | None, progress: bool | None
) -> Backend:
    from fdd_core.backends.llama_server import LlamaServerBackend

    return LlamaServerBackend(
        cfg.model,
        binary=cfg.binary,
        threads=cfg.threads,
        parallel=cfg.parallel,
        ctx_per_slot=cfg.ctx_per_slot,
        startup_timeout_s=cfg.startup_timeout_s,
        request_timeout_s=cfg.request_timeout_s,
        max_retries=cfg.max_retries,
        extra_args=cfg.extra_args,
    )


def _check_llama_server(who: str, cfg: LlamaServerConfig, cache_dir: str | None) -> None:
    from fdd_core.backends.llama_server import find_binary, missing_binary_message, resolve_gguf
    from fdd_core.config import ConfigError

    if find_binary(cfg.binary) is None:
        raise ConfigError(f"{who}.backend = 'llama-server': {missing_binary_message(cfg.binary)}")
    try:
        resolve_gguf(cfg.model)
    except Exception as exc:  # ModelNotFoundError, FileNotFoundError: the message says why
        raise ConfigError(f"{who}.model = {cfg.model!r}: {exc}") from None


def _llama_server_key(cfg: LlamaServerConfig, cache_dir: str | None) -> tuple:
    # One server per process and settings: the shard tasks of a run share it.
    return (
        "llama-server",
        cfg.model,
        cfg.binary,
        cfg.threads,
        cfg.parallel,
        cfg.ctx_per_slot,
        tuple(cfg.extra_args),
    )


def resolve_auto(cfg: AutoConfig) -> ModelConfig:
    """The concrete config `backend: auto` stands for on this machine (see AutoConfig)."""
    from fdd_core.backends.configs import EMBEDDED_MODEL
    from fdd_core.backends.llama_server import find_binary

    gguf = cfg.model == EMBEDDED_MODEL or cfg.model.endswith(".gguf")
    if (
        gguf
        and cfg.adapter is None
        and not device_on_gpu(cfg.device)
        and find_binary(cfg.binary) is not None
    ):
        return LlamaServerConfig(
            model=cfg.model,
            binary=cfg.binary,
            threads=cfg.threads,
            parallel=cfg.parallel,
            ctx_per_slot=cfg.ctx_per_slot,
            startup_timeout_s=cfg.startup_timeout_s,
        )
    return HFConfig(
        model=cfg.model,
        adapter=cfg.adapter,
        device=cfg.device,
        dtype=cfg.dtype,
        batch_size=cfg.batch_size,
    )


def _auto(method: str) -> Callable:
    def call(cfg: AutoConfig, *args: Any) -> Any:
        concrete = resolve_auto(cfg)
        return getattr(BACKENDS[concrete.backend], method)(concrete, *args)

    return call


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    """Add (or replace) a row; the run config accepts `backend: <name>` from then on."""
    field = spec.config.model_fields.get("backend")
    if field is None or field.default != spec.name:
        raise ValueError(
            f"backend {spec.name!r}: its config model {spec.config.__name__} must declare "
            f"`backend: Literal[{spec.name!r}] = {spec.name!r}`"
        )
    BACKENDS[spec.name] = spec
    _forget(spec.name)
    if "fdd_core.config" in sys.modules:  # rebuild the run config's backend choice
        sys.modules["fdd_core.config"].rebuild_model_configs()


def unregister_backend(name: str) -> None:
    """Remove a row (tests use it to undo a registration)."""
    BACKENDS.pop(name, None)
    _forget(name)
    if "fdd_core.config" in sys.modules:
        sys.modules["fdd_core.config"].rebuild_model_configs()


for _spec in (
    BackendSpec(
        name="hf",
        config=HFConfig,
        make=_make_hf,
        preflight=_check_local_model,
        uses_gpu=lambda cfg: device_on_gpu(cfg.device),
        memo_key=lambda cfg, cache_dir: (
            "hf",
            cfg.model,
            cfg.adapter,
            cfg.device,
            cfg.dtype,
            cache_dir,
        ),
    ),
    BackendSpec(
        name="openai",
        config=OpenAIConfig,
        make=_make_openai,
        preflight=_check_endpoint,
        uses_gpu=lambda cfg: False,  # a remote endpoint: its GPU is not this machine's
        memo_key=lambda cfg, cache_dir: None,
        trainable=False,
    ),
    BackendSpec(
        name="vllm",
        config=VLLMConfig,
        make=_make_vllm,
        preflight=_check_local_model,
        uses_gpu=lambda cfg: device_on_gpu(cfg.device),
        memo_key=lambda cfg, cache_dir: (
            "vllm",
            cfg.model,
            cfg.adapter,
            cfg.dtype,
            cfg.gpu_memory_utilization,
            cfg.tensor_parallel_size,
            cache_dir,
        ),
    ),
    BackendSpec(
        name="llama-server",
        config=LlamaServerConfig,
        make=_make_llama_server,
        preflight=_check_llama_server,
        uses_gpu=lambda cfg: False,  # a CPU engine here (GPU llama.cpp builds: not offered)
        memo_key=_llama_server_key,
        trainable=False,
    ),
    BackendSpec(
        name="auto",
        config=AutoConfig,
        make=_auto("make"),
        preflight=_auto("preflight"),
        uses_gpu=_auto("uses_gpu"),
        memo_key=_auto("memo_key"),
        trainable=False,  # a teacher setting: the student is trained in process (hf)
    ),
):
    BACKENDS[_spec.name] = _spec


# --------------------------------------------------------------------------- lookups


def backend_names() -> list[str]:
    return list(BACKENDS)


def backend_spec(name_or_cfg: str | ModelConfig) -> BackendSpec:
    """The row for a backend name or a model config; ValueError naming the known ones."""
    name = name_or_cfg if isinstance(name_or_cfg, str) else name_or_cfg.backend
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; known: {', '.join(repr(n) for n in BACKENDS)}"
        ) from None


# (backend name, role) -> its concrete config class. Built once and kept: the classes of
# the other backends must stay the same objects when a row is added (existing instances,
# pickles and isinstance checks refer to them); only a replaced row's classes are rebuilt.
_CLASSES: dict[tuple[str, type], type[ModelConfig]] = {}


def _forget(name: str) -> None:
    for key in [k for k in _CLASSES if k[0] == name]:
        del _CLASSES[key]
    role_members.cache_clear()


def config_class(name: str, role: type[ModelConfig] = ModelConfig) -> type[ModelConfig]:
    """The concrete config class for backend `name` in `role` (ModelConfig, or a role base
    such as TeacherConfig that adds its fields on top): `<Backend>` + `<Role>` fields."""
    base = backend_spec(name).config
    if role is ModelConfig:
        return base
    cached = _CLASSES.get((name, role))
    if cached is not None and issubclass(cached, base):
        return cached
    cls_name = base.__name__.removesuffix("Config") + role.__name__
    module = sys.modules[role.__module__]
    # The backend first: its `backend: Literal[...]` must win over the role base's `str`.
    cls = type(cls_name, (base, role), {"__module__": role.__module__, "__doc__": role.__doc__})
    setattr(module, cls_name, cls)  # importable by name: pickles and Prefect results need it
    _CLASSES[(name, role)] = cls
    return cls


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("backend", DEFAULT_BACKEND)
    return getattr(value, "backend", DEFAULT_BACKEND)


BACKEND_DISCRIMINATOR = Discriminator(_backend_of)


@functools.cache
def role_members(role: type[ModelConfig]) -> Any:
    """The union of every backend's config class for `role`, each tagged with its name."""
    return Union[tuple(Annotated[config_class(n, role), Tag(n)] for n in BACKENDS)]  # noqa: UP007


def role_union(role: type[ModelConfig]) -> Any:
    """The pydantic discriminated union (on `backend`) of every backend's config for `role`."""
    return Annotated[role_members(role), BACKEND_DISCRIMINATOR]
