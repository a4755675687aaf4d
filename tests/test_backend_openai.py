"""OpenAIBackend units: request bodies, n fallback, mapping, concurrency, event loops, retry timing.

Most tests talk to the real local test server (tests/servers/faulty.py) over a socket;
a few response shapes no sane server sends are fed through httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from fdd_core.backends.base import Backend, SamplingParams, derive_seed
from fdd_core.backends.openai_api import OpenAIBackend, OpenAIBackendError, public_url
from fdd_core.backends.retry import (
    RetryPolicy,
    backoff_ceiling,
    is_retryable_status,
    parse_retry_after,
    retry_delay,
)
from tests.servers.faulty import FaultyServer, expected_text

KEY_ENV = "FDD_TEST_OPENAI_KEY"


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def srv():
    with FaultyServer() as server:
        yield server


def _backend(base_url: str, **kw) -> OpenAIBackend:
    opts = {
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
    }
    opts.update(kw)
    return OpenAIBackend(base_url, "faulty-model", **opts)


# ---------------------------------------------------------------- retry timing (pure)


def test_backoff_ceiling_doubles_then_caps():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0)
    assert [backoff_ceiling(i, policy) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_ceiling(10_000, policy) == 4.0  # no overflow


def test_full_jitter_spreads_over_zero_to_ceiling():
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=100.0)
    rng = random.Random(0)
    draws = [retry_delay(3, policy, None, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert min(draws) < 0.5 and max(draws) > 7.5  # spread over the whole range
    assert 3.5 < sum(draws) / len(draws) < 4.5


def test_retry_after_wins_over_jitter_and_is_capped():
    policy = RetryPolicy(backoff_base_s=100.0, backoff_max_s=100.0, retry_after_max_s=10.0)
    assert retry_delay(0, policy, 2.5) == 2.5
    assert retry_delay(0, policy, 0.0) == 0.0
    assert retry_delay(0, policy, 3600.0) == 10.0


def test_parse_retry_after_forms():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    earlier = (now - timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(later, now) == pytest.approx(30.0)
    assert parse_retry_after(earlier, now) == 0.0
    for bad in (None, "", "soon", "-3", "nan", "inf"):
        assert parse_retry_after(bad, now) is None, bad


def test_retryable_statuses():
    assert [
        s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503) if is_retryable_status(s)
    ] == [408, 409, 429, 500, 502, 503]


def test_retry_policy_validates():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="backoff_base_s"):
        RetryPolicy(backoff_base_s=float("nan"))


# ---------------------------------------------------------------- construction


def test_constructor_validates_and_is_a_backend():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend("localhost:8000", "m")
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", endpoint="responses")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", max_concurrency=0)
    b = OpenAIBackend("http://127.0.0.1:1/v1/", "m")
    assert isinstance(b, Backend) and b.name == "openai" and b.model_id == "m"
    assert b.url == "http://127.0.0.1:1/v1/chat/completions"


def test_public_url_strips_credentials():
    assert public_url("https://user:pw@host.example:8443/v1?key=abc#x") == (
        "https://host.example:8443/v1"
    )
    b = OpenAIBackend("https://user:pw@host.example/v1?key=abc", "m")
    assert "pw" not in repr(b) and "abc" not in repr(b) and "pw" not in str(b.describe())


# ---------------------------------------------------------------- request bodies


def test_chat_request_carries_every_sampling_field(srv, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-local")
    params = SamplingParams(
        n=1, temperature=0.5, top_p=0.9, max_tokens=77, stop=("\n\n", "END"), seed=42
    )
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    out = _backend(srv.base_url).generate(["what is 1+1?", chat], params)
    # The two requests are in flight at once: the server may receive them in either order.
    first, second = sorted(srv.bodies, key=lambda b: len(b["messages"]))
    assert first == {
        "model": "faulty-model",
        "max_tokens": 77,
        "temperature": 0.5,
        "top_p": 0.9,
        "messages": [{"role": "user", "content": "what is 1+1?"}],
        "stop": ["\n\n", "END"],
        "seed": derive_seed(42, "what is 1+1?", 0),
    }
    assert second["messages"] == chat and second["seed"] == derive_seed(42, chat, 0)
    assert srv.auth_headers == ["Bearer sk-local"] * 2
    assert out[0][0].text == expected_text("what is 1+1?", first["seed"], 0)
    assert out[1][0].text == expected_text("be brief\n2+2?", second["seed"], 0)


def test_greedy_without_seed_or_stop_omits_them_and_sends_no_key(srv):
    _backend(srv.base_url).generate(["q"], SamplingParams(max_tokens=5))
    (body,) = srv.bodies
    assert "seed" not in body and "stop" not in body and "n" not in body
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5
    assert srv.auth_headers == [None]


def test_completions_endpoint_sends_prompt_text(srv):
    b = _backend(srv.base_url, endpoint="completions")
    out = b.generate(["x = 1\n"], SamplingParams(n=2, temperature=1.0, seed=3))
    (body,) = srv.bodies
    assert body["prompt"] == "x = 1\n" and body["n"] == 2 and "messages" not in body
    seed = derive_seed(3, "x = 1\n", 0)
    assert [c.text for c in out[0]] == [expected_text("x = 1\n", seed, i) for i in range(2)]


def test_completions_endpoint_rejects_chat_prompts_before_sending(srv):
    b = _backend(srv.base_url, endpoint="completions")
    with pytest.raises(ValueError, match="prompt 1 is a list of chat messages.*endpoint 'chat'"):
        b.generate(["fine", [{"role": "user", "content": "hi"}]], SamplingParams())
    assert srv.bodies == []


def test_malformed_chat_prompt_names_the_message(srv):
    with pytest.raises(ValueError, match="prompt 0, message 1"):
        _backend(srv.base_url).generate(
            [[{"role": "user", "content": "a"}, {"role": "x"}]], SamplingParams()
        )
    assert srv.bodies == []


def test_no_prompts_means_no_requests(srv):
    assert _backend(srv.base_url).generate([], SamplingParams()) == []
    assert srv.bodies == []


# ---------------------------------------------------------------- n samples


@pytest.mark.parametrize("n_mode", ["ignore", "reject"])
def test_n_falls_back_to_one_request_per_sample_and_remembers(n_mode):
    params = SamplingParams(n=4, temperature=0.9, seed=5)
    prompts = ["a", "b", "c"]
    with FaultyServer(n_mode=n_mode) as srv:
        b = _backend(srv.base_url, max_concurrency=1)  # one at a time: learnt after prompt "a"
        out = b.generate(prompts, params)
        assert b.supports_n is False
        first_round = len(srv.bodies)
        again = b.generate(prompts, params)
        later = srv.bodies[first_round:]
    expected = [[expected_text(p, derive_seed(5, p, i), 0) for i in range(4)] for p in prompts]
    assert [[c.text for c in row] for row in out] == expected
    assert [[c.text for c in row] for row in again] == expected  # same samples once learnt
    assert first_round == 1 + 3 * 4  # one n-request for "a", then 4 per prompt
    assert len(later) == 12 and all("n" not in body for body in later)
    assert b.stats.n_fallback_prompts == 6


def test_n_is_used_when_the_server_supports_it(srv):
    b = _backend(srv.base_url)
    out = b.generate(["p", "q"], SamplingParams(n=3, temperature=1.0, seed=1))
    assert b.supports_n is True
    assert len(srv.bodies) == 2 and all(body["n"] == 3 for body in srv.bodies)
    assert [len(row) for row in out] == [3, 3]


def test_a_400_unrelated_to_n_still_fails_and_does_not_teach_no_n(srv):
    b = _backend(srv.base_url)
    with pytest.raises(OpenAIBackendError) as info:
        b.generate(["x [[status=400]]"], SamplingParams(n=2, temperature=1.0))
    assert info.value.status == 400
    assert b.supports_n is None
    assert isinstance(info.value.__cause__, OpenAIBackendError)  # the n-request's own 400


# ---------------------------------------------------------------- mapping


def test_finish_reason_and_usage_are_mapped(srv):
    b = _backend(srv.base_url)
    prompt = "long one [[finish=length]]"
    out = b.generate([prompt, "short"], SamplingParams(n=3, temperature=1.0, seed=9))
    assert [c.finish_reason for c in out[0]] == ["length"] * 3
    assert [c.finish_reason for c in out[1]] == ["stop"] * 3
    # The test server's usage: prompt_tokens = len(prompt), completion_tokens = total chars.
    assert {c.prompt_tokens for c in out[0]} == {len(prompt)}
    assert sum(c.completion_tokens for c in out[0]) == sum(len(c.text) for c in out[0])
    assert b.stats.prompt_tokens == len(prompt) + len("short")
    assert b.stats.completion_tokens == sum(len(c.text) for row in out for c in row)
    assert b.stats.prompts == 2 and b.stats.completions == 6 and b.stats.requests == 2


def _mock_backend(handler, **kw) -> OpenAIBackend:
    return _backend("http://mock.invalid/v1", transport=httpx.MockTransport(handler), **kw)


def test_odd_but_valid_choices_are_mapped():
    def handler(request):
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "message": {"role": "assistant", "content": "second"},
                        "index": 1,
                        "finish_reason": "content_filter",
                    },
                    {
                        "message": {"role": "assistant", "content": None},
                        "index": 0,
                        "finish_reason": "something_new",
                    },
                    {"message": {"role": "assistant", "content": "extra"}, "index": 2},
                ]
            },
        )  # no usage at all

    (row,) = _mock_backend(handler).generate(["p"], SamplingParams(n=2, temperature=1.0))
    assert [(c.text, c.finish_reason) for c in row] == [("", "stop"), ("second", "error")]
    assert all(c.prompt_tokens == 0 and c.completion_tokens == 0 for c in row)


def test_choice_shapes_that_are_broken_are_retried_then_reported():
    bodies = iter(
        [
            {"choices": "nope"},
            [1, 2],
            {"choices": [{"index": 0}]},
            {"error": {"message": "overloaded"}},
        ]
    )

    def handler(request):
        return httpx.Response(200, json=next(bodies))

    b = _mock_backend(handler, max_retries=3)
    with pytest.raises(OpenAIBackendError, match="4 attempts.*no choices.*overloaded"):
        b.generate(["p"], SamplingParams())
    assert b.stats.retries == {"bad_response": 3}


def test_refused_connection_is_retried_as_connection_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = _backend(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(OpenAIBackendError, match="3 attempts.*connection") as info:
        b.generate(["p"], SamplingParams())
    assert info.value.status is None and b.stats.retries == {"connection": 2}


# ---------------------------------------------------------------- concurrency and loops


def test_requests_in_flight_are_bounded(srv):
    b = _backend(srv.base_url, max_concurrency=3)
    prompts = [f"slow {i} [[delay=0.1]]" for i in range(12)]
    start = time.perf_counter()
    out = b.generate(prompts, SamplingParams())
    elapsed = time.perf_counter() - start
    assert [row[0].text for row in out] == [
        expected_text(p, None, 0) for p in prompts
    ]  # order kept although answers arrive out of order
    assert 2 <= srv.max_inflight <= 3
    assert elapsed >= 0.4  # 12 requests of 0.1 s, three at a time


def test_generate_inside_a_running_event_loop(srv):
    b = _backend(srv.base_url)

    async def caller():
        return b.generate(["from a coroutine"], SamplingParams())

    out = asyncio.run(caller())
    assert out[0][0].text == expected_text("from a coroutine", None, 0)


def test_generate_from_a_thread_while_the_main_thread_runs_a_loop(srv):
    b = _backend(srv.base_url)
    ticks = []

    async def main():
        async def ticker():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        tick_task = asyncio.ensure_future(ticker())
        result = await asyncio.to_thread(b.generate, ["t [[delay=0.2]]"], SamplingParams())
        tick_task.cancel()
        return result

    out = asyncio.run(main())
    assert out[0][0].text == expected_text("t [[delay=0.2]]", None, 0)
    assert len(ticks) >= 5  # the main loop kept running while the thread generated


def test_concurrent_calls_from_threads_share_one_backend(srv):
    b = _backend(srv.base_url)
    results: dict[int, list] = {}

    def work(i):
        results[i] = b.generate([f"thread {i}"], SamplingParams())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: r[0][0].text for i, r in results.items()} == {
        i: expected_text(f"thread {i}", None, 0) for i in range(4)
    }
    assert b.stats.prompts == 4 and b.stats.requests == 4


def test_close_refuses_further_calls(srv):
    b = _backend(srv.base_url)
    b.close()
    with pytest.raises(RuntimeError, match="after close"):
        b.generate(["p"], SamplingParams())


def test_describe_is_json_safe_and_names_only_the_variable(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret-value-123")
    b = _backend("http://127.0.0.1:9/v1")
    desc = b.describe()
    assert json.loads(json.dumps(desc))["api_key_env"] == KEY_ENV
    assert "sk-secret-value-123" not in json.dumps(desc) + repr(b)
    assert "api_key=set" in repr(b)
