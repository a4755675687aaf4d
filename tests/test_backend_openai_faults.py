"""OpenAIBackend against a real local HTTP server that injects faults (tests/servers/faulty.py).

Every prompt must end with exactly its n completions, in order, each identical to the
server's deterministic text: nothing lost, duplicated or swapped, whatever failed on the way.
"""

from __future__ import annotations

import logging
import pickle
import time
import traceback

import pytest

from fdd_core.backends.base import SamplingParams, derive_seed
from fdd_core.backends.openai_api import OpenAIBackend, OpenAIBackendError
from tests.servers.faulty import FAULT_KINDS, FaultPlan, FaultyServer, expected_text

# Which retry reason each injected fault must show up as in backend.stats.retries.
REASON_OF = {
    "http_500": "http_500",
    "http_429": "http_429",
    "hang": "timeout",
    "drop": "connection",
    "bad_json": "invalid_json",
    "no_choices": "bad_response",
}
FAKE_KEY = "sk-fdd-TEST-9f8e7d6c5b4a-DO-NOT-LEAK"


def _backend(srv: FaultyServer, **kw) -> OpenAIBackend:
    opts = {
        "api_key_env": "FDD_TEST_OPENAI_KEY",
        "max_concurrency": 16,
        "timeout_s": 0.5,
        "max_retries": 6,
        "backoff_base_s": 0.002,
        "backoff_max_s": 0.02,
    }
    opts.update(kw)
    return OpenAIBackend(srv.base_url, srv.model, **opts)


def _prompts(count: int) -> list[str]:
    prompts = [f"Problem {i}: Ann has {i} apples and buys {i % 7 + 2} more." for i in range(count)]
    return prompts + prompts[:3]  # repeated prompts must keep their own slots


@pytest.mark.server
@pytest.mark.parametrize("endpoint, count", [("chat", 300), ("completions", 120)])
def test_faults_lose_duplicate_and_reorder_nothing(endpoint, count, monkeypatch):
    monkeypatch.delenv("FDD_TEST_OPENAI_KEY", raising=False)
    plan = FaultPlan(rate=0.3, seed=11, max_consecutive=3, hang_s=1.5)
    prompts = _prompts(count)
    params = SamplingParams(n=3, temperature=0.7, top_p=0.95, max_tokens=48, seed=1234)
    with FaultyServer(plan, reverse_choices=True) as srv:
        backend = _backend(srv, endpoint=endpoint)
        start = time.perf_counter()
        out = backend.generate(prompts, params)
        elapsed = time.perf_counter() - start

    expected = [
        [expected_text(p, derive_seed(params.seed, p, 0), i) for i in range(params.n)]
        for p in prompts
    ]
    assert [[c.text for c in row] for row in out] == expected
    retries = backend.stats.retries
    print(
        f"\n{endpoint}: {len(prompts)} prompts x n={params.n} in {elapsed:.2f} s; "
        f"injected {dict(srv.injected)}; client retries {retries}"
    )
    for kind in FAULT_KINDS:
        reason = REASON_OF[kind]
        assert srv.injected[kind] >= 1, f"plan never injected {kind}: make the test stronger"
        assert retries.get(reason, 0) >= 1, f"{kind} was injected but never retried: {retries}"
    # Faults that arrive as complete answers are never invented by the client; on a slow
    # machine one may be seen as a timeout instead (the client gave up first), so every
    # injected fault shows up as some retry, but not always under its own reason.
    for kind in ("http_500", "http_429", "bad_json", "no_choices"):
        assert retries[REASON_OF[kind]] <= srv.injected[kind], (kind, retries, srv.injected)
    assert sum(retries.values()) >= sum(srv.injected.values())
    assert backend.stats.failed_requests == {}
    assert backend.stats.n_fallback_prompts == 0  # this server takes n
    assert backend.stats.completions == params.n * len(prompts)
    assert backend.stats.requests == len(prompts) + sum(retries.values())
    assert all(body.get("n") == params.n for body in srv.bodies)
    assert all(c.finish_reason == "stop" for row in out for c in row)


