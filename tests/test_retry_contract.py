"""The retry contract: every backend error says whether a retry may cure it, in one way.

`tasks.common.is_transient` (the Prefect retry condition's test) reads the error's boolean
`retryable`; these tests build each backend's real errors (HTTP against a mock transport or
a port nobody listens on, the hf backend on a tiny model) and check the verdict, the details
kept on the error, the retry schedule and the log line that says what a shard waits for.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from types import SimpleNamespace

import httpx
import pytest

from fdd_core.backends.base import BackendError, SamplingParams, is_out_of_memory
from fdd_core.backends.openai_api import OpenAIBackend, OpenAIBackendError
from fdd_core.config import OrchestrationConfig
from tasks.common import is_transient, retry_on_transient, retry_schedule

PARAMS = SamplingParams(max_tokens=8)


def _backend(handler=None, *, url="http://127.0.0.1:9/v1", **kw) -> OpenAIBackend:
    transport = httpx.MockTransport(handler) if handler else None
    return OpenAIBackend(
        url,
        "m",
        api_key_env="FDD_TEST_NO_KEY",
        max_retries=kw.pop("max_retries", 2),
        backoff_base_s=0.0,
        transport=transport,
        **kw,
    )


def _fail(backend: OpenAIBackend) -> OpenAIBackendError:
    with pytest.raises(OpenAIBackendError) as info:
        backend.generate(["2 + 2?"], PARAMS)
    return info.value


def _status(code: int, headers=None):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json={"error": {"message": f"status {code}"}}, headers=headers)

    return handler


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused


# ------------------------------------------------------------------ openai backend errors


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_openai_5xx_after_retries_is_transient_and_keeps_status_attempts_reason(code):
    err = _fail(_backend(_status(code)))
    assert is_transient(err) and err.retryable
    assert (err.status, err.attempts, err.reason) == (code, 3, f"http_{code}")
    assert err.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    assert f"HTTP {code}" in str(err) and "3 attempts" in str(err)


def test_openai_429_after_retries_is_transient():
    err = _fail(_backend(_status(429, {"Retry-After": "0"})))
    assert is_transient(err)
    assert (err.status, err.reason) == (429, "http_429")


def test_openai_connection_refused_is_transient():
    port = _closed_port()
    err = _fail(_backend(url=f"http://127.0.0.1:{port}/v1", max_retries=1))
    assert is_transient(err)
    assert (err.status, err.attempts, err.reason) == (None, 2, "connection")
    assert err.endpoint == f"http://127.0.0.1:{port}/v1/chat/completions"
    assert "connection failed" in str(err)


def test_openai_timeout_is_transient():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2)
        return httpx.Response(200, json={})

    err = _fail(_backend(slow, timeout_s=0.05, max_retries=1))
    assert is_transient(err)
    assert (err.reason, err.attempts) == ("timeout", 2)


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_openai_4xx_is_permanent_after_one_attempt(code):
    err = _fail(_backend(_status(code)))
    assert not is_transient(err) and not err.retryable
    assert (err.status, err.attempts, err.reason) == (code, 1, "rejected")


def test_openai_bad_config_is_permanent():
    with pytest.raises(ValueError) as info:
        OpenAIBackend("ftp://nowhere", "m")
    assert not is_transient(info.value)
    with pytest.raises(ValueError) as info:
        _backend(max_concurrency=0)
    assert not is_transient(info.value)


def test_openai_error_survives_pickling_with_its_details():
    # Prefect pickles a failed task's exception into its result store.
    err = _fail(_backend(_status(503)))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is OpenAIBackendError and str(back) == str(err)
    assert (back.status, back.attempts, back.reason, back.retryable, back.endpoint) == (
        err.status,
        err.attempts,
        err.reason,
        True,
        err.endpoint,
    )


# ------------------------------------------------------------------ hf and vllm backends


def test_hf_out_of_memory_is_permanent(tiny_causal_dir):
    import torch

    from fdd_core.backends.hf import HFBackend

    backend = HFBackend(str(tiny_causal_dir), batch_size=2, device="cpu", progress=False)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    backend.model.forward = oom
    with pytest.raises(torch.OutOfMemoryError) as info:
        backend.generate(["1 + 1 ="], PARAMS)
    assert is_out_of_memory(info.value)
    assert not is_transient(info.value)
    wrapped = RuntimeError("shard failed")
    wrapped.__cause__ = info.value
    assert not is_transient(wrapped)


def test_hf_bad_config_is_permanent(tmp_path):
    from fdd_core.backends.hf import HFBackend
    from fdd_core.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as info:
        HFBackend(str(tmp_path / "no-such-model"), device="cpu", progress=False)
    assert not is_transient(info.value)


def test_vllm_missing_is_permanent():
    pytest.importorskip("fdd_core.backends.vllm_offline")
    from fdd_core.backends import vllm_offline

    try:
        vllm_offline._import_vllm()
    except ImportError as exc:
        assert not is_transient(exc)
    else:
        pytest.skip("vllm is installed here: the missing-package error cannot be raised")


# ------------------------------------------------------------------ the contract itself


def test_contract_reads_retryable_and_follows_explicit_causes():
    assert is_transient(BackendError("x", retryable=True))
    assert not is_transient(BackendError("x", retryable=False))
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(TimeoutError("slow"))
    assert not is_transient(ValueError("bad row 3"))
    assert not is_transient(KeyError("field"))
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as cause:
            raise RuntimeError("shard 2 failed") from cause
    except RuntimeError as exc:
        assert is_transient(exc)
    # The first link that says something decides: a permanent wrapper stays permanent.
    outer = BackendError("rejected", retryable=False)
    outer.__cause__ = ConnectionError("dropped")
    assert not is_transient(outer)
    # An error raised while handling another (implicit context) is judged on its own.
    try:
        try:
            raise TimeoutError("slow")
        except TimeoutError:
            raise ValueError("bad config") from None
    except ValueError as exc:
        assert not is_transient(exc)


def test_retry_schedule_fills_the_window_with_capped_backoff():
    retries, delays = retry_schedule(OrchestrationConfig())
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == 60.0 and delays[-1] == 60.0
    full = [min(60.0, 2.0 * 2**i) for i in range(retries)]
    assert sum(full) >= 1200 > sum(full[:-1])
    assert retries >= 3 and len(delays) == min(retries, 50)
    # No window: just the configured count.
    assert retry_schedule(OrchestrationConfig(retry_window_s=0, task_retries=2)) == (2, [2.0, 4.0])
    # A zero delay cannot fill a window: the count alone decides.
    assert retry_schedule(OrchestrationConfig(retry_delay_s=0, task_retries=1)) == (1, [0.0])
    # Tight test settings.
    retries, delays = retry_schedule(
        OrchestrationConfig(retry_delay_s=0.5, retry_max_delay_s=2, retry_window_s=60)
    )
    assert delays[:3] == [0.5, 1.0, 2.0] and sum(delays) >= 60 and retries == len(delays)


def _failed(exc):
    from prefect.states import Failed

    return Failed(data=exc, message=repr(exc))


def test_retry_condition_says_it_waits_for_the_teacher(caplog):
    err = _fail(_backend(_status(503)))
    task = SimpleNamespace(name="rationales", retries=16, retry_delay_seconds=[2.0, 4.0, 8.0])
    task_run = SimpleNamespace(name="rationales-r0-s3", run_count=2)
    with caplog.at_level(logging.WARNING):
        assert retry_on_transient(task, task_run, _failed(err)) is True
    text = caplog.text
    assert "waiting for the teacher at http://127.0.0.1:9/v1/chat/completions" in text
    assert "attempt 2 of at most 17" in text and "HTTP 503" in text
    assert "next attempt in about 4.0 s" in text


def test_retry_condition_refuses_permanent_errors_and_says_why(caplog):
    err = _fail(_backend(_status(400)))
    task = SimpleNamespace(name="label", retries=5, retry_delay_seconds=[1.0])
    task_run = SimpleNamespace(name="label-r1-s0", run_count=1)
    with caplog.at_level(logging.WARNING):
        assert retry_on_transient(task, task_run, _failed(err)) is False
    assert "not retrying label-r1-s0: permanent error" in caplog.text and "HTTP 400" in caplog.text


def test_gpu_tag_has_one_source():
    from deployments import deploy
    from fdd_core import tags
    from flows import common

    assert deploy.GPU_TAG is tags.GPU_TAG and common.GPU_TAG is tags.GPU_TAG
