"""OpenAIBackend against a real OpenAI-compatible server: llama-cpp-python on the embedded GGUF.

The server runs from its own environment (`make .venv-llama/.fdd-installed`, a portable
build pinned by constraints/llama.txt, or FDD_LLAMA_PYTHON pointing to an interpreter that
has `llama-cpp-python[server]`), as a subprocess on 127.0.0.1, started once for this module
and always terminated. llama.cpp ignores `n`, so the backend's per-sample fallback is
exercised for real here.

When the server process dies (a build that uses instructions this CPU lacks dies with
SIGILL on its first completion), a test fails with the process's exit signal or code and
the tail of its log, not only with the client's connection errors.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fdd_core.backends.base import SamplingParams
from fdd_core.backends.openai_api import OpenAIBackend, OpenAIBackendError
from fdd_core.procs import describe_exit

pytestmark = [pytest.mark.slow, pytest.mark.server]

REPO = Path(__file__).resolve().parents[1]
LLAMA_VENV = REPO / ".venv-llama"
MODEL_ALIAS = "smollm2-135m-instruct"
SERVER_KEY = "sk-llama-local-test-5a4b3c"  # this server's key, set for the backend by env var
KEY_ENV = "FDD_TEST_LLAMA_KEY"
START_TIMEOUT_S = 60.0


def _llama_python() -> str:
    """The interpreter with llama-cpp-python, or skip saying why it is not there."""
    override = os.environ.get("FDD_LLAMA_PYTHON")
    if override:
        return override  # chosen explicitly: a broken one must fail, not skip
    failed = LLAMA_VENV / "install-failed"
    if failed.is_file():
        reason = failed.read_text(errors="replace").strip().splitlines()[-3:]
        pytest.skip(
            f"llama-cpp-python could not be installed into {LLAMA_VENV}: " + " | ".join(reason)
        )
    python = LLAMA_VENV / "bin" / "python"
    if not python.is_file() or not (LLAMA_VENV / ".fdd-installed").is_file():
        pytest.skip(
            f"no llama.cpp environment at {LLAMA_VENV} (create it with "
            "`make .venv-llama/.fdd-installed`, or set FDD_LLAMA_PYTHON)"
        )
    return str(python)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen
    log_path: Path

    def death(self) -> str | None:
        """What happened to the process, with its log's tail; None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        return f"llama.cpp server {describe_exit(code)}; last lines of its log:\n" + log_tail(
            self.log_path
        )


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<log unreadable: {exc}>"


