"""A SCRIPTED teacher for GSM8K-scale rehearsals: answers at once, knows only its script.

Not an LLM and not the simulated teacher of the proving ground (fdd_core/world/teacher.py,
which knows only its own World problems). It reuses that module's HTTP server
(`SimulatedTeacherServer`, which takes any object with `complete`, `model_name`, `stats`
and `reader`) and its prompt reader, and answers the project's three teacher prompts from a
script:

- a program prompt for a problem it knows gets a program that computes the reference
  answer: for a GSM8K original one line per calculator annotation of the reference
  solution (`<<48/2=24>>` becomes `step_1 = 48/2`) and `ans = <the #### answer>`; for a
  problem it wrote, the program it wrote with it. A question it does not know gets prose
  (no program), counted in `unknown_question`;
- a complex/similar prompt gets `n` new problems, deterministic variants of the parent
  (as many steps as the parent for `similar`, one more for `complex`) built from word banks
  so that different variants are not near duplicates of each other. Each is registered
  with its program and answer, so later program prompts (labelling) are answered.

Every choice is a hash of (kind, parent, request seed, sample index, item index): the same
request always gets the same answer, in any order. It also counts characters of prompts and
completions per prompt kind (`/v1/stats`) and keeps the first few of each kind
(`samples_path`) so a benchmark can turn characters into tokens with a real tokenizer.

Run alone: `python -m bench.scripted_teacher --data train.jsonl --port 8799`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import threading
from collections import Counter
from pathlib import Path

from fdd_core.io import atomic_write_json, read_jsonl
from fdd_core.schemas import normalize_text
from fdd_core.world.teacher import (
    PROSE_PROBLEMS,
    PROSE_PROGRAM,
    PromptReader,
    Request,
    SimulatedTeacherServer,
)

MODEL_NAME = "scripted-teacher-gsm8k"
SAMPLES_PER_KIND = 64
_ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]*)>>")
_SAFE_EXPR = re.compile(r"^[\d\s.+\-*/()]+$")

NAMES = (
    "Mia Liam Ava Noah Zoe Omar Lena Ravi Ines Hugo Nora Kai Ada Leo Maya Ivan Sara Tom "
    "Yuki Amir Elsa Jonas Priya Diego Hana Felix Rosa Malik Ida Theo Lucia Sven Aisha Pablo "
    "Greta Kenji Nadia Oscar Vera Emil"
).split()
ITEMS = (
    "marbles stickers apples pencils cookies shells stamps coins cards beads books plums "
    "candles buttons tickets lemons bricks ribbons seeds bottles cupcakes kites crayons "
    "peaches badges puzzles socks eggs melons nails pebbles spoons gloves jars tulips "
    "magnets batteries feathers acorns carrots"
).split()
ADJECTIVES = (
    "red shiny small old green blue striped tiny wooden golden round fresh plastic silver "
    "yellow painted large paper glass soft"
).split()
PLACES = (
    "garage attic kitchen classroom backyard shop library basement studio garden office "
    "cabin bakery workshop hallway barn porch market gym museum"
).split()
TIMES = (
    "on Monday|on Tuesday|after lunch|in the morning|before dinner|on Friday|at noon|"
    "during the weekend|after school|in the evening|on Sunday|at dawn|before bedtime|"
    "on Thursday|after breakfast|at the fair"
).split("|")
GIVE = "gives|hands|sends|brings|passes|donates".split("|")
LOSE = "loses|sells|eats|uses|gives away|breaks".split("|")
GROW = "doubles|triples|multiplies".split("|")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def gsm8k_program(answer_text: str) -> tuple[str, float]:
    """(program, answer) from a GSM8K reference solution (`... #### 72`)."""
    head, sep, tail = answer_text.rpartition("####")
    if not sep:
        raise ValueError(f"a GSM8K answer ends in '#### N'; got {answer_text[-60:]!r}")
    value = float(tail.strip().replace(",", ""))
    lines = []
    for expr, _result in _ANNOTATION.findall(head):
        expr = expr.strip()
        if _SAFE_EXPR.match(expr):
            lines.append(f"step_{len(lines) + 1} = {expr}")
    answer = int(value) if value.is_integer() else value
    lines.append(f"ans = {answer}")
    return "\n".join(lines), value


def variant(parent: str, steps: int, *key: object) -> tuple[str, str, float]:
    """A new problem of `steps` operations: (text, program, answer), all from `key`."""
    rng = _rng(parent, *key)
    name, other = rng.sample(NAMES, 2)
    item, adj, place = rng.choice(ITEMS), rng.choice(ADJECTIVES), rng.choice(PLACES)
    start = rng.randint(5, 90)
    count = start
    sentences = [f"{name} keeps {start} {adj} {item} in the {place}."]
    program = [f"{item} = {start}"]
    for _ in range(max(1, steps)):
        op = rng.choice(("add", "sub", "mul") if count < 400 else ("add", "sub"))
        when = rng.choice(TIMES)
        if op == "add":
            b = rng.randint(2, 60)
            sentences.append(f"{_cap(when)} {other} {rng.choice(GIVE)} {name} {b} more.")
            program.append(f"{item} = {item} + {b}")
            count += b
        elif op == "sub" and count > 2:
            b = rng.randint(1, count - 1)
            sentences.append(f"{_cap(when)} {name} {rng.choice(LOSE)} {b} of them.")
            program.append(f"{item} = {item} - {b}")
            count -= b
        else:
            b = {"doubles": 2, "triples": 3}.get(verb := rng.choice(GROW), rng.randint(4, 6))
            times = "" if verb != "multiplies" else f" by {b}"
            sentences.append(f"{_cap(when)} the {item} count {verb}{times}.")
            program.append(f"{item} = {item} * {b}")
            count *= b
    sentences.append(f"How many {item} does {name} have at the end?")
    program.append(f"ans = {item}")
    return " ".join(sentences), "\n".join(program), float(count)


class ScriptedTeacher:
    """Answers teacher prompts from a script (see the module docstring)."""

    def __init__(self, problems: list[dict], samples_path: str | Path | None = None) -> None:
        self.reader = PromptReader()
        self.stats: Counter = Counter()
        self.samples_path = Path(samples_path) if samples_path else None
        self.samples: dict[str, list[dict]] = {}
        self._lock = threading.Lock()
        # normalized question -> (program, answer, steps)
        self.known: dict[str, tuple[str, float, int]] = {}
        for row in problems:
            program, value = gsm8k_program(str(row["answer"]))
            steps = max(1, program.count("\n"))
            self.known[normalize_text(str(row["question"]))] = (program, value, steps)

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    def complete(self, prompt: str, n: int = 1, seed: int | None = None) -> list[str]:
        req = self.reader.read(prompt)
        outs = [self._sample(req, seed, j) for j in range(max(1, n))]
        chars = sum(len(o) for o in outs)
        with self._lock:
            self.stats.update(
                {
                    f"requests_{req.kind}": 1,
                    f"prompt_chars_{req.kind}": len(prompt),
                    f"completion_chars_{req.kind}": chars,
                    f"completions_{req.kind}": len(outs),
                }
            )
            kept = self.samples.setdefault(req.kind, [])
            if len(kept) < SAMPLES_PER_KIND:
                kept.append({"prompt": prompt, "completions": outs})
        return outs

    def _sample(self, req: Request, seed: int | None, j: int) -> str:
        if req.kind == "unknown":
            return PROSE_PROBLEMS
        entry = self.known.get(normalize_text(req.question))
        if entry is None:
            with self._lock:
                self.stats["unknown_question"] += 1
            return PROSE_PROGRAM if req.kind == "program" else PROSE_PROBLEMS
        program, _value, steps = entry
        if req.kind == "program":
            return program + "\n```" if req.open_fence else "```python\n" + program + "\n```"
        items = []
        for i in range(max(1, req.n_items)):
            n_steps = min(6, steps + (req.kind == "complex"))
            text, prog, value = variant(req.question, n_steps, req.kind, seed, j, i)
            with self._lock:
                self.known.setdefault(normalize_text(text), (prog, value, n_steps))
                self.stats["problems_written"] += 1
            items.append(text)
        return "Here are the problems:\n" + "\n".join(f"{k + 1}. {q}" for k, q in enumerate(items))

    def write_samples(self) -> None:
        if self.samples_path is not None:
            with self._lock:
                data = {"stats": dict(self.stats), "samples": self.samples}
            atomic_write_json(self.samples_path, data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="GSM8K-format jsonl the run trains on")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--samples", default=None, help="write stats and sample texts here on exit")
    p.add_argument("--ready-file", default=None, help="write the base URL here when serving")
    args = p.parse_args(argv)
    teacher = ScriptedTeacher(list(read_jsonl(args.data)), samples_path=args.samples)
    server = SimulatedTeacherServer(teacher, port=args.port)  # type: ignore[arg-type]
    print(f"scripted teacher (not an LLM) on {server.base_url}", flush=True)
    if args.ready_file:
        Path(args.ready_file).write_text(server.base_url)
    try:
        server.serve_until_stopped()  # until SIGTERM (what bench_rehearsal sends) or Ctrl-C
    finally:
        teacher.write_samples()
    return 0


if __name__ == "__main__":
    sys.exit(main())
