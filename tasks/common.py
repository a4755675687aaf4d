"""Shared task plumbing: cache policy, retries, result storage, per-process resources.

Every deterministic task caches on INPUTS + TASK_SOURCE. TASK_SOURCE hashes only the
task's own body, so each task also takes `code_version` (a hash of fdd_core's sources and
prompt files, see `fdd_core.versioning.code_fingerprint`): a change to the library below a
task invalidates its cache too. Results persist under the run folder (or the configured
store), so a re-run of the same config hits the cache across processes and machines.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.filesystems import RemoteFileSystem
from prefect.serializers import PickleSerializer
from pydantic import Field

from fdd_core import deadline
from fdd_core.backends.base import is_out_of_memory, retry_verdict
from fdd_core.backends.cache import RequestCache
from fdd_core.config import (
    ModelConfig,
    OrchestrationConfig,
    SandboxConfig,
    StorageConfig,
    TeacherConfig,
)
from fdd_core.models import default_cache_dir
from fdd_core.sandbox import Sandbox

log = logging.getLogger(__name__)

# A shard's time limit is how long to wait, not what to compute: it stays out of cache keys.
CACHE_POLICY = (INPUTS - "shard_timeout_s") + TASK_SOURCE
# Tasks whose remote backend is the teacher: their retry log says "waiting for the teacher".
TEACHER_TASKS = frozenset({"rationales", "synthesize", "label"})
_MAX_CHAIN = 8  # causes followed when classifying an error


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may cure `exc` (the task retry condition; see docs/reliability.md).

    The contract: an error that carries a boolean `retryable` (every `BackendError`) decides
    for itself. Without one, the stdlib's `TimeoutError` and `ConnectionError` (socket
    timeouts, refused or reset connections) are transient; torch's out-of-memory error is
    permanent (see `fdd_core.backends.base.is_out_of_memory`); anything else (bad config,
    bad data, a missing model, a bug) is permanent and fails the shard at once. An error
    raised `from` another is judged by the first link in the chain that says something.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(exc))
        verdict = retry_verdict(exc)
        if verdict is not None:
            return verdict
        if is_out_of_memory(exc):
            return False
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return True
        exc = exc.__cause__
    return False


def _endpoint(exc: BaseException) -> str | None:
    seen = 0
    while exc is not None and seen < _MAX_CHAIN:
        if getattr(exc, "endpoint", None):
            return str(exc.endpoint)
        exc, seen = exc.__cause__, seen + 1
    return None


def _next_delay(task, attempt: int) -> float:
    """The base delay before retry `attempt` (Prefect adds its jitter on top)."""
    delays = task.retry_delay_seconds
    if isinstance(delays, (list, tuple)):
        return float(delays[min(attempt - 1, len(delays) - 1)]) if delays else 0.0
    return float(delays or 0.0)


def _run_logger(task, task_run):
    """The task run's logger (console and Prefect UI), or this module's outside a run."""
    try:
        from prefect.logging.loggers import task_run_logger

        return task_run_logger(task_run, task)
    except Exception:  # no flow run context (a unit test calling the condition directly)
        return log


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient failures only, and say what it waits for."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state itself could not be read: be safe and retry
        exc = err
    logger = _run_logger(task, task_run)
    if not (isinstance(exc, BaseException) and is_transient(exc)):
        kind = (
            "GPU out of memory"
            if isinstance(exc, BaseException) and is_out_of_memory(exc)
            else "permanent error"
        )
        logger.warning("not retrying %s: %s: %s", task_run.name, kind, _short(exc))
        return False
    attempt = max(int(getattr(task_run, "run_count", 1) or 1), 1)
    delay = _next_delay(task, attempt)
    when = (datetime.now(timezone.utc) + timedelta(seconds=delay)).strftime("%H:%M:%S UTC")
    endpoint = _endpoint(exc)
    who = "the teacher" if getattr(task, "name", "") in TEACHER_TASKS else "the model server"
    if endpoint:
        logger.warning(
            "waiting for %s at %s: %s attempt %d of at most %d failed: %s; next attempt in "
            "about %.1f s (around %s)",
            who,
            endpoint,
            task_run.name,
            attempt,
            task.retries + 1,
            _short(exc),
            delay,
            when,
        )
    else:
        logger.warning(
            "transient error in %s (attempt %d of at most %d): %s; next attempt in about "
            "%.1f s (around %s)",
            task_run.name,
            attempt,
            task.retries + 1,
            _short(exc),
            delay,
            when,
        )
    return True


def _short(exc: object, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else repr(exc)
    return text if len(text) <= limit else text[:limit] + " ..."


def retry_schedule(orch: OrchestrationConfig) -> tuple[int, list[float]]:
    """(retries, delays) for a shard task: capped exponential backoff filling the window.

    Delay i is `retry_delay_s * 2**i`, capped at `retry_max_delay_s`; there are at least
    `task_retries` of them and enough that they add up to `retry_window_s` (a window needs a
    delay above zero). Prefect takes at most 50 delays and repeats the last for further
    retries, which is the cap once the schedule has reached it.
    """
    delays: list[float] = []
    total = 0.0
    while len(delays) < orch.task_retries or (
        total < orch.retry_window_s and orch.retry_delay_s > 0 and orch.retry_max_delay_s > 0
    ):
        d = min(orch.retry_max_delay_s, orch.retry_delay_s * 2.0 ** min(len(delays), 60))
        delays.append(d)
        total += d
        if len(delays) >= 10_000:
            break
    return len(delays), delays[:50]


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


def free_bytes(path: str | Path) -> int | None:
    """Free space on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def note_disk_full(exc: BaseException, path: str | Path, needed_bytes: int | None) -> bool:
    """Add a note naming the path and the space needed when `exc` is "no space left"."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    # Libraries with their own error types (safetensors) keep only the OS message.
    if not (full or "No space left on device" in str(exc) or "os error 28" in str(exc)):
        return False
    need = f"about {_size(needed_bytes)}" if needed_bytes else "an unknown amount of space"
    free = free_bytes(path)
    exc.add_note(
        f"disk full while writing {path}: it needs {need}, "
        f"{_size(free) if free is not None else 'unknown'} free on that file system. "
        "Nothing half-written was kept; free some space and start the run again (finished "
        "work is reused)."
    )
    return True


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_CHECKED_MAGIC = b"fdd-sha256:"


class CheckedPickleSerializer(PickleSerializer):
    """Prefect's pickle serializer plus a SHA-256 of the payload, checked on every read.

    Prefect treats a result file it cannot read as absent and recomputes the task, but a
    file changed in a way that still unpickles (a flipped bit, a hand edit) would be
    returned as it is. With the checksum any change is a read error, so it is recomputed.
    """

    type: str = Field(default="fdd-checked-pickle", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        payload = super().dumps(obj)
        return _CHECKED_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload

    def loads(self, blob: bytes) -> Any:
        if not blob.startswith(_CHECKED_MAGIC):
            raise ValueError("no fdd checksum header: the result was truncated or overwritten")
        digest, _, payload = blob[len(_CHECKED_MAGIC) :].partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch: the result changed after it was written")
        return super().loads(payload)


def check_result_files(folder: str | Path, logger: Any = None) -> list[Path]:
    """Move aside every unreadable or altered Prefect result file in `folder`; their paths.

    Prefect would silently recompute a task whose result file is damaged; this makes the
    damage visible (a warning naming the file) and keeps the bad file as `<name>.corrupt`
    for inspection, so the task is recomputed from scratch. Only a local folder is scanned.
    """
    from prefect._internal.result_records import ResultRecord

    logger = logger or log
    root = Path(folder)
    if not root.is_dir():
        return []
    bad: list[Path] = []
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix in (".corrupt", ".tmp", ".lock"):
            continue
        try:
            ResultRecord.deserialize(path.read_bytes())
        except Exception as exc:
            aside = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            logger.warning(
                "damaged result file %s (%s: %s): moved to %s; its task will be recomputed",
                path,
                type(exc).__name__,
                str(exc)[:200],
                aside.name,
            )
            bad.append(path)
    return bad


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


def shard_limit(shard_timeout_s: float | None, name: str, round_index: int, shard_index: int):
    """The time limit of one attempt of a generation shard (see `fdd_core.deadline`)."""
    return deadline.limit(shard_timeout_s, f"{name}-r{round_index}-s{shard_index}")