class WatchedBackend(OpenAIBackend):
    """The real backend; a failure while the server is dead says how the server died."""

    def __init__(self, server: Server, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._server = server

    def generate(self, *args, **kwargs):
        try:
            return super().generate(*args, **kwargs)
        except Exception as exc:
            death = self._server.death()
            if death is not None:
                raise AssertionError(f"{death}\n(client error: {exc})") from exc
            raise


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """A running llama.cpp OpenAI-compatible server (stopped after the module)."""
    python = _llama_python()
    from fdd_core.models import ModelNotFoundError, embedded_gguf_path

    try:
        gguf = embedded_gguf_path()
    except ModelNotFoundError as exc:  # as conftest's embedded_model_dir does
        pytest.skip(str(exc))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        python, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--chat_format", "chatml",
        "--n_threads", "2",
        "--api_key", SERVER_KEY,
        "--verbose", "False",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}/v1", proc, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(proc)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    headers = {"Authorization": f"Bearer {SERVER_KEY}"}
    while time.monotonic() < deadline:
        death = server.death()
        if death is not None:
            pytest.fail(f"{death}\n(before it answered /v1/models)")
        try:
            r = httpx.get(f"{server.base_url}/models", headers=headers, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(
        f"llama.cpp server not ready within {START_TIMEOUT_S:.0f} s:\n{log_tail(server.log_path)}"
    )


@pytest.fixture
def backend_factory(llama_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)

    def make(**kw) -> OpenAIBackend:
        opts = {"api_key_env": KEY_ENV, "max_concurrency": 4, "timeout_s": 120.0}
        opts.update(kw)
        return WatchedBackend(llama_server, llama_server.base_url, MODEL_ALIAS, **opts)

    return make


def test_chat_greedy_answers_with_usage(backend_factory):
    backend = backend_factory()
    out = backend.generate(
        ["What is 2 + 3? Answer with a number.", [{"role": "user", "content": "Say hello."}]],
        SamplingParams(max_tokens=8),
    )
    assert [len(row) for row in out] == [1, 1]
    for (c,) in out:
        assert c.text.strip(), out
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 8
    assert backend.stats.requests == 2 and backend.stats.retries == {}
    again = backend.generate(["What is 2 + 3? Answer with a number."], SamplingParams(max_tokens=8))
    assert again[0][0].text == out[0][0].text  # greedy is deterministic


def test_completions_max_tokens_and_stop(backend_factory):
    backend = backend_factory(endpoint="completions")
    prompt = "1, 2, 3, 4,"
    (row,) = backend.generate([prompt], SamplingParams(max_tokens=10))
    free = row[0]
    assert free.finish_reason == "length" and free.completion_tokens == 10
    # Stop at a piece of the free-running text: the stopped answer is the text before it.
    words = free.text.split()
    assert len(words) >= 3, free.text
    stop = " " + words[2]
    cut = free.text.index(stop)
    ((stopped,),) = backend.generate([prompt], SamplingParams(max_tokens=10, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]


def test_n_samples_fall_back_per_sample_and_are_seeded(backend_factory):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_tokens=6, seed=123)

    def one_round():
        # llama.cpp reuses the KV cache of the previous request, which changes sampled text;
        # a fresh backend (same request sequence) after the same greedy request makes two
        # rounds see the same server state, so only the seeds decide the samples.
        backend = backend_factory(max_concurrency=1)
        backend.generate(["Reply with OK."], SamplingParams(max_tokens=2))
        return backend, backend.generate(["Name a colour."], params)

    backend, out = one_round()
    assert [len(row) for row in out] == [3]
    assert backend.supports_n is False  # llama.cpp answers one choice whatever n says
    assert backend.stats.n_fallback_prompts == 1
    assert backend.stats.requests == 1 + 1 + 3  # warm-up, the n probe, one per sample
    assert len({c.text for c in out[0]}) >= 2  # distinct seeds give distinct samples
    _, again = one_round()
    assert [c.text for c in again[0]] == [c.text for c in out[0]]


def test_wrong_key_gets_401_without_the_key_in_the_error(backend_factory, monkeypatch):
    wrong = "sk-wrong-key-for-llama-0123456789"
    monkeypatch.setenv("FDD_TEST_LLAMA_WRONG_KEY", wrong)
    backend = backend_factory(api_key_env="FDD_TEST_LLAMA_WRONG_KEY")
    with pytest.raises(OpenAIBackendError) as info:
        backend.generate(["hi"], SamplingParams(max_tokens=2))
    assert info.value.status == 401 and info.value.attempts == 1
    assert wrong not in str(info.value) and wrong not in repr(backend)
    assert "FDD_TEST_LLAMA_WRONG_KEY" in str(info.value)


def test_server_death_is_reported_with_its_signal_and_log(tmp_path):
    """The watcher's message names the signal and the log, for a process that really died."""
    log = tmp_path / "server.log"
    log.write_text("loading model\nIllegal instruction\n")
    proc = subprocess.Popen(["sh", "-c", "kill -ILL $$"])
    proc.wait(timeout=10)
    message = Server("http://127.0.0.1:9/v1", proc, log).death()
    assert message is not None
    assert "killed by SIGILL (-4)" in message and "Illegal instruction" in message
    assert describe_exit(3) == "exited with code 3"
