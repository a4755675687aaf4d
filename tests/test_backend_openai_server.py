"""OpenAIBackend against a real OpenAI-compatible server: llama.cpp's llama-server.

The server is the C++ `llama-server` binary that `make test` builds (`make llama-server`,
portable, pinned by constraints/llama-server.txt; FDD_LLAMA_SERVER names another build), on
the embedded GGUF, with an API key, started once for this module on 127.0.0.1 through
`ManagedServer` and always stopped. These tests drive it through the plain `openai` backend,
as a user pointing fdd at a server of their own would; tests/test_backend_llama_server.py
covers the backend that starts the server itself.

When the server process dies (a build that uses instructions this CPU lacks dies with
SIGILL on its first completion), a test fails with the process's exit signal or code and
the tail of its log, not only with the client's connection errors.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fdd_core.backends.base import SamplingParams
from fdd_core.backends.llama_server import ManagedServer, find_binary, not_built_reason
from fdd_core.backends.openai_api import OpenAIBackend, OpenAIBackendError
from fdd_core.procs import describe_exit

pytestmark = [pytest.mark.slow, pytest.mark.server]

MODEL_ALIAS = "smollm2-135m-instruct"
SERVER_KEY = "sk-llama-local-test-5a4b3c"  # this server's key, set for the backend by env var
KEY_ENV = "FDD_TEST_LLAMA_KEY"
START_TIMEOUT_S = 60.0


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
    """A running llama-server with an API key (stopped after the module)."""
    binary = find_binary()
    if binary is None:
        pytest.skip(not_built_reason())
    from fdd_core.models import ModelNotFoundError, embedded_gguf_path

    try:
        gguf = embedded_gguf_path()
    except ModelNotFoundError as exc:  # as conftest's embedded_model_dir does
        pytest.skip(str(exc))
    managed = ManagedServer(
        binary,
        gguf,
        threads=2,
        parallel=2,
        ctx_per_slot=1024,
        extra_args=["--alias", MODEL_ALIAS, "--api-key", SERVER_KEY],
        startup_timeout_s=START_TIMEOUT_S,
        log_dir=tmp_path_factory.mktemp("llama-server"),
    )
    managed.start()  # waits for /health; a server that dies first fails with its log
    try:
        yield Server(managed.base_url + "/v1", managed.proc, managed.log_path)
    finally:
        managed.stop()


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
