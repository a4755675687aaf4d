"""A deterministic OpenAI-compatible "teacher" server for flow tests.

The embedded 135M model is too weak to write verifiable programs, so the flow tests point
the real `openai` backend at this server instead. It lives in a small world where every
question's answer is the sum of the whole numbers in it (`world_question` writes such
questions), and it answers the project's three teacher prompts:

- program prompts (the last "Question: ..." of the few-shot prompt): a program summing the
  numbers; with a seed, sample j is wrong (off by one) when (seed + j) % 4 == 3, so
  verification and majority voting have something to reject;
- "harder versions" prompts: each new problem adds one more quantity;
- "similar difficulty" prompts: the same structure with new names and numbers.

`--latency S` makes every completion request take S seconds, like a served model does
(a real teacher takes seconds per request; caching is what lets a re-run skip them).

`--hang-file PATH`: while PATH exists, completion requests are accepted and never answered
(a stuck server); each such request adds a line to `LOG.hung`, and is dropped without an
answer once PATH is gone (its client has given up by then).

Every request is appended to a JSON-lines log (a hash of the prompt, n, seed), so tests can
count which prompts reached the teacher. Run: python -m tests.servers.scripted_teacher
--port P --log FILE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = ["Ava", "Ben", "Cora", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lia"]
OBJECTS = [
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "shells",
    "coins",
    "books",
    "cards",
    "stamps",
    "beads",
    "buttons",
    "kites",
]
PLACES = ["market", "park", "library", "beach", "garden", "school", "fair", "museum"]
VERBS = ["finds", "buys", "is given", "wins", "collects", "receives"]


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def world_question(key: str, n_numbers: int = 2) -> str:
    """A question whose answer is the sum of its numbers, varied enough to pass dedup."""
    r = _h(key)
    name = NAMES[r % len(NAMES)]
    obj = OBJECTS[(r // 13) % len(OBJECTS)]
    place = PLACES[(r // 181) % len(PLACES)]
    nums = [2 + (_h(key, i) % 60) for i in range(n_numbers)]
    parts = [f"{name} has {nums[0]} {obj} at home."]
    for i, x in enumerate(nums[1:]):
        verb = VERBS[(r // 7 + i) % len(VERBS)]
        parts.append(f"At the {place} {name} {verb} {x} more {obj}.")
    parts.append(f"How many {obj} does {name} have now?")
    return " ".join(parts)


def numbers_in(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\b\d+\b", text)]


def _last_user(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def _parent(text: str) -> str:
    m = re.search(r"word problem:\s*\n\s*\n(.*?)\n\s*\n", text, re.S)
    return m.group(1).strip() if m else text


def answer(text: str, seed, index: int) -> str:
    """The completion text for one sample."""
    if "harder versions" in text or "similar difficulty" in text:
        parent = _parent(text)
        want = int((re.search(r"Write (\d+) new", text) or [None, "2"])[1])
        extra = 1 if "harder versions" in text else 0
        k = max(2, len(numbers_in(parent))) + extra
        items = [world_question(f"{parent}|{seed}|{index}|{i}", k) for i in range(want)]
        return "Here are the problems:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(items))
    question = text.rsplit("Question:", 1)[-1].strip()
    nums = numbers_in(question)
    wrong = seed is not None and (int(seed) + index) % 4 == 3
    body = " + ".join(str(x) for x in nums) or "0"
    program = f"numbers = [{', '.join(map(str, nums))}]\nans = {body}" + (" + 1" if wrong else "")
    return f"```python\n{program}\n```"


class Handler(BaseHTTPRequestHandler):
    log_path: str | None = None
    latency_s: float = 0.0
    hang_file: str | None = None
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200, {"object": "list", "data": [{"id": "scripted-teacher", "object": "model"}]}
            )
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/").endswith("/chat/completions"):
            text = _last_user(req.get("messages", []))
        elif self.path.rstrip("/").endswith("/completions"):
            text = str(req.get("prompt", ""))
        else:
            self._send(404, {"error": {"message": "not found"}})
            return
        n, seed = int(req.get("n", 1) or 1), req.get("seed")
        if self.hang_file and os.path.exists(self.hang_file):
            if self.log_path:
                with self.lock, open(self.log_path + ".hung", "a") as fh:
                    fh.write(json.dumps({"n": n, "seed": seed}) + "\n")
            while os.path.exists(self.hang_file):
                time.sleep(0.05)
            self.close_connection = True
            return
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.log_path:
            with self.lock, open(self.log_path, "a") as fh:
                fh.write(
                    json.dumps(
                        {
                            "prompt": hashlib.sha256(text.encode()).hexdigest()[:16],
                            "n": n,
                            "seed": seed,
                        }
                    )
                    + "\n"
                )
        chat = self.path.rstrip("/").endswith("/chat/completions")
        choices = []
        for j in range(n):
            content = answer(text, seed, j)
            choice = {"index": j, "finish_reason": "stop"}
            choice.update(
                {"message": {"role": "assistant", "content": content}}
                if chat
                else {"text": content}
            )
            choices.append(choice)
        self._send(
            200,
            {
                "id": "cmpl-scripted",
                "object": "chat.completion" if chat else "text_completion",
                "model": req.get("model", "scripted-teacher"),
                "choices": choices,
                "usage": {
                    "prompt_tokens": len(text.split()),
                    "completion_tokens": 20 * n,
                    "total_tokens": len(text.split()) + 20 * n,
                },
            },
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per completion request")
    ap.add_argument("--hang-file", help="while this file exists, requests are never answered")
    args = ap.parse_args(argv)
    Handler.log_path = args.log
    Handler.latency_s = args.latency
    Handler.hang_file = args.hang_file
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"scripted teacher on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
