"""The simulated teacher: an OpenAI-compatible server that answers the project's own teacher
prompts with the world's exact operations, for controlled experiments only.

It recognises which of the three teacher prompts (fdd_core/prompts/: program, complex,
similar) a request holds by matching the template text itself, looks the problem up in the
`World` (`World.lookup`), and answers:

- a program prompt with the problem's reference program (`Structure.program`);
- a complex-variations prompt with `n` problems from `complex_variation` (one or two more
  steps, or a distractor; same story, new answer);
- a similar-problems prompt with `n` problems from `similar_problem` (same operations, new
  entities, numbers and wording).

Every problem it writes is registered in the world (and appended to a ledger file, when one
is set), so its programs for that problem later, and the lab's evaluator, know the truth.

Exact by default. `Dials` turn on seeded faults, each decided by a hash of (teacher seed,
prompt, request seed, sample index, item index), so the same request always gets the same
answer, in any order and in any process:

- ``wrong_program``: share of program samples that are plausibly wrong (off by one in a
  number, a wrong operation, a missed step, a distractor number used);
- ``unparseable``: share of completions (program or problem list) that are prose with no
  program or no problem in them;
- ``duplicate_exact`` / ``duplicate_near``: share of new problems that repeat the parent
  (or an earlier item) word for word, or with a lead-in sentence added;
- ``test_paraphrase``: share of new problems that are paraphrases of a test question (a
  lead-in added, or the same structure reworded), to exercise decontamination;
- ``disagree``: share of new problems whose programs disagree: half of the samples for
  such a problem give one fixed plausible wrong answer, so majority voting sometimes
  rejects it and sometimes accepts a wrong label.

Nothing in the pipeline knows that this teacher is simulated; everything a user sees calls
it "simulated teacher", and its numbers measure the pipeline, not an LLM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fdd_core.prompts import load_template
from fdd_core.world.structure import (
    Structure,
    complex_variation,
    reworded,
    similar_problem,
)
from fdd_core.world.world import Entry, World

log = logging.getLogger(__name__)

MODEL_NAME = "simulated-teacher"
PARAPHRASE_LEADS = ("Here is a question for you. ", "Try to solve this. ", "A quick one. ")
NEAR_DUP_LEADS = ("Consider this problem. ", "Here is a new one. ")
PROSE_PROGRAM = (
    "Let me think about this problem carefully. First I would count what is there at the "
    "start and then follow each change in order, so the answer depends on every step."
)
PROSE_PROBLEMS = "Sure, I can write problems like that one. Let me know when you want them."


class Dials(BaseModel):
    """Seeded fault rates of the simulated teacher (all 0: exact)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wrong_program: float = Field(0.0, ge=0, le=1, description="Share of wrong program samples.")
    unparseable: float = Field(0.0, ge=0, le=1, description="Share of unparseable completions.")
    duplicate_exact: float = Field(0.0, ge=0, le=1, description="Share of exact duplicates.")
    duplicate_near: float = Field(0.0, ge=0, le=1, description="Share of near duplicates.")
    test_paraphrase: float = Field(
        0.0, ge=0, le=1, description="Share of new problems that paraphrase a test question."
    )
    disagree: float = Field(
        0.0, ge=0, le=1, description="Share of new problems whose programs disagree."
    )

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]


def parse_dials(items: list[str] | tuple[str, ...], base: Dials | None = None) -> Dials:
    """`["wrong_program=0.1", ...]` on top of `base`; errors name the dial and the range."""
    values = (base or Dials()).model_dump()
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key.strip() not in values:
            raise ValueError(
                f"--dial expects NAME=VALUE with NAME one of {', '.join(values)}, got {item!r}"
            )
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise ValueError(f"--dial {key}: expected a number in [0, 1], got {raw!r}") from None
    try:
        return Dials(**values)
    except ValueError as exc:
        raise ValueError(f"--dial: {exc}") from None


