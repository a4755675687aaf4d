"""A shard's time limit (fdd_core.deadline), enforced inside the work: a real local HTTP
server that never answers some prompts, the real `openai` backend, the request cache, and
the `hf` backend decoding a tiny random model."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fdd_core import deadline
from fdd_core.backends.base import SamplingParams
from fdd_core.backends.cache import RequestCache, cached_generate
from fdd_core.backends.openai_api import OpenAIBackend
from tasks.common import CACHE_POLICY, is_transient

PARAMS = SamplingParams(n=1, temperature=0.0, max_tokens=8)


# --------------------------------------------------------------------------- the limit


def test_limit_nests_to_the_earlier_end_and_check_raises_once_it_has_run_out():
    assert deadline.current() is None and deadline.remaining() is None
    deadline.check()  # no limit: nothing to raise
    with deadline.limit(None, "outer") as d:
        assert d is None
    with deadline.limit(10, "outer") as outer:
        assert 9 < deadline.remaining() <= 10
        with deadline.limit(100, "inner") as inner:
            assert inner is outer  # the earlier end is kept
        with deadline.limit(0.05, "inner") as inner:
            assert inner.what == "inner"
            time.sleep(0.1)
            with pytest.raises(deadline.WorkTimeout) as info:
                deadline.check("while testing")
            assert "inner: stopped by its time limit of 0.05 s" in str(info.value)
            assert "orchestration.shard_timeout_s" in str(info.value)
        assert deadline.current() is outer
        deadline.check()  # the outer limit has time left
    assert deadline.current() is None
    with pytest.raises(ValueError, match="must be > 0"), deadline.limit(0, "zero"):
        pass


def test_work_timeout_follows_the_retry_contract_and_survives_pickling():
    remote = deadline.WorkTimeout("t", retryable=True, endpoint="http://h/v1", partial=[None])
    local = deadline.WorkTimeout("t", retryable=False)
    assert is_transient(remote) and not is_transient(local)
    back = pickle.loads(pickle.dumps(remote))  # Prefect persists failed states
    assert (back.retryable, back.endpoint, back.partial, str(back)) == (
        True,
        "http://h/v1",
        [None],
        "t",
    )
    assert isinstance(back, TimeoutError)


def test_the_limit_stays_out_of_the_task_cache_keys():
    inputs = [p for p in CACHE_POLICY.policies if type(p).__name__ == "Inputs"]
    assert inputs and "shard_timeout_s" in inputs[0].exclude


# --------------------------------------------------------------------------- openai


class _Server:
    """A real HTTP server: answers at once, except prompts with "slow" while `hang` is set."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.sent: list[str] = []
        self.hung = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                if "slow" in text and outer.hang.is_set():
                    outer.hung += 1
                    while outer.hang.is_set():  # "never" answers: the client must give up
                        time.sleep(0.02)
                    return  # the client left long ago: nothing to answer
                outer.sent.append(text)
                data = json.dumps(
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"re: {text}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.hang.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _backend(url: str) -> OpenAIBackend:
    # A request timeout of a minute: only the shard's limit can stop the call in time.
    return OpenAIBackend(url, "m", api_key_env="FDD_TEST_NO_KEY", timeout_s=60, max_retries=0)


PROMPTS = [
    [{"role": "user", "content": "fast one"}],
    [{"role": "user", "content": "slow one"}],
    [{"role": "user", "content": "fast two"}],
]


def test_openai_call_is_stopped_by_the_limit_and_hands_back_what_was_answered(server):
    server.hang.set()
    backend = _backend(server.url)
    start = time.monotonic()
    with deadline.limit(1.0, "rationales-r0-s3"), pytest.raises(deadline.WorkTimeout) as info:
        backend.generate(PROMPTS, PARAMS)
    took = time.monotonic() - start
    exc = info.value
    assert took < 10, took  # not the request timeout of 60 s
    assert server.hung == 1
    assert exc.retryable and is_transient(exc)
    assert exc.endpoint == server.url + "/chat/completions"
    msg = str(exc)
    assert "rationales-r0-s3: stopped by its time limit of 1 s" in msg
    assert "2 of 3 prompts were answered" in msg and server.url in msg
    assert [p is not None for p in exc.partial] == [True, False, True]
    assert exc.partial[0][0].text == "re: fast one"


def test_openai_limit_also_holds_when_called_from_a_running_event_loop(server):
    server.hang.set()
    backend = _backend(server.url)

    async def inside_a_loop():  # generate() then runs its own loop in a thread of its own
        with deadline.limit(0.5, "label-r1-s0"):
            backend.generate(PROMPTS[1:2], PARAMS)

    with pytest.raises(deadline.WorkTimeout, match="label-r1-s0: stopped by its time limit"):
        asyncio.run(inside_a_loop())


def test_a_limit_already_spent_sends_nothing(server):
    backend = _backend(server.url)
    with deadline.limit(0.01, "grade-r1-s0"):
        time.sleep(0.05)
        with pytest.raises(deadline.WorkTimeout, match="before sending 3 prompts"):
            backend.generate(PROMPTS, PARAMS)
    assert server.sent == []


def test_request_cache_keeps_the_answers_of_an_interrupted_call(server, tmp_path):
    cache = RequestCache(tmp_path / "cache")
    backend = _backend(server.url)
    params = SamplingParams(n=1, temperature=0.0, max_tokens=8, seed=0)
    server.hang.set()
    usage: dict[str, int] = {}
    with deadline.limit(1.0, "synthesize-similar-r1-s0"), pytest.raises(deadline.WorkTimeout):
        cached_generate(backend, PROMPTS, params, cache=cache, usage=usage)
    assert usage["requests"] == 2  # the two answered prompts, counted
    assert sorted(server.sent) == ["fast one", "fast two"]
    server.hang.clear()  # the server answers again: the retry pays only for the rest
    out = cached_generate(backend, PROMPTS, params, cache=cache)
    assert sorted(server.sent) == ["fast one", "fast two", "slow one"]
    assert [o[0].text for o in out] == ["re: fast one", "re: slow one", "re: fast two"]


# --------------------------------------------------------------------------- hf


class _CountdownDeadline(deadline.Deadline):
    """Time is up after `checks` looks at the clock: deterministic on a loaded machine."""

    def __init__(self, checks: int) -> None:
        super().__init__(at=0.0, seconds=9.0, what="grade-r1-s2", setting="x.shard_timeout_s")
        object.__setattr__(self, "_left", [checks])

    def remaining(self) -> float:
        self._left[0] -= 1
        return 1.0 if self._left[0] >= 0 else -1.0


def test_hf_decoding_is_stopped_between_steps_and_keeps_finished_buckets(tiny_causal_dir):
    pytest.importorskip("torch")
    from fdd_core.backends.hf import HFBackend

    # One prompt per bucket, at most 3 steps each: the first bucket fits in 3 looks at the
    # clock, five buckets cannot.
    backend = HFBackend(str(tiny_causal_dir), batch_size=1, device="cpu", progress=False)
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(5)]
    params = SamplingParams(n=1, temperature=0.0, max_tokens=3)
    token = deadline._CURRENT.set(_CountdownDeadline(3))
    try:
        with pytest.raises(deadline.WorkTimeout) as info:
            backend.generate(prompts, params)
    finally:
        deadline._CURRENT.reset(token)
    exc = info.value
    assert not exc.retryable and not is_transient(exc)  # as slow again on a retry
    assert "grade-r1-s2: stopped by its time limit of 9 s" in str(exc)
    assert "decoded step" in str(exc)
    assert len(exc.partial) == 5
    done = [p for p in exc.partial if p is not None]
    assert 1 <= len(done) < 5
    assert all(len(p) == 1 and p[0].completion_tokens <= 3 for p in done)
    # Without a limit the same call completes.
    assert len(backend.generate(prompts, params)) == 5
