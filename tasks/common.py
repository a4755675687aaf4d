"""Shared task plumbing: cache policy, retries, result storage, per-process resources.

Every deterministic task caches on INPUTS + TASK_SOURCE. TASK_SOURCE hashes only the
task's own body, so each task also takes `code_version` (a hash of fdd_core's sources and
prompt files, see `fdd_core.versioning.code_fingerprint`): a change to the library below a
task invalidates its cache too. Results persist under the run folder (or the configured
store), so a re-run of the same config hits the cache across processes and machines.
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.filesystems import RemoteFileSystem

from fdd_core.backends.cache import RequestCache
from fdd_core.config import ModelConfig, SandboxConfig, StorageConfig, TeacherConfig
from fdd_core.models import default_cache_dir
from fdd_core.sandbox import Sandbox

log = logging.getLogger(__name__)

CACHE_POLICY = INPUTS + TASK_SOURCE
GPU_TAG = "gpu"

# Errors that a retry may cure. Anything else (bad config, bad data, a 400 from a server,
# a missing model) fails the shard at once with its message.
_TRANSIENT_NAMES = {
    "TimeoutError",
    "ConnectionError",
    "ConnectionResetError",
    "BrokenPipeError",
    "TransientBackendError",
    "TransportError",
    "ReadTimeout",
    "ConnectTimeout",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "PoolTimeout",
    "OutOfMemoryError",
}


def is_transient(exc: BaseException) -> bool:
    """True when the exception (or its cause) looks like a passing fault."""
    seen = 0
    while exc is not None and seen < 5:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & _TRANSIENT_NAMES:
            return True
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and (status == 429 or status >= 500):
            return True
        if getattr(exc, "transient", False):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient failures only."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state itself could not be read: be safe and retry
        exc = err
    transient = isinstance(exc, BaseException) and is_transient(exc)
    if not transient:
        log.warning("not retrying %s: permanent error %r", task_run.name, exc)
    return transient


def backoff_delays(base: float, retries: int, cap: float = 300.0) -> list[float]:
    """Exponential backoff delays for Prefect's `retry_delay_seconds` (jitter added there)."""
    return [min(cap, base * (2**i)) for i in range(max(retries, 1))]


def result_storage(storage: StorageConfig, run_dir: str | Path):
    """Where Prefect persists task results (and cache records).

    A local folder is passed as a Path (Prefect builds the block itself); a remote fsspec
    URL (s3://, gs://, ...) becomes a RemoteFileSystem block saved under a name derived from
    the URL, since Prefect only takes server-side blocks for remote storage.
    """
    target = storage.result_storage or str(Path(run_dir) / "prefect-results")
    if "://" in target and not target.startswith("file://"):
        import hashlib

        name = "fdd-results-" + hashlib.sha256(target.encode()).hexdigest()[:12]
        RemoteFileSystem(basepath=target).save(name, overwrite=True)
        return f"remote-file-system/{name}"
    return Path(target.removeprefix("file://")).expanduser().resolve()


@functools.lru_cache(maxsize=8)
def _sandbox(cfg_json: str) -> Sandbox:
    sb = Sandbox(SandboxConfig.model_validate_json(cfg_json))
    _OPEN_SANDBOXES.append(sb)
    return sb


_OPEN_SANDBOXES: list[Sandbox] = []


def close_sandboxes() -> None:
    """Stop every memoized sandbox's workers (tests, or a long-lived worker process)."""
    for sb in list(_OPEN_SANDBOXES):
        sb.close()
    _OPEN_SANDBOXES.clear()
    _sandbox.cache_clear()


def get_sandbox(cfg: SandboxConfig) -> Sandbox:
    """One sandbox (warm worker pool) per process and config, reused by every shard."""
    return _sandbox(cfg.model_dump_json())


def teacher_request_cache(teacher: TeacherConfig, storage: StorageConfig) -> RequestCache | None:
    """The on-disk cache of seeded teacher calls, or None when the config turns it off."""
    if not teacher.request_cache:
        return None
    root = Path(storage.cache_dir).expanduser() if storage.cache_dir else default_cache_dir()
    return RequestCache(root / "requests")


def get_model_backend(cfg: ModelConfig, cache_dir: str | None):
    """A backend for the model config, memoized per process (weights load once)."""
    from fdd_core.backends import get_backend

    return get_backend(cfg, cache_dir=cache_dir)


def jitter(seconds: float) -> float:
    return seconds * (0.5 + random.random())