# ----------------------------------------------------------------------------- prompts


def _template_regex(name: str) -> re.Pattern[str]:
    """A regex matching the template's rendered text, capturing its inputs."""
    text = load_template(name).text
    parts = re.split(r"\{\{\s*(question|n)\s*\}\}", text)
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        elif part == "n":
            pattern += r"(?P<n>\d+)"
        else:
            last = not "".join(parts[i + 1 :]).strip()
            pattern += r"(?P<question>.+)" if last else r"(?P<question>.+?)"
    return re.compile(pattern, re.S)


@dataclass(frozen=True)
class Request:
    kind: str  # program | complex | similar | unknown
    question: str
    n_items: int = 0
    open_fence: bool = False  # a completion-style prompt that ends inside ```python


class PromptReader:
    """Recognises the project's three teacher prompts (chat or completion style)."""

    def __init__(self) -> None:
        self.patterns = {name: _template_regex(name) for name in ("complex", "similar")}
        self.program = _template_regex("program")

    def read(self, text: str) -> Request:
        for kind, pattern in self.patterns.items():
            m = pattern.search(text)
            if m:
                return Request(kind, m.group("question").strip(), int(m.group("n")))
        m = self.program.search(text)
        if m:
            q = m.group("question").strip()
            fence = re.search(r"\s*```(?:python)?\s*$", q)  # completion style: an open fence
            if fence:
                q = q[: fence.start()].strip()
            return Request("program", q, open_fence=fence is not None)
        return Request("unknown", "")


# ----------------------------------------------------------------------------- the teacher


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def wrong_structure(s: Structure, rng: random.Random) -> tuple[Structure, str]:
    """A plausible mistake on `s` with another answer: (the mistaken structure, its kind)."""
    kinds = ["off_by_one", "wrong_op"] + (["missed_step"] if s.n_steps >= 2 else [])
    for _ in range(50):
        kind = rng.choice(kinds)
        if kind == "off_by_one":
            i = rng.randrange(s.n_steps + 1)
            delta = rng.choice((-1, 1))
            if i == 0:
                new = replace(s, start=max(1, s.start + delta))
            else:
                steps = list(s.steps)
                steps[i - 1] = replace(steps[i - 1], value=max(1, steps[i - 1].value + delta))
                new = replace(s, steps=tuple(steps))
        elif kind == "wrong_op":
            i = rng.randrange(s.n_steps)
            swap = {"add": "sub", "sub": "add", "mul": "div", "div": "mul", "pct": "add"}
            steps = list(s.steps)
            steps[i] = replace(steps[i], op=swap[steps[i].op])
            new = replace(s, steps=tuple(steps))
        else:
            i = rng.randrange(s.n_steps)
            new = replace(s, steps=s.steps[:i] + s.steps[i + 1 :])
        try:
            value = new.values()[-1]
        except ZeroDivisionError:
            continue
        if value != s.values()[-1]:
            return new, kind
    return replace(s, start=s.start + 1), "off_by_one"


def program_text(s: Structure) -> str:
    """The program of a structure whose values may be fractions (wrong programs may be)."""
    return s.program()


