"""The `llama-server` backend: finding the binary, starting, readiness, stopping, routing.

Most tests run the lifecycle against a FAKE llama-server: a small Python HTTP script written
here (`FAKE_SERVER`) that takes llama-server's command line, answers /health (503 for a
while, then 200) and the two OpenAI endpoints with canned, labelled text. It proves the
process handling and the routing, not llama.cpp. The tests marked `server` start the REAL
llama-server binary (`make llama-server`) on the embedded GGUF and skip, saying so, when it
is not built.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fdd_core.backends import llama_server as ls
from fdd_core.backends.base import SamplingParams
from fdd_core.backends.configs import AutoConfig, HFConfig, LlamaServerConfig
from fdd_core.backends.llama_server import (
    LlamaServerBackend,
    LlamaServerError,
    find_binary,
    not_built_reason,
)

FAKE_SERVER = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
opt = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
mode = os.environ.get("FAKE_MODE", "ok")
print("fake llama-server (a test double, not llama.cpp) args:", " ".join(args), flush=True)
if mode == "crash":
    print("error: simulated failure to load model", flush=True)
    sys.exit(3)
ready_at = time.time() + float(os.environ.get("FAKE_LOAD_S", "0.3"))

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            ok = mode != "never_ready" and time.time() >= ready_at
            self._send(200 if ok else 503, {"status": "ok" if ok else "loading model"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = data.get("n", 1)
        if self.path == "/v1/completions":
            choices = [
                {"index": i, "text": f"completion[{data['prompt']}]#{i} seed={data.get('seed')}",
                 "finish_reason": "stop"} for i in range(n)]
        elif self.path == "/v1/chat/completions":
            choices = [
                {"index": i, "message": {"role": "assistant",
                 "content": f"chat[{data['messages'][-1]['content']}]#{i}"},
                 "finish_reason": "length"} for i in range(n)]
        else:
            return self._send(404, {"error": "not found"})
        self._send(200, {"choices": choices,
                         "usage": {"prompt_tokens": 5, "completion_tokens": 3 * n}})

ThreadingHTTPServer((opt["--host"], int(opt["--port"])), H).serve_forever()
"""


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def gguf(tmp_path: Path) -> str:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake")  # the fake server never reads it
    return str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- finding it


