"""`LlamaServerBackend`: llama.cpp's own C++ `llama-server`, started and stopped by fdd.

The CPU teacher engine (docs/llama-server.md). On construction the backend starts
`llama-server` on the GGUF file (the embedded SmolLM2 model by default) on a free loopback
port, with `parallel` slots and continuous batching, and waits until `/health` answers 200.
If the process exits first, or does not come up within `startup_timeout_s`, it is stopped and
`LlamaServerError` names the command, the exit status and the tail of the server's log.

Requests go through the project's `OpenAIBackend` (retries, deadline, seeds, statistics):
text prompts to `/v1/completions` (the text as is, like the hf backend), chat prompts to
`/v1/chat/completions` (the GGUF's own chat template), so a teacher with
`prompt_style: completion` and its chat-style problem-writing prompts share one server.
`n > 1` goes out as one request with `n`: llama-server evaluates the prompt once and copies
it to `n` slots, each child with its own seed (it caps `n` at `parallel`; above that the
OpenAI backend falls back to one request per sample). Requests in flight: `parallel // n`
prompts at a time, so every slot is busy and none waits in the server's queue.

The server is always stopped: by `close()` (also `with LlamaServerBackend(...)`), when the
backend is garbage-collected, at interpreter exit, and, when started from the main thread,
by the kernel if this process dies (`PR_SET_PDEATHSIG`; not set from other threads, since it
fires when the starting *thread* ends). Stopping sends SIGTERM to the server's process group
and SIGKILL after `stop_timeout_s`.

The binary: `binary` in the config, else `$FDD_LLAMA_SERVER`, else
`.venv-llama-server/bin/llama-server` in the repository (what `make llama-server` builds),
else `llama-server` on PATH (`find_binary`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from fdd_core.backends.base import (
    BackendBase,
    BackendError,
    Completion,
    GenerationStats,
    Prompt,
    SamplingParams,
    check_prompts,
)
from fdd_core.procs import describe_exit

log = logging.getLogger(__name__)

ENV_BINARY = "FDD_LLAMA_SERVER"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUILD = Path(".venv-llama-server") / "bin" / "llama-server"
SERVED_NAME = "teacher"
LOG_TAIL_LINES = 30


class LlamaServerError(BackendError):
    """llama-server could not be found, started, or kept running."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


def binary_candidates(configured: str | None = None) -> list[tuple[str, Path | None]]:
    """(where it came from, path) in the order `find_binary` tries them."""
    out: list[tuple[str, Path | None]] = []
    if configured:
        return [("config `binary`", Path(configured).expanduser())]
    env = os.environ.get(ENV_BINARY)
    if env:
        return [(f"${ENV_BINARY}", Path(env).expanduser())]
    out.append(("repository build", REPO_ROOT / DEFAULT_BUILD))
    if Path.cwd() != REPO_ROOT:
        out.append(("working-directory build", Path.cwd() / DEFAULT_BUILD))
    on_path = shutil.which("llama-server")
    out.append(("PATH", Path(on_path) if on_path else None))
    return out


def find_binary(configured: str | None = None) -> Path | None:
    """The llama-server executable to use, or None when there is none (see module doc)."""
    for _, path in binary_candidates(configured):
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def not_built_reason() -> str:
    """Why no llama-server is found, for tests that skip: with the tail of a failed
    `make test` build (`.venv-llama-server/build-failed`) when there is one."""
    reason = "llama-server is not built (make llama-server; or set FDD_LLAMA_SERVER)"
    failed = REPO_ROOT / DEFAULT_BUILD.parent.parent / "build-failed"
    if failed.is_file():
        tail = failed.read_text(errors="replace").strip().splitlines()[-3:]
        reason += "; its build failed: " + " | ".join(tail)
    return reason


def missing_binary_message(configured: str | None = None) -> str:
    tried = ", ".join(
        f"{src}: {p if p else 'not found'}" for src, p in binary_candidates(configured)
    )
    return (
        f"no llama-server executable (tried {tried}). Build it with `make llama-server` "
        f"(about 10 min of CPU time; docs/llama-server.md), set ${ENV_BINARY} or the "
        "config's `binary`, or use `backend: hf`"
    )