class SimulatedTeacher:
    """Answers teacher prompts from the world (see the module docstring)."""

    def __init__(
        self,
        world: World | None = None,
        dials: Dials | None = None,
        *,
        seed: int = 0,
        ledger: str | Path | None = None,
    ) -> None:
        self.world = world or World()
        self.dials = dials or Dials()
        self.seed = seed
        self.ledger = Path(ledger) if ledger else None
        self.reader = PromptReader()
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        if self.ledger is not None:
            self.world.load_ledger(self.ledger)

    @property
    def model_name(self) -> str:
        """The model id to configure: names the teacher and its dials (cache keys differ)."""
        return f"{MODEL_NAME}-{self.dials.fingerprint()}-s{self.seed}"

    def _count(self, **delta: int) -> None:
        with self._lock:
            self.stats.update(delta)

    # -- one completion ------------------------------------------------------------------

    def complete(self, prompt: str, n: int = 1, seed: int | None = None) -> list[str]:
        """The `n` completions for one prompt (before stop strings are applied)."""
        req = self.reader.read(prompt)
        self._count(**{f"requests_{req.kind}": 1})
        return [self._sample(req, seed, j) for j in range(max(1, n))]

    def _sample(self, req: Request, seed: int | None, j: int) -> str:
        if req.kind == "unknown":
            self._count(unknown_prompt=1)
            return PROSE_PROBLEMS
        if _unit(self.seed, "unparseable", req.kind, req.question, seed, j) < (
            self.dials.unparseable
        ):
            self._count(**{f"{req.kind}_unparseable": 1})
            return PROSE_PROGRAM if req.kind == "program" else PROSE_PROBLEMS
        entry = self.world.lookup(req.question)
        if entry is None:
            self._count(unknown_question=1)
            return PROSE_PROGRAM if req.kind == "program" else PROSE_PROBLEMS
        if req.kind == "program":
            body = self._program(entry, seed, j)
            return body + "\n```" if req.open_fence else "```python\n" + body + "\n```"
        return self._problems(req, entry, seed, j)

    def _program(self, entry: Entry, seed: int | None, j: int) -> str:
        q = entry.question
        self._count(program_samples=1)
        if entry.disagree and _unit(self.seed, "disagree", q, seed, j) < 0.5:
            self._count(program_disagreeing=1)
            wrong, _ = wrong_structure(entry.structure, _rng(self.seed, "confuse", q))
            return program_text(wrong)
        if _unit(self.seed, "wrong", q, seed, j) < self.dials.wrong_program:
            wrong, kind = wrong_structure(
                entry.structure, _rng(self.seed, "wrong-kind", q, seed, j)
            )
            self._count(program_wrong=1, **{f"program_wrong_{kind}": 1})
            return program_text(wrong)
        return entry.structure.program()

    def _problems(self, req: Request, parent: Entry, seed: int | None, j: int) -> str:
        d = self.dials
        items: list[str] = []
        tests = self.world.test_questions()
        for i in range(max(1, req.n_items)):
            key = (self.seed, req.kind, parent.question, seed, j, i)
            u = _unit(*key, "fault")
            rng = _rng(*key, "make")
            self._count(problems_written=1)
            if u < d.test_paraphrase and tests:
                target = tests[rng.randrange(len(tests))]
                if rng.random() < 0.5:
                    text, structure = (
                        rng.choice(PARAPHRASE_LEADS) + target.question,
                        target.structure,
                    )
                else:
                    structure = reworded(target.structure, rng)
                    text = structure.render()
                entry = Entry(text, structure, "synthetic", paraphrase_of=target.question)
                self._count(problems_test_paraphrase=1)
            elif u < d.test_paraphrase + d.duplicate_exact:
                text = items[-1] if items else parent.question
                self._count(problems_duplicate_exact=1)
                items.append(text)
                continue
            elif u < d.test_paraphrase + d.duplicate_exact + d.duplicate_near:
                text = rng.choice(NEAR_DUP_LEADS) + parent.question
                entry = Entry(text, parent.structure, "synthetic", duplicate_of="near")
                self._count(problems_duplicate_near=1)
            else:
                if req.kind == "complex":
                    structure = complex_variation(parent.structure, rng).structure
                else:
                    structure = similar_problem(parent.structure, rng)
                disagree = _unit(*key, "disagree") < d.disagree
                entry = Entry(structure.render(), structure, "synthetic", disagree=disagree)
                self._count(problems_new=1, problems_disagree=int(disagree))
            items.append(self.world.register(entry, self.ledger).question)
        return "Here are the problems:\n" + "\n".join(f"{k + 1}. {q}" for k, q in enumerate(items))