@pytest.mark.server
def test_bad_request_fails_fast_without_retry(monkeypatch):
    monkeypatch.delenv("FDD_TEST_OPENAI_KEY", raising=False)
    with FaultyServer() as srv:
        backend = _backend(srv)
        with pytest.raises(OpenAIBackendError) as info:
            backend.generate(["fine", "broken [[status=400]]"], SamplingParams())
    err = info.value
    assert err.status == 400 and err.attempts == 1 and not err.retryable
    assert "forced status 400" in str(err)  # the server's own message
    assert "/v1/chat/completions" in str(err)
    assert backend.stats.retries == {}
    assert sum(1 for b in srv.bodies if "[[status=400]]" in b["messages"][0]["content"]) == 1


@pytest.mark.server
def test_transient_error_past_max_retries_names_path_status_and_attempts(monkeypatch):
    monkeypatch.delenv("FDD_TEST_OPENAI_KEY", raising=False)
    with FaultyServer() as srv:
        backend = _backend(srv, max_retries=3, endpoint="completions")
        with pytest.raises(OpenAIBackendError) as info:
            backend.generate(["always down [[status=503]]"], SamplingParams())
    msg = str(info.value)
    assert "/v1/completions" in msg and "HTTP 503" in msg and "4 attempts" in msg, msg
    assert info.value.attempts == 4 and info.value.status == 503
    assert backend.stats.retries == {"http_503": 3}
    assert backend.stats.failed_requests == {"http_503": 1}
    assert srv.statuses[503] == 4


@pytest.mark.server
def test_retry_after_is_honoured_and_capped(monkeypatch):
    monkeypatch.delenv("FDD_TEST_OPENAI_KEY", raising=False)
    with FaultyServer() as srv:
        backend = _backend(srv, retry_after_max_s=5.0)
        start = time.perf_counter()
        backend.generate(["wait a bit [[retry-after=0.4]]"], SamplingParams())
        honoured = time.perf_counter() - start

        capped = _backend(srv, retry_after_max_s=0.1)
        start = time.perf_counter()
        capped.generate(["wait an hour [[retry-after=3600]]"], SamplingParams())
        cap_elapsed = time.perf_counter() - start
    # Jittered backoff alone would wait at most backoff_max_s = 0.02 s.
    assert honoured >= 0.4, honoured
    assert cap_elapsed < 2.0, cap_elapsed
    assert backend.stats.retries == {"http_429": 1} and capped.stats.retries == {"http_429": 1}


@pytest.mark.server
def test_api_key_never_leaks_into_errors_repr_logs_or_pickles(monkeypatch, caplog):
    monkeypatch.setenv("FDD_TEST_OPENAI_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    # The server wants another key and echoes the Authorization header it got in its 401.
    with FaultyServer(api_key="sk-the-right-one") as srv:
        backend = _backend(srv, max_retries=2)
        with pytest.raises(OpenAIBackendError) as unauthorized:
            backend.generate(["hello"], SamplingParams())
    # A transient failure path too: the key is accepted, then 500s until retries run out.
    with FaultyServer(api_key=FAKE_KEY) as srv2:
        backend2 = _backend(srv2, max_retries=2)
        with pytest.raises(OpenAIBackendError) as exhausted:
            backend2.generate(["x [[status=500]]"], SamplingParams())
    assert srv.auth_headers[0] == f"Bearer {FAKE_KEY}"  # the key was really sent
    assert srv2.statuses[500] == 3
    err = unauthorized.value
    assert err.status == 401 and err.attempts == 1
    assert "Incorrect API key provided" in str(err) and "FDD_TEST_OPENAI_KEY" in str(err)
    texts = [
        str(err),
        repr(err),
        "".join(traceback.format_exception(err)),
        str(exhausted.value),
        "".join(traceback.format_exception(exhausted.value)),
        repr(backend),
        str(backend.describe()),
        repr(vars(backend)),
        caplog.text,
    ]
    for text in texts:
        assert FAKE_KEY not in text
        assert FAKE_KEY[8:24] not in text  # not even a fragment of it
    assert FAKE_KEY.encode() not in pickle.dumps(backend._key)
