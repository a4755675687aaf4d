"""One config model per backend, selected by its `backend` field.

`ModelConfig` holds what every backend takes (`backend`, `model`); `HFConfig`,
`OpenAIConfig` and `VLLMConfig` add their own fields, so a field one backend does not read
is an error for it (`base_url` on an hf model), not a setting silently ignored. The run
config (fdd_core.config) adds the teacher's and the student's fields on top of these and
picks the class by `backend` through the table in fdd_core.backends.registry.

Calling the abstract `ModelConfig(...)` (or `TeacherConfig(...)`, `StudentConfig(...)`)
builds the concrete class its `backend` names (default 'hf'), so
``ModelConfig(backend="openai", base_url=...)`` is an `OpenAIConfig`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EMBEDDED_MODEL = "smollm2-135m-instruct"
DEFAULT_BACKEND = "hf"


class ModelConfig(BaseModel):
    """Where a model comes from and which backend runs it (fields every backend takes)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # A class that sets this in its own body is abstract: calling it builds the concrete
    # class (from fdd_core.backends.registry) that `backend` names.
    _abstract: ClassVar[bool] = True

    backend: str = Field(
        DEFAULT_BACKEND,
        description="Inference backend: 'hf' (transformers, in process, CPU or GPU), "
        "'openai' (any OpenAI-compatible HTTP endpoint, e.g. `vllm serve`), "
        "'vllm' (in-process vLLM on a GPU worker).",
    )
    model: str = Field(
        EMBEDDED_MODEL,
        description="Model name: 'smollm2-135m-instruct' (embedded, no network), a local "
        "checkpoint folder, a hub id (needs a network) or, for 'openai', the served model name.",
    )

    def __new__(cls, *args: Any, **data: Any):
        if cls.__dict__.get("_abstract", False):
            from fdd_core.backends.registry import config_class

            cls = config_class(data.get("backend", DEFAULT_BACKEND), cls)
        return super().__new__(cls)


class InProcessConfig(ModelConfig):
    """Fields of the backends that load weights in this process (hf, vllm)."""

    adapter: str | None = Field(
        None, description="Optional LoRA adapter folder applied on top of `model`."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Device for the model (and for training a student); 'auto' picks CUDA "
        "when present.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is bfloat16 on GPU and float32 on CPU."
    )


class HFConfig(InProcessConfig):
    """transformers in this process, CPU or GPU."""

    backend: Literal["hf"] = Field("hf", description="transformers, in process, CPU or GPU.")
    batch_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Sequences per forward batch: batch_size // n prompts, each with its "
        "n samples (a prompt's samples are never split). Bounds memory for greedy and sampled "
        "calls alike.",
    )


class VLLMConfig(InProcessConfig):
    """vLLM's offline engine in this process (a GPU worker)."""

    backend: Literal["vllm"] = Field("vllm", description="In-process vLLM on a GPU worker.")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model.")


class OpenAIConfig(ModelConfig):
    """Any OpenAI-compatible HTTP endpoint (`vllm serve`, SGLang, llama.cpp, a hosted API)."""

    backend: Literal["openai"] = Field(
        "openai", description="Any OpenAI-compatible HTTP endpoint, e.g. `vllm serve`."
    )
    base_url: str | None = Field(
        None,
        validate_default=True,
        description="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key. The key itself "
        "never goes in a config file.",
    )
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="OpenAI API flavour: chat completions or plain completions."
    )
    max_concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once.")
    request_timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(6, ge=0, le=50, description="Retries per request on transient errors.")

    @field_validator("base_url")
    @classmethod
    def _needs_base_url(cls, value: str | None) -> str | None:
        if not value:
            raise ValueError(
                "backend 'openai' needs `base_url`, the server's URL, e.g. "
                "http://127.0.0.1:8000/v1; it is empty"
            )
        return value


class LlamaServerConfig(ModelConfig):
    """llama.cpp's C++ llama-server, started and stopped by fdd (the CPU teacher engine).

    Needs the `llama-server` executable (`make llama-server`, docs/llama-server.md) and a
    GGUF model: the embedded one, or `model` = the path of a .gguf file.
    """

    backend: Literal["llama-server"] = Field(
        "llama-server",
        description="llama.cpp's llama-server on a GGUF file, started by fdd on a loopback port.",
    )
    binary: str | None = Field(
        None,
        description="The llama-server executable. Empty: $FDD_LLAMA_SERVER, else "
        ".venv-llama-server/bin/llama-server (make llama-server), else llama-server on PATH.",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for the server; empty: one per core."
    )
    parallel: int = Field(
        16,
        ge=1,
        le=1024,
        description="Server slots (sequences decoded together). A request's n samples take n "
        "slots; n above this goes out one request per sample.",
    )
    ctx_per_slot: int = Field(
        2048,
        ge=64,
        le=131072,
        description="Context tokens per slot (prompt + new tokens); the server's KV cache "
        "holds parallel x ctx_per_slot tokens (embedded model: about 23 KB per token).",
    )
    startup_timeout_s: float = Field(
        120.0, gt=0, description="Seconds to wait for the server to load the model."
    )
    request_timeout_s: float = Field(300.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(2, ge=0, le=50, description="Retries per request on transient errors.")
    extra_args: list[str] = Field(
        default_factory=list, description="More llama-server command-line arguments, verbatim."
    )


class AutoConfig(HFConfig):
    """'llama-server' where it is usable here, else 'hf' (decided when the backend is built).

    llama-server is picked when its executable is found (see LlamaServerConfig.binary), the
    model has a GGUF file (the embedded model, or a .gguf path) and the model would run on
    CPU (device 'cpu', or 'auto' without CUDA); otherwise hf with the hf fields. The backend
    that ran is recorded in every result (`describe()`, request-cache keys).
    """

    backend: Literal["auto"] = Field(  # type: ignore[assignment]
        "auto",
        description="'llama-server' where its executable is found and the model runs on CPU, "
        "else 'hf'.",
    )
    binary: str | None = LlamaServerConfig.model_fields["binary"]
    threads: int | None = LlamaServerConfig.model_fields["threads"]
    parallel: int = LlamaServerConfig.model_fields["parallel"]
    ctx_per_slot: int = LlamaServerConfig.model_fields["ctx_per_slot"]
    startup_timeout_s: float = LlamaServerConfig.model_fields["startup_timeout_s"]