def resolve_gguf(model: str) -> Path:
    """The GGUF file for `model`: the embedded model's, or a path to a .gguf file."""
    from fdd_core.backends.configs import EMBEDDED_MODEL
    from fdd_core.models import embedded_gguf_path

    if model == EMBEDDED_MODEL:
        return embedded_gguf_path()
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    raise FileNotFoundError(
        f"backend 'llama-server' needs a GGUF file: model must be {EMBEDDED_MODEL!r} or the "
        f"path of a .gguf file, got {model!r}" + ("" if path.exists() else " (no such file)")
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """The server's environment: ours, with OMP_WAIT_POLICY=PASSIVE unless it is set.

    llama.cpp's CPU threads meet at an OpenMP barrier after every graph op. libgomp's
    default spins there; when the machine has more runnable threads than cores (a shared
    CI runner, other jobs), a spinning thread holds the core its partner needs, and
    decoding collapsed: 1.8 tokens/s with 2 threads against 22 tokens/s with PASSIVE
    (sleep at the barrier) and 41 tokens/s with 1 thread, at load average ~7 on 2 cores
    (docs/llama-server.md). Set OMP_WAIT_POLICY=ACTIVE yourself for a machine of your own.
    """
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_process(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """SIGTERM the process group, SIGKILL after timeout_s; the exit status (None: unknown)."""
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the server was started in a session of its own
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


class ManagedServer:
    """One llama-server process: start, wait for readiness, stop (idempotent)."""

    def __init__(
        self,
        binary: str | Path,
        gguf: str | Path,
        *,
        threads: int,
        parallel: int,
        ctx_per_slot: int,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        log_dir: str | Path | None = None,
    ) -> None:
        self.binary = str(binary)
        self.gguf = str(gguf)
        self.threads = threads
        self.parallel = parallel
        self.ctx_per_slot = ctx_per_slot
        self.extra_args = list(extra_args)
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._log_dir = Path(log_dir) if log_dir else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--model",
            self.gguf,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--threads-batch",
            str(self.threads),
            "--parallel",
            str(self.parallel),
            "--ctx-size",
            str(self.parallel * self.ctx_per_slot),
            "--cont-batching",
            "--alias",
            SERVED_NAME,
            "--no-webui",
            *self.extra_args,
        ]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def start(self) -> None:
        """Start the server and wait until /health says ready; LlamaServerError otherwise."""
        with self._lock:
            if self.proc is not None:
                raise RuntimeError("this server was already started")
            if self._log_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="fdd-llama-server-")
                self._log_dir = Path(self._tmp.name)
            self._log_dir.mkdir(parents=True, exist_ok=True)
            tries = 1 if self.port is not None else 3  # a fresh port if we lose a race for one
            for attempt in range(1, tries + 1):
                if tries > 1:
                    self.port = free_port(self.host)
                self.log_path = self._log_dir / f"llama-server-{self.port}.log"
                try:
                    self._start_once()
                    return
                except _PortTaken:
                    if attempt == tries:
                        raise LlamaServerError(
                            f"llama-server could not bind {self.host}:{self.port} after "
                            f"{tries} tries; log tail:\n{self.log_tail()}"
                        ) from None

    def _start_once(self) -> None:
        cmd = self.command()
        start = time.perf_counter()
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "wb") as logf:
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    env=server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole
                    preexec_fn=_die_with_parent if main_thread else None,
                )
            except OSError as exc:
                raise LlamaServerError(f"cannot run {self.binary}: {exc}") from None
        _LIVE.add(self)
        deadline = start + self.startup_timeout_s
        url = self.base_url + "/health"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    tail = self.log_tail()
                    self.stop()
                    low = tail.lower()
                    if "couldn't bind" in low or "address already in use" in low:
                        raise _PortTaken()
                    raise LlamaServerError(
                        f"llama-server {describe_exit(code)} before it was ready "
                        f"(command: {shlex.join(cmd)}); log tail:\n{tail}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass  # not listening yet, or still loading (503)
                if time.perf_counter() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise LlamaServerError(
                        f"llama-server did not become ready within {self.startup_timeout_s:g} s "
                        f"(command: {shlex.join(cmd)}); it was stopped. Log tail:\n{tail}",
                        retryable=True,
                    )
                time.sleep(0.1)
        self.startup_s = time.perf_counter() - start
        log.info(
            "llama-server ready on %s in %.1f s (pid %d)",
            self.base_url,
            self.startup_s,
            self.proc.pid,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise LlamaServerError(
                f"llama-server (pid {self.proc.pid}) {describe_exit(self.proc.returncode)}; "
                f"log tail:\n{self.log_tail()}",
                retryable=True,
            )

    def stop(self) -> int | None:
        """Stop the process (if any) and forget it; safe to call many times."""
        proc = self.proc
        code = _stop_process(proc, self.stop_timeout_s) if proc is not None else None
        _LIVE.discard(self)
        if self._tmp is not None and (proc is None or proc.poll() is not None):
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


# Every server still running, stopped at interpreter exit (weak: a collected backend's
# finalizer stops its own).
_LIVE: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class LlamaServerBackend(BackendBase):
    """A teacher served by a llama-server that this backend starts and stops itself."""

    name = "llama-server"

    def __init__(
        self,
        model: str,
        *,
        binary: str | None = None,
        threads: int | None = None,
        parallel: int = 16,
        ctx_per_slot: int = 2048,
        startup_timeout_s: float = 120.0,
        request_timeout_s: float = 300.0,
        max_retries: int = 2,
        extra_args: Sequence[str] = (),
        log_dir: str | None = None,
    ) -> None:
        path = find_binary(binary)
        if path is None:
            raise LlamaServerError(missing_binary_message(binary))
        try:
            gguf = resolve_gguf(model)
        except Exception as exc:
            raise LlamaServerError(str(exc)) from None
        self.model_id = model
        self.parallel = parallel
        self.server = ManagedServer(
            path,
            gguf,
            threads=threads or os.cpu_count() or 1,
            parallel=parallel,
            ctx_per_slot=ctx_per_slot,
            extra_args=extra_args,
            startup_timeout_s=startup_timeout_s,
            log_dir=log_dir,
        )
        self._finalizer = weakref.finalize(self, self.server.stop)
        self.server.start()
        self._request_timeout_s = request_timeout_s
        self._max_retries = max_retries
        self._clients: dict[tuple[str, int], Any] = {}  # (endpoint, requests in flight)
        self._clients_lock = threading.Lock()

    def _client(self, endpoint: str, concurrency: int):
        from fdd_core.backends.openai_api import OpenAIBackend

        with self._clients_lock:
            client = self._clients.get((endpoint, concurrency))
            if client is None:
                client = OpenAIBackend(
                    base_url=self.server.base_url + "/v1",
                    model=SERVED_NAME,
                    api_key_env="FDD_LLAMA_SERVER_NO_KEY",  # a local server: no key is sent
                    endpoint=endpoint,
                    max_concurrency=concurrency,
                    timeout_s=self._request_timeout_s,
                    max_retries=self._max_retries,
                )
                self._clients[(endpoint, concurrency)] = client
            return client

    @property
    def startup_s(self) -> float | None:
        return self.server.startup_s

    @property
    def stats(self) -> GenerationStats:
        total = GenerationStats()
        with self._clients_lock:
            clients = list(self._clients.values())
        for client in clients:
            s = client.stats
            total.prompts += s.prompts
            total.completions += s.completions
            total.prompt_tokens += s.prompt_tokens
            total.completion_tokens += s.completion_tokens
            for reason, count in s.retries.items():
                total.retries[reason] = total.retries.get(reason, 0) + count
        return total

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_id,
            "gguf": self.server.gguf,
            "binary": self.server.binary,
            "threads": self.server.threads,
            "parallel": self.parallel,
            "ctx_per_slot": self.server.ctx_per_slot,
        }

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order (see the module docstring)."""
        if self._closed:
            raise RuntimeError("LlamaServerBackend.generate called after close()")
        prompts = list(prompts)
        check_prompts(prompts)
        self.server.check_alive()
        out: list[list[Completion] | None] = [None] * len(prompts)
        for endpoint, want_text in (("completions", True), ("chat", False)):
            idx = [i for i, p in enumerate(prompts) if isinstance(p, str) is want_text]
            if not idx:
                continue
            # Each prompt takes n slots: keep just enough prompts in flight to fill them.
            client = self._client(endpoint, max(1, self.parallel // params.n))
            try:
                got = client.generate([prompts[i] for i in idx], params)
            except BackendError:
                self.server.check_alive()  # a dead server says so, with its log
                raise
            for i, row in zip(idx, got):
                out[i] = row
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._closed = True
        for client in list(getattr(self, "_clients", {}).values()):
            client.close()
        self._finalizer()

    def __enter__(self) -> LlamaServerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