def test_find_binary_order(tmp_path, monkeypatch, fake_binary):
    monkeypatch.delenv(ls.ENV_BINARY, raising=False)
    monkeypatch.setattr(ls, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_binary() is None
    monkeypatch.setenv("PATH", str(fake_binary.parent))
    assert find_binary() == fake_binary  # PATH, last
    built = tmp_path / "repo" / ls.DEFAULT_BUILD
    built.parent.mkdir(parents=True)
    built.write_bytes(fake_binary.read_bytes())
    built.chmod(0o755)
    assert find_binary() == built  # the repository's build beats PATH
    other = tmp_path / "other-llama-server"
    other.write_bytes(b"#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv(ls.ENV_BINARY, str(other))
    assert find_binary() == other  # the environment beats the build
    assert find_binary(str(fake_binary)) == fake_binary  # the config beats everything
    monkeypatch.setenv(ls.ENV_BINARY, str(tmp_path / "nope"))
    assert find_binary() is None  # chosen explicitly: no silent fallback


def test_missing_binary_is_a_clear_error(tmp_path, gguf):
    missing = str(tmp_path / "no-such-llama-server")
    with pytest.raises(LlamaServerError, match=r"make llama-server") as info:
        LlamaServerBackend(gguf, binary=missing)
    assert missing in str(info.value)
    assert info.value.retryable is False


def test_model_must_be_a_gguf(fake_binary, tmp_path):
    with pytest.raises(LlamaServerError, match="GGUF file"):
        LlamaServerBackend(str(tmp_path / "model.bin"), binary=str(fake_binary))


# --------------------------------------------------------------------------- lifecycle


def test_start_generate_route_and_stop(fake_binary, gguf):
    backend = LlamaServerBackend(
        gguf, binary=str(fake_binary), threads=2, parallel=8, ctx_per_slot=256
    )
    try:
        pid = backend.server.proc.pid
        assert backend.server.running and backend.startup_s > 0
        assert backend.server.host == "127.0.0.1" and backend.server.port > 0
        cmd = backend.server.command()
        for flag, value in (("--threads", "2"), ("--parallel", "8"), ("--ctx-size", "2048")):
            assert cmd[cmd.index(flag) + 1] == value
        prompts = ["text one", [{"role": "user", "content": "hi"}], "text two"]
        out = backend.generate(prompts, SamplingParams(n=3, temperature=0.7, seed=1))
        assert [len(row) for row in out] == [3, 3, 3]
        assert out[0][0].text.startswith("completion[text one]#0")
        assert out[1][2].text == "chat[hi]#2" and out[1][2].finish_reason == "length"
        assert out[2][1].text.startswith("completion[text two]#1")
        assert sum(c.completion_tokens for row in out for c in row) == 27
        assert backend.stats.prompts == 3 and backend.stats.completions == 9
        assert backend.describe()["parallel"] == 8
    finally:
        backend.close()
    assert _wait_gone(pid)
    assert backend.closed
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        backend.generate(["x"], SamplingParams())


def test_server_that_dies_at_start_reports_status_and_log(fake_binary, gguf, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "crash")
    with pytest.raises(LlamaServerError) as info:
        LlamaServerBackend(gguf, binary=str(fake_binary))
    msg = str(info.value)
    assert "exited with code 3 before it was ready" in msg
    assert "simulated failure to load model" in msg  # the log tail
    assert "--parallel" in msg  # the command


def test_server_that_never_gets_ready_is_stopped(fake_binary, gguf, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "never_ready")
    started: list[int] = []
    real_start_once = ls.ManagedServer._start_once

    def spy(self):
        try:
            real_start_once(self)
        finally:
            started.append(self.proc.pid)

    monkeypatch.setattr(ls.ManagedServer, "_start_once", spy)
    t0 = time.perf_counter()
    with pytest.raises(LlamaServerError, match=r"did not become ready within 1\.5 s") as info:
        LlamaServerBackend(gguf, binary=str(fake_binary), startup_timeout_s=1.5)
    assert time.perf_counter() - t0 < 15
    assert info.value.retryable is True
    assert "fake llama-server" in str(info.value)  # the log tail
    assert started and _wait_gone(started[0])


def test_a_taken_port_is_a_clear_error(fake_binary, gguf):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ls.ManagedServer(
            fake_binary, gguf, threads=1, parallel=1, ctx_per_slot=64, port=port
        )
        with pytest.raises(LlamaServerError, match=f"could not bind 127.0.0.1:{port}"):
            server.start()
        assert not server.running


def test_exception_inside_with_stops_the_server(fake_binary, gguf):
    with pytest.raises(KeyboardInterrupt), LlamaServerBackend(gguf, binary=str(fake_binary)) as b:
        pid = b.server.proc.pid
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
    assert _wait_gone(pid)


def test_server_dying_between_calls_is_reported(fake_binary, gguf):
    backend = LlamaServerBackend(gguf, binary=str(fake_binary), max_retries=0)
    try:
        os.killpg(backend.server.proc.pid, signal.SIGKILL)
        backend.server.proc.wait(5)
        with pytest.raises(LlamaServerError, match=r"was killed by SIGKILL") as info:
            backend.generate(["x"], SamplingParams())
        assert "fake llama-server" in str(info.value)
    finally:
        backend.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from fdd_core.backends.llama_server import LlamaServerBackend
    b = LlamaServerBackend(sys.argv[1], binary=sys.argv[2])
    print(b.server.proc.pid, flush=True)
    if sys.argv[3] == "hang":
        time.sleep(600)
    # "exit": leave without close(): the atexit hook must stop the server
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_server_does_not_outlive_its_python(fake_binary, gguf, how):
    mode = "exit" if how == "exit" else "hang"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, gguf, str(fake_binary), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(proc.stdout.readline())
        if how == "sigkill":  # no Python code runs: the kernel's parent-death signal acts
            proc.kill()
        proc.wait(30)
        assert _wait_gone(pid), f"server {pid} outlived its parent ({how})"
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- config


def test_run_config_accepts_llama_server_teacher(fake_binary):
    from fdd_core.config import RunConfig
    from fdd_core.preflight import check_model

    cfg = RunConfig.model_validate(
        {"teacher": {"backend": "llama-server", "binary": str(fake_binary), "parallel": 32}}
    )
    assert isinstance(cfg.teacher, LlamaServerConfig) and cfg.teacher.parallel == 32
    assert cfg.teacher.n_samples == 4  # the teacher's own fields on top
    check_model("teacher", cfg.teacher, None)  # binary found, embedded GGUF resolves
    with pytest.raises(ValueError, match="parallel"):
        RunConfig.model_validate({"teacher": {"backend": "llama-server", "parallel": 0}})


def test_preflight_names_the_missing_binary(tmp_path):
    from fdd_core.config import ConfigError, RunConfig
    from fdd_core.preflight import check_model

    cfg = RunConfig.model_validate(
        {"teacher": {"backend": "llama-server", "binary": str(tmp_path / "none")}}
    )
    with pytest.raises(ConfigError, match=r"teacher.backend = 'llama-server'.*make llama-server"):
        check_model("teacher", cfg.teacher, None)


def test_student_cannot_be_llama_server():
    from fdd_core.config import ConfigError, RunConfig
    from fdd_core.preflight import preflight

    cfg = RunConfig.model_validate({"student": {"backend": "llama-server"}})
    with pytest.raises(ConfigError, match="student is trained here"):
        preflight(cfg)


def test_auto_picks_llama_server_only_where_usable(tmp_path, fake_binary, monkeypatch):
    from fdd_core.backends.registry import backend_spec, resolve_auto

    monkeypatch.setenv(ls.ENV_BINARY, str(fake_binary))
    on_cpu = AutoConfig(device="cpu", parallel=16)
    picked = resolve_auto(on_cpu)
    assert isinstance(picked, LlamaServerConfig) and picked.parallel == 16
    assert backend_spec(on_cpu).memo_key(on_cpu, None)[0] == "llama-server"
    assert backend_spec(on_cpu).uses_gpu(on_cpu) is False
    # No GGUF for a checkpoint folder, an adapter, or no binary: hf, with the hf fields.
    assert isinstance(resolve_auto(AutoConfig(device="cpu", model=str(tmp_path))), HFConfig)
    assert isinstance(resolve_auto(AutoConfig(device="cpu", adapter=str(tmp_path))), HFConfig)
    monkeypatch.setenv(ls.ENV_BINARY, str(tmp_path / "missing"))
    fallback = resolve_auto(AutoConfig(device="cpu", batch_size=32))
    assert isinstance(fallback, HFConfig) and fallback.batch_size == 32
    assert backend_spec(on_cpu).memo_key(on_cpu, None)[0] == "hf"


def test_auto_builds_the_picked_backend(fake_binary, monkeypatch):
    from fdd_core.backends import make_backend

    monkeypatch.setenv(ls.ENV_BINARY, str(fake_binary))
    backend = make_backend(AutoConfig(device="cpu", parallel=4))
    try:
        assert backend.name == "llama-server"  # what runs is recorded, not 'auto'
        out = backend.generate(["q"], SamplingParams(n=2, temperature=0.5))
        assert [c.text.split(" ")[0] for c in out[0]] == ["completion[q]#0", "completion[q]#1"]
    finally:
        backend.close()


# --------------------------------------------------------------------------- the real one

REAL = find_binary()
needs_real = pytest.mark.skipif(
    REAL is None,
    reason=not_built_reason(),
)


@pytest.mark.slow
@pytest.mark.server
@needs_real
def test_real_llama_server_generates_on_the_embedded_gguf():
    from fdd_core.prompts import program_completion_prompt, program_messages
    from fdd_core.stages import COMPLETION_STOP

    with LlamaServerBackend(
        "smollm2-135m-instruct", threads=2, parallel=8, ctx_per_slot=1024
    ) as backend:
        pid = backend.server.proc.pid
        sampled = SamplingParams(
            n=4, temperature=0.7, top_p=0.95, max_tokens=24, seed=0, stop=COMPLETION_STOP
        )
        question = "Tom has 3 apples and buys 5 more. How many apples does he have?"
        out = backend.generate(
            [program_completion_prompt(question), program_messages(question)], sampled
        )
        assert [len(row) for row in out] == [4, 4]
        texts = [c.text for c in out[0]]
        assert all(isinstance(t, str) for t in texts)
        assert len(set(texts)) > 1, f"4 seeded samples should differ: {texts}"
        assert sum(c.completion_tokens for row in out for c in row) > 0
        assert all(not any(s in t for s in COMPLETION_STOP) for t in texts)  # stops applied
        greedy = SamplingParams(max_tokens=8)
        a = backend.generate(["The capital of France is"], greedy)
        b = backend.generate(["The capital of France is"], greedy)
        assert a[0][0].text == b[0][0].text and a[0][0].text.strip()
    assert _wait_gone(pid)