def apply_stop(text: str, stop: list[str] | str | None) -> tuple[str, str]:
    """Cut `text` at the first stop string, as OpenAI servers do: (text, finish_reason)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, "stop")


# ----------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    teacher: SimulatedTeacher
    log_path: Path | None = None
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # requests are logged to the JSON-lines log
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.rstrip("/")
        if path.endswith("/models"):
            data = [{"id": self.teacher.model_name, "object": "model", "owned_by": "fdd-lab"}]
            self._send(200, {"object": "list", "data": data})
        elif path.endswith("/stats"):
            self._send(200, dict(self.teacher.stats))
        else:
            self._send(404, {"error": {"message": f"not found: {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.rstrip("/")
        chat = path.endswith("/chat/completions")
        if not chat and not path.endswith("/completions"):
            self._send(404, {"error": {"message": f"not found: {self.path}"}})
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if chat:
                messages = req.get("messages") or []
                text = "\n\n".join(str(m.get("content", "")) for m in messages)
            else:
                text = str(req.get("prompt", ""))
            n = int(req.get("n", 1) or 1)
            seed = req.get("seed")
        except (ValueError, TypeError, AttributeError) as exc:
            self._send(400, {"error": {"message": f"bad request body: {exc}"}})
            return
        outs = self.teacher.complete(text, n=n, seed=seed)
        choices = []
        for j, out in enumerate(outs):
            content, finish = apply_stop(out, req.get("stop"))
            choice: dict = {"index": j, "finish_reason": finish}
            if chat:
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice["text"] = content
            choices.append(choice)
        if self.log_path is not None:
            kind = self.teacher.reader.read(text).kind
            row = {
                "t": round(time.time(), 3),
                "endpoint": "chat" if chat else "completions",
                "kind": kind,
                "prompt": hashlib.sha256(text.encode()).hexdigest()[:16],
                "n": n,
                "seed": seed,
            }
            with self.lock, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        words = len(text.split())
        completion = sum(len(c.split()) for c in outs)
        self._send(
            200,
            {
                "id": "cmpl-simulated",
                "object": "chat.completion" if chat else "text_completion",
                "model": req.get("model", self.teacher.model_name),
                "choices": choices,
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": completion,
                    "total_tokens": words + completion,
                },
            },
        )


class SimulatedTeacherServer:
    """The simulated teacher on an HTTP port (a daemon thread); `stop()` or use `serve()`."""

    def __init__(
        self,
        teacher: SimulatedTeacher,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | Path | None = None,
    ) -> None:
        handler = type(
            "SimulatedTeacherHandler",
            (_Handler,),
            {"teacher": teacher, "log_path": Path(log_path) if log_path else None},
        )
        self.teacher = teacher
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> SimulatedTeacherServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="simulated-teacher", daemon=True
        )
        self._thread.start()
        log.info("simulated teacher serving on %s (dials %s)", self.base_url, self.teacher.dials)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_until_stopped(self) -> None:
        """Serve in the calling thread until Ctrl-C or SIGTERM, then close the socket.

        For a server that is its own process (`fdd simteacher`, bench/scripted_teacher.py);
        SIGTERM is handled only while this runs, and the previous handler is put back."""
        import signal

        def _stop(*_: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.httpd.server_close()

    def __enter__(self) -> SimulatedTeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def serve(
    world: World | None = None,
    dials: Dials | None = None,
    *,
    seed: int = 0,
    port: int = 0,
    ledger: str | Path | None = None,
    log_path: str | Path | None = None,
) -> Iterator[SimulatedTeacherServer]:
    """Start a simulated teacher on 127.0.0.1 (`port` 0: a free one); stop it on exit."""
    teacher = SimulatedTeacher(world, dials, seed=seed, ledger=ledger)
    server = SimulatedTeacherServer(teacher, port=port, log_path=log_path)
    with server:
        yield server
