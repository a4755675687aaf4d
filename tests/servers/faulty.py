"""A deterministic OpenAI-compatible HTTP server that fails on purpose (for client tests).

`FaultyServer` serves `/v1/chat/completions`, `/v1/completions` and `/v1/models` on
127.0.0.1 (a free port) from a stdlib `ThreadingHTTPServer` in a background thread. Its
answers are a pure function of the request: choice `i` of a prompt is
`expected_text(prompt_text, seed, i)`, so a client's output can be checked exactly.

Faults, chosen per attempt from a hash of (plan seed, request body, attempt number), so a
run is repeatable whatever the thread timing:

- `http_500`: a 500 with an OpenAI-style error body;
- `http_429`: a 429 with `Retry-After: 0`;
- `hang`: no answer until `hang_s` has passed (past the client's timeout), then a close;
- `drop`: headers and half of a good body, then the connection is shut;
- `bad_json`: a 200 whose body is cut-off JSON;
- `no_choices`: a 200 with valid JSON and an empty `choices` list.

At most `max_consecutive` attempts of the same body fail in a row, so a client with more
retries than that always gets through. Markers in the prompt text force behaviour:
`[[status=N]]` (always answer N), `[[retry-after=S]]` (first attempt: 429 with
`Retry-After: S`), `[[finish=length]]`, `[[delay=S]]` (answer after S seconds).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_KINDS = ("http_500", "http_429", "hang", "drop", "bad_json", "no_choices")
_MARKER = re.compile(r"\[\[(status|retry-after|finish|delay)=([^\]]+)\]\]")


def expected_text(prompt_text: str, seed: int | None, index: int) -> str:
    """The program the server writes as choice `index` for this prompt and seed."""
    digest = hashlib.sha256(f"{prompt_text}|{seed}|{index}".encode()).hexdigest()[:12]
    return f"ans = {len(prompt_text)} + {index}  # {digest}"


def prompt_text(body: dict) -> str:
    """The text a request asks about: the prompt, or the chat messages' contents joined."""
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def _unit(*parts: Any) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class FaultPlan:
    rate: float = 0.0  # fraction of attempts that fail
    kinds: tuple[str, ...] = FAULT_KINDS
    max_consecutive: int = 3
    seed: int = 0
    hang_s: float = 1.5


class FaultyServer:
    """Start with `with FaultyServer(...) as srv:`; `srv.base_url` ends in /v1."""

    def __init__(
        self,
        plan: FaultPlan = FaultPlan(),
        *,
        n_mode: str = "full",  # "full": n choices; "ignore": always 1; "reject": 400 if n > 1
        api_key: str | None = None,  # when set, requests need "Bearer <api_key>"
        reverse_choices: bool = False,  # list choices last-first (clients must sort by index)
        model: str = "faulty-model",
    ) -> None:
        if n_mode not in ("full", "ignore", "reject"):
            raise ValueError(f"n_mode must be full, ignore or reject, got {n_mode!r}")
        self.plan = plan
        self.n_mode = n_mode
        self.api_key = api_key
        self.reverse_choices = reverse_choices
        self.model = model
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.attempts: Counter[str] = Counter()  # by request key
        self.fault_streak: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # by fault kind
        self.served: Counter[str] = Counter()  # good answers by request key
        self.statuses: Counter[int] = Counter()
        self.bodies: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.inflight = 0
        self.max_inflight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultyServer:
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ behaviour

    def choose_fault(self, key: str, attempt: int) -> str | None:
        plan = self.plan
        if plan.rate <= 0 or self.fault_streak[key] >= plan.max_consecutive:
            self.fault_streak[key] = 0
            return None
        if _unit(plan.seed, key, attempt, "rate") >= plan.rate:
            self.fault_streak[key] = 0
            return None
        self.fault_streak[key] += 1
        return plan.kinds[int(_unit(plan.seed, key, attempt, "kind") * len(plan.kinds))]

    def answer(self, path: str, body: dict) -> dict:
        """The good answer to a request (choices per n_mode, usage, finish reason)."""
        text = prompt_text(body)
        markers = dict(_MARKER.findall(text))
        wanted = int(body.get("n", 1))
        count = wanted if self.n_mode == "full" else 1
        finish = markers.get("finish", "stop")
        chat = path.endswith("/chat/completions")
        choices = []
        for i in range(count):
            out = expected_text(text, body.get("seed"), i)
            if chat:
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": out},
                        "finish_reason": finish,
                    }
                )
            else:
                choices.append({"index": i, "text": out, "finish_reason": finish})
        if self.reverse_choices:
            choices.reverse()
        completion_tokens = sum(len(c.get("text") or c["message"]["content"]) for c in choices)
        return {
            "id": "cmpl-" + hashlib.sha256(text.encode()).hexdigest()[:8],
            "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model", self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(text),
                "completion_tokens": completion_tokens,
                "total_tokens": len(text) + completion_tokens,
            },
        }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops SYNs when a client opens 16 at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or fault injection that shuts sockets make writes fail;
        # that is expected here, not worth a traceback on stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    app: FaultyServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        with self.app.lock:
            self.app.statuses[status] += 1

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "code": status}}, headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.app.model}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        app = self.app
        with app.lock:
            app.inflight += 1
            app.max_inflight = max(app.max_inflight, app.inflight)
        try:
            self._post()
        finally:
            with app.lock:
                app.inflight -= 1

    def _post(self) -> None:
        app = self.app
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization")
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "request body is not JSON")
            return
        key = hashlib.sha256((self.path + json.dumps(body, sort_keys=True)).encode()).hexdigest()
        with app.lock:
            app.bodies.append(body)
            app.auth_headers.append(auth)
            app.attempts[key] += 1
            attempt = app.attempts[key]
        if app.api_key is not None and auth != f"Bearer {app.api_key}":
            # Echo what was received, as some real servers do: clients must redact it.
            self._error(401, f"Incorrect API key provided: {auth}")
            return
        markers = dict(_MARKER.findall(prompt_text(body)))
        if "status" in markers:
            status = int(markers["status"])
            self._error(status, f"forced status {status} for this prompt")
            return
        if "retry-after" in markers and attempt == 1:
            self._error(429, "slow down", {"Retry-After": markers["retry-after"]})
            return
        if app.n_mode == "reject" and int(body.get("n", 1)) > 1:
            self._error(400, "n > 1 is not supported by this server")
            return
        with app.lock:
            fault = app.choose_fault(key, attempt)
            if fault:
                app.injected[fault] += 1
        if "delay" in markers:
            app.stopping.wait(float(markers["delay"]))
        self._respond(fault, app.answer(self.path, body), key)

    def _respond(self, fault: str | None, answer: dict, key: str) -> None:
        app = self.app
        payload = json.dumps(answer).encode()
        if fault == "http_500":
            self._error(500, "injected internal error")
        elif fault == "http_429":
            self._error(429, "injected rate limit", {"Retry-After": "0"})
        elif fault == "hang":
            app.stopping.wait(app.plan.hang_s)
            self.close_connection = True
        elif fault == "drop":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif fault == "bad_json":
            self._send(200, payload[: len(payload) // 2])
        elif fault == "no_choices":
            self._send_json(200, {**answer, "choices": []})
        else:
            self._send(200, payload)
            with app.lock:
                app.served[key] += 1
