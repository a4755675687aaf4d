"""Benchmark of fdd_core.filtering on 100,000 generated questions, against a ROUGE-L baseline.

    python -m bench.bench_filter [--n 100000] [--existing 0] [--baseline-sample 2000] [--seed 0]
    python -m bench.bench_filter --n 1000000 --existing 100000   # the million-candidate goal

Candidates are synthetic teacher output: templated word problems (varied names, items,
numbers, sentence choices) with a known share of planted exact duplicates, one-edit near
duplicates, copies of dataset questions, contaminated copies of test questions, malformed
and too short / too long texts. Test sets are the real GSM8K test and SVAMP files from
../shared/data when present (otherwise synthetic stand-ins, said in the output); ASDiv and
MultiArith are not on disk, so stand-ins of their sizes are synthesised from their own
templates. The dataset already holds the GSM8K train questions (or a stand-in), topped up
to `--existing` questions with generated ones (another seed) when that is larger.

The timed part streams the candidates through `filter_stream` (Problem objects made on the
fly, as a task reading them from disk would), so the memory it reports is the filter's
own: the peak resident set while filtering (the kernel's high-water mark, reset just
before) minus the resident set before it, i.e. beyond the candidate texts the bench holds.

Baseline: LLM2LLM's dedup, each new question against every kept one by ROUGE-L F (dropped
above 0.7). It is quadratic, so it runs on the first `--baseline-sample` candidates and is
extrapolated as T(N) = T(n) * (N / n)**2. Its LCS is Hyyrö's bit-parallel algorithm on
Python integers and it stops at the first match: both make the baseline faster than the
usual DP loop, so the speed-up reported is conservative.
Writes bench/results/filter.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.procmem import _peak_rss_mb, _reset_peak_rss, _rss_mb
from fdd_core.config import FilteringConfig
from fdd_core.filtering import DROP_REASONS, Deduplicator, filter_stream, tokenize
from fdd_core.schemas import Problem

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FDD_SHARED_DIR", REPO.parent / "shared")) / "data"
RESULTS = REPO / "bench" / "results" / "filter.json"
ASDIV_SIZE, MULTIARITH_SIZE = 2305, 600

# ----------------------------------------------------------------------------- generators

NAMES = (
    "Tom Anna Liam Olivia Noah Emma Mason Ava Lucas Mia Ethan Sofia James Chloe Benjamin Lily "
    "Henry Grace Jack Zoe Daniel Ella Samuel Nora David Ruby Leo Hannah Owen Maya Julian Aria "
    "Isaac Layla Gabriel Stella Carlos Priya Omar Mei Kofi Ines Tariq Yuki Pablo Amara Felix "
    "Elena Hugo Fatima Ravi Sara Diego Lena Marco Nadia Ivan Alma Theo Rosa"
).split()
ITEMS = (
    (
        "apples marbles stickers books cookies pencils cupcakes seashells stamps coins balloons "
        "oranges crayons cards toy-cars bracelets muffins tomatoes eggs flowers buttons candles "
        "notebooks lemons comics shirts beads puzzles bottles cans peaches plates rocks tickets "
        "magnets ribbons kites pears erasers boxes"
    )
    .replace("-", " ")
    .split()
)
PLACES = (
    "market library bakery school farm park zoo museum store garage beach fair office garden "
    "harbor station gym cafe"
).split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

OPENERS = [
    "{name} has {n1} {item} in a box at the {place}.",
    "At the {place}, {name} counted {n1} {item} on the first shelf and {n2} on the second shelf.",
    "{name} is saving money to buy a new bike that costs ${p1}.",
    "A baker at the {place} made {n1} trays of {item}, and each tray holds {n2} of them.",
    "{name} and {name2} collected {n1} {item} during a school trip to the {place}.",
    "There are {n1} students in a class, and {n2} of them brought {item} to share.",
    "A farmer planted {n1} rows of trees with {n2} trees in each row near the {place}.",
    "{name} reads {n1} pages of a book every day for {n2} days.",
    "The {place} sells {item} for ${p1} each and {item2} for ${p2} each.",
    "{name} works {n1} hours a week at the {place} and earns ${p1} per hour.",
    "A bus leaves the {place} with {n1} passengers on board.",
    "{name} wants to fill {n1} bags with {item}, putting {n2} {item} in every bag.",
    "In a jar there are {n1} red {item}, {n2} blue {item} and some green ones.",
    "{name} runs {n1} kilometers every {day} and twice as far every {day2}.",
    "A tank at the {place} holds {n1} liters of water when it is full.",
    "{name} bought {n1} packs of {item} with {n2} {item} in each pack.",
    "Last year {name} planted {n1} tomato plants and each plant gave {n2} tomatoes.",
    "The school library has {n1} books and lends out {n2} books every week.",
    "{name} had ${p1} in a piggy bank at the start of the month.",
    "A train travels {n1} miles in {n2} hours at a steady speed.",
]
ACTIONS = [
    "On {day}, {pron} gave {n3} {item} to {name2}.",
    "Then {pron} bought {n3} more {item} at the {place}.",
    "{name2} later added {n3} {item} to the pile.",
    "After lunch, {n3} of the {item} were lost on the way home.",
    "The next week, the number of {item} doubled.",
    "{Pron} spends ${p2} on snacks every {day}.",
    "Half of them are sold before noon on {day}.",
    "A friend offers {n4} percent more if {pron} waits another week.",
    "{name2} takes {n3} of them and gives back {n4} the following day.",
    "Every {day} the price goes up by ${p3}.",
    "{Pron} shares the rest equally among {n4} friends.",
    "Each of the {n4} neighbors brings {n3} extra {item} to the {place}.",
    "It rains on {day}, so {n3} of the {item} get wet and are thrown away.",
    "{Pron} also earns ${p3} for helping at the {place} on {day}.",
    "By the end of {day}, {n3} more {item} have arrived by truck.",
    "Her aunt sends {n4} boxes with {n3} {item} in each box.",
    "A coupon takes ${p3} off the total price at the {place}.",
    "{Pron} uses {n3} of them to decorate the {place} for a party.",
]
QUESTIONS = [
    "How many {item} does {name} have now?",
    "How much money will {name} have left at the end?",
    "How many {item} are there in total?",
    "What is the total cost in dollars?",
    "How many days will it take {name} to finish?",
    "How many {item} does each friend get?",
    "How many more {item} does {name} need?",
    "How many liters are left in the tank?",
    "What percent of the {item} are left?",
    "How far does {name} travel in one week?",
]
# Stand-ins for the benchmarks that are not on disk: their own templates, so that a
# generated question matches a stand-in only when it was planted as a copy of one.
MULTIARITH_LIKE = [
    (
        "For {holiday} {name} received {n1} pieces of candy from neighbors and {n2} pieces from "
        "{rel}. If {pron} only ate {n3} pieces a day, how long would the candy last {obj}?"
    ),
    (
        "A pet store had {n1} puppies. In one day they sold {n2} of them and put the rest into "
        "cages with {n3} in each cage. How many cages did they use?"
    ),
    (
        "{name} was organizing {poss} book case making sure each of the shelves had exactly {n1} "
        "books on it. If {pron} had {n2} shelves of mystery books and {n3} shelves of picture "
        "books, how many books did {pron} have total?"
    ),
    (
        "At the arcade {name} won {n1} tickets playing whack a mole and {n2} tickets playing "
        "skee ball. If {pron} was trying to buy candy that cost {n3} tickets a piece, how many "
        "could {pron} buy?"
    ),
    (
        "A waiter had {n1} customers to wait on. If {n2} customers left and {pron} got another "
        "{n3} customers, how many customers would {pron} have?"
    ),
    (
        "{name} picked {n1} carrots from {poss} garden. If {pron} threw out {n2} of them and then "
        "picked {n3} more the next day, how many carrots would {pron} have total?"
    ),
]
ASDIV_LIKE = [
    (
        "{name} has {n1} crayons in a drawer. {name2} took {n2} crayons out of the drawer. "
        "How many crayons are now in the drawer?"
    ),
    (
        "There were {n1} kids in the soccer league in {year}. The number grew by {n2} kids every "
        "year after that. How many kids played in the league in {year2}?"
    ),
    (
        "A rectangular garden is {n1} feet long and {n2} feet wide. What is the area of the "
        "garden in square feet?"
    ),
    (
        "The cafeteria served {n1} cartons of chocolate milk and {n2} cartons of plain milk at "
        "breakfast. How many cartons of milk were served in all?"
    ),
    "{name} can type {n1} words per minute. How many words can {pron} type in {n2} minutes?",
    (
        "A ribbon is {n1} inches long. {name} cuts it into pieces that are {n2} inches long. "
        "How many pieces does {pron} get?"
    ),
    (
        "The temperature was {n1} degrees at noon and dropped {n2} degrees by midnight. What was "
        "the temperature at midnight?"
    ),
]
HOLIDAYS = "Halloween Christmas Easter Thanksgiving".split()


class Generator:
    """Word problems from the templates above, reproducible from a seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def _slots(self) -> dict[str, str]:
        r = self.rng
        name, name2 = r.sample(NAMES, 2)
        item, item2 = r.sample(ITEMS, 2)
        pron, obj, poss = r.choice([("he", "him", "his"), ("she", "her", "her")])
        return {
            "name": name,
            "name2": name2,
            "item": item,
            "item2": item2,
            "place": r.choice(PLACES),
            "day": r.choice(DAYS),
            "day2": r.choice(DAYS),
            "n1": str(r.randint(2, 400)),
            "n2": str(r.randint(2, 60)),
            "n3": str(r.randint(2, 30)),
            "n4": str(r.randint(2, 12)),
            "p1": str(r.randint(5, 900)),
            "p2": f"{r.randint(1, 40)}.{r.randint(0, 99):02d}",
            "p3": str(r.randint(1, 25)),
            "pron": pron,
            "Pron": pron.capitalize(),
            "obj": obj,
            "poss": poss,
            "holiday": r.choice(HOLIDAYS),
            "rel": r.choice(["her older sister", "his brother", "a cousin", "grandma"]),
            "year": str(r.randint(1990, 2015)),
            "year2": str(r.randint(2016, 2024)),
        }

    def generated(self) -> str:
        slots = self._slots()
        parts = [self.rng.choice(OPENERS)]
        parts += self.rng.sample(ACTIONS, self.rng.randint(1, 4))
        parts.append(self.rng.choice(QUESTIONS))
        return " ".join(parts).format(**slots)

    def stand_in(self, templates: list[str]) -> str:
        return self.rng.choice(templates).format(**self._slots())

    def stand_ins(self, templates: list[str], n: int) -> list[str]:
        out: dict[str, None] = {}
        while len(out) < n:
            out.setdefault(self.stand_in(templates), None)
        return list(out)

    # edits -------------------------------------------------------------------------
    def recase(self, q: str) -> str:
        """Same question after normalisation: case and whitespace changed."""
        choice = self.rng.randrange(3)
        if choice == 0:
            return q.upper()
        if choice == 1:
            return "  " + q.replace(" ", "  ", 3) + "\n"
        return q.lower().replace(". ", ".\n", 1)

    def one_edit(self, q: str) -> str:
        """A paraphrase-like near copy: one number, one name, or one inserted word changed."""
        words = q.split(" ")
        nums = [i for i, w in enumerate(words) if re.search(r"\d", w)]
        kind = self.rng.randrange(3)
        if kind == 0 and nums:
            i = self.rng.choice(nums)
            words[i] = re.sub(
                r"\d+", lambda m: str(int(m.group()) + self.rng.randint(1, 9)), words[i], count=1
            )
        elif kind == 1:
            i = self.rng.randrange(len(words))
            words[i] = self.rng.choice(["exactly", "about", "nearly", "only"]) + " " + words[i]
        else:
            i = self.rng.randrange(len(words))
            words[i] = self.rng.choice(NAMES + ITEMS)
        return " ".join(words)


def malformed_examples(gen: Generator, n: int) -> list[str]:
    pool = [
        lambda: "```python\nans = " + str(gen.rng.randint(1, 99)) + "\n```",
        lambda: "Answer: " + str(gen.rng.randint(1, 99)) + " " + gen.rng.choice(ITEMS),
        lambda: "How many " + gen.rng.choice(ITEMS) + " are left after the party?",  # no digit
        lambda: "",
        lambda: f"{gen.rng.randint(1, 99)} + {gen.rng.randint(1, 99)} = ?",  # no letter
        lambda: "\x00\x01\x02\x03\x04 7 apples \x05\x06\x07\x08",
        lambda: "Question: {question} has 5 items<|im_end|>",
    ]
    return [gen.rng.choice(pool)() for _ in range(n)]


# ----------------------------------------------------------------------------- data


def load_test_sets(gen: Generator) -> tuple[dict[str, list[str]], dict[str, str]]:
    sources: dict[str, str] = {}
    sets: dict[str, list[str]] = {}
    gsm = SHARED_DATA / "gsm8k" / "test.jsonl"
    if gsm.is_file():
        sets["gsm8k"] = [json.loads(line)["question"] for line in gsm.open() if line.strip()]
        sources["gsm8k"] = f"real ({gsm})"
    else:
        sets["gsm8k"] = gen.stand_ins(ASDIV_LIKE + MULTIARITH_LIKE, 1319)
        sources["gsm8k"] = "synthetic stand-in (../shared/data/gsm8k/test.jsonl not found)"
    svamp = SHARED_DATA / "svamp" / "SVAMP.json"
    if svamp.is_file():
        rows = json.loads(svamp.read_text())
        sets["svamp"] = [f"{r['Body'].strip()} {r['Question'].strip()}" for r in rows]
        sources["svamp"] = f"real ({svamp})"
    else:
        sets["svamp"] = gen.stand_ins(ASDIV_LIKE, 1000)
        sources["svamp"] = "synthetic stand-in (../shared/data/svamp/SVAMP.json not found)"
    sets["asdiv"] = gen.stand_ins(ASDIV_LIKE, ASDIV_SIZE)
    sources["asdiv"] = f"synthetic stand-in of {ASDIV_SIZE} questions (ASDiv is not on disk)"
    sets["multiarith"] = gen.stand_ins(MULTIARITH_LIKE, MULTIARITH_SIZE)
    sources["multiarith"] = f"synthetic stand-in of {MULTIARITH_SIZE} questions (not on disk)"
    return sets, sources


def load_existing(gen: Generator, at_least: int = 0) -> tuple[list[str], str]:
    train = SHARED_DATA / "gsm8k" / "train.jsonl"
    if train.is_file():
        questions = [json.loads(line)["question"] for line in train.open() if line.strip()]
        source = f"real ({train})"
    else:
        questions = [gen.generated() for _ in range(7473)]
        source = "synthetic stand-in (GSM8K train not found)"
    if at_least > len(questions):
        extra = Generator(gen.rng.randrange(2**31))  # the candidates' templates, other draws
        topped = at_least - len(questions)
        questions += [extra.generated() for _ in range(topped)]
        source += f" + {topped:,} generated"
    return questions, source


def build_candidates(n: int, gen: Generator, existing: list[str], test_sets: dict[str, list[str]]):
    """(questions, planted label per question, source question per planted copy)."""
    n_exact, n_near = n // 20, n // 20
    n_existing, n_contam = n // 50, n // 50
    n_malformed, n_short, n_long = n * 3 // 1000, n // 1000, n // 1000
    n_unique = n - n_exact - n_near - n_existing - n_contam - n_malformed - n_short - n_long
    uniques: dict[str, None] = {}
    while len(uniques) < n_unique:
        uniques.setdefault(gen.generated(), None)
    base = list(uniques)
    items: list[tuple[float, str, str, str | None]] = [
        (i, q, "unique", None) for i, q in enumerate(base)
    ]

    def after(src: int) -> float:
        return gen.rng.uniform(src + 0.001, n_unique)

    for _ in range(n_exact):
        s = gen.rng.randrange(n_unique)
        items.append((after(s), gen.recase(base[s]), "exact_dup", base[s]))
    for _ in range(n_near):
        s = gen.rng.randrange(n_unique)
        items.append((after(s), gen.one_edit(base[s]), "near_dup", base[s]))
    for k in range(n_existing):
        src = gen.rng.choice(existing)
        copy, label = (
            (gen.recase(src), "existing_exact") if k % 2 else (gen.one_edit(src), "existing_near")
        )
        items.append((gen.rng.uniform(0, n_unique), copy, label, src))
    names = list(test_sets)
    for k in range(n_contam):
        src = gen.rng.choice(test_sets[names[k % len(names)]])
        if k % 2:
            frame = gen.rng.choice(["Consider this problem. {q}", "{q} Explain each step.", "{q}"])
            copy, label = frame.format(q=src), "contam_verbatim"
        else:
            copy, label = gen.one_edit(src), "contam_edited"
        items.append((gen.rng.uniform(0, n_unique), copy, label, src))
    for q in malformed_examples(gen, n_malformed):
        items.append((gen.rng.uniform(0, n_unique), q, "malformed", None))
    for _ in range(n_short):
        items.append(
            (
                gen.rng.uniform(0, n_unique),
                f"{gen.rng.choice(NAMES)} has {gen.rng.randint(1, 9)}.",
                "short",
                None,
            )
        )
    for _ in range(n_long):
        items.append(
            (
                gen.rng.uniform(0, n_unique),
                " ".join(gen.generated() for _ in range(30)),
                "long",
                None,
            )
        )
    items.sort(key=lambda t: t[0])
    return [t[1] for t in items], [t[2] for t in items], [t[3] for t in items]


# ----------------------------------------------------------------------------- baseline

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


class RougeLDedup:
    """LLM2LLM's filter: drop a question whose ROUGE-L F with any kept one is > 0.7."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self.vocab: dict[str, int] = {}
        self.kept: list[tuple[dict[int, int], int]] = []  # (bit masks per token, length)
        self.comparisons = 0

    def _ids(self, text: str) -> list[int]:
        return [
            self.vocab.setdefault(t, len(self.vocab)) for t in _ROUGE_TOKEN.findall(text.lower())
        ]

    @staticmethod
    def _lcs(masks: dict[int, int], n: int, b: list[int]) -> int:
        v = (1 << n) - 1  # Hyyrö / Allison-Dix: zero bits of v count the LCS
        for tok in b:
            u = v & masks.get(tok, 0)
            v = (v + u) | (v - u)
        return n - (v & ((1 << n) - 1)).bit_count()

    def check_and_add(self, text: str) -> bool:
        b = self._ids(text)
        for masks, n in self.kept:
            self.comparisons += 1
            lcs = self._lcs(masks, n, b) if n and b else 0
            if lcs:
                p, r = lcs / len(b), lcs / n
                if 2 * p * r / (p + r) > self.threshold:
                    return False
        masks: dict[int, int] = {}
        for i, tok in enumerate(b):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        self.kept.append((masks, len(b)))
        return True


# ----------------------------------------------------------------------------- recall


def _shingles(text: str, k: int) -> set[tuple[str, ...]]:
    t = tokenize(text)
    return {tuple(t[i : i + k]) for i in range(max(len(t) - k + 1, 1))}


def _recall_in(idx: list[int], reasons, expected: set[str]) -> str:
    caught = sum(1 for i in idx if reasons[i] in expected)
    return f"{caught}/{len(idx)}"


def planted_recall(questions, labels, sources, reasons, cfg: FilteringConfig) -> dict:
    expected = {
        "exact_dup": {"duplicate_exact", "duplicate_near"},
        "near_dup": {"duplicate_near", "duplicate_exact"},
        "existing_exact": {"duplicate_exact", "duplicate_near"},
        "existing_near": {"duplicate_near", "duplicate_exact"},
        "contam_verbatim": {"contaminated_ngram", "contaminated_near"},
        "contam_edited": {"contaminated_ngram", "contaminated_near"},
        "malformed": {"malformed"},
        "short": {"too_short"},
        "long": {"too_long"},
    }
    out: dict[str, dict] = {}
    for label in ["unique", *expected]:
        idx = [i for i, lab in enumerate(labels) if lab == label]
        by_reason: dict[str, int] = {}
        for i in idx:
            key = reasons[i] or "kept"
            by_reason[key] = by_reason.get(key, 0) + 1
        row: dict = {"planted": len(idx), "outcome": dict(sorted(by_reason.items()))}
        if label in expected:
            caught = sum(1 for i in idx if reasons[i] in expected[label])
            row["caught"] = caught
            row["recall"] = round(caught / len(idx), 4) if idx else None
        if label in ("near_dup", "existing_near"):
            # Only edits that keep shingle Jaccard >= threshold are near duplicates by the
            # filter's definition; report recall on those separately.
            k = cfg.shingle_size
            sims = []
            for i in idx:
                a, b = _shingles(sources[i], k), _shingles(questions[i], k)
                sims.append(len(a & b) / len(a | b))
            above = [i for i, s in zip(idx, sims) if s >= cfg.near_dup_threshold]
            edges = [cfg.near_dup_threshold, 0.85, 0.9, 0.95, 1.01]
            row["recall_by_true_jaccard"] = {
                f"[{lo:.2f},{min(hi, 1.0):.2f}{']' if hi > 1 else ')'}": _recall_in(
                    [i for i, s in zip(idx, sims) if lo <= s < hi], reasons, expected[label]
                )
                for lo, hi in itertools.pairwise(edges)
            }
            row["true_jaccard_at_or_above_threshold"] = len(above)
            row["recall_where_jaccard_at_or_above_threshold"] = (
                round(sum(1 for i in above if reasons[i] in expected[label]) / len(above), 4)
                if above
                else None
            )
        out[label] = row
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="generated questions")
    ap.add_argument(
        "--existing", type=int, default=0, help="dataset size (GSM8K train topped up to this)"
    )
    ap.add_argument("--baseline-sample", type=int, default=2000, help="questions for ROUGE-L")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-perm", type=int, default=None, help="override filtering.num_perm")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    cfg = FilteringConfig() if args.num_perm is None else FilteringConfig(num_perm=args.num_perm)
    load_at_start = os.getloadavg()[0]
    gen = Generator(args.seed)
    test_sets, test_sources = load_test_sets(gen)
    existing, existing_source = load_existing(gen, args.existing)
    questions, labels, sources = build_candidates(args.n, gen, existing, test_sets)
    print(
        f"filtering {len(questions):,} candidates against {len(existing):,} dataset questions "
        f"and {sum(map(len, test_sets.values())):,} test questions...",
        file=sys.stderr,
        flush=True,
    )

    gc.collect()
    rss_before = _rss_mb()
    peak_reset = _reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    reasons: list[str | None] = []
    benchmarks: list[str | None] = []
    stream = filter_stream(
        (
            Problem(id=f"g{i}", question=q, origin="similar", round=1)
            for i, q in enumerate(questions)
        ),
        existing=existing,
        test_sets=test_sets,
        cfg=cfg,
    )
    for _, reason, bench in stream:
        reasons.append(reason)
        benchmarks.append(bench)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    filter_peak = _peak_rss_mb() if peak_reset else float("nan")
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for reason in reasons:
        if reason is not None:
            dropped[reason] += 1
    by_benchmark = dict(sorted(Counter(b for b in benchmarks if b is not None).items()))

    k = min(args.baseline_sample, len(questions))
    sample = questions[:k]
    base = RougeLDedup()
    t0, c0 = time.perf_counter(), time.process_time()
    base_kept = [base.check_and_add(q) for q in sample]
    base_s, base_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    ours_sample = Deduplicator([], cfg).check_and_add_many(sample)
    ours_sample_s = time.perf_counter() - t0
    extrapolated = base_s * (args.n / k) ** 2
    extrapolated_cpu = base_cpu * (args.n / k) ** 2

    report = {
        "command": "python -m bench.bench_filter "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_candidates": args.n,
        "config": cfg.model_dump(),
        "test_sets": {
            name: {"n": len(v), "source": test_sources[name]} for name, v in test_sets.items()
        },
        "existing": {"n": len(existing), "source": existing_source},
        "ours_seconds": round(ours_s, 3),
        "ours_cpu_seconds": round(ours_cpu, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "load_average_1min_at_start": round(load_at_start, 2),
        "kept": reasons.count(None),
        "dropped": dropped,
        "contaminated_by_benchmark": by_benchmark,
        "planted": planted_recall(questions, labels, sources, reasons, cfg),
        "baseline": {
            "method": "LLM2LLM pairwise ROUGE-L F > 0.7 against every kept question "
            "(bit-parallel LCS, early exit)",
            "sample": k,
            "seconds": round(base_s, 3),
            "cpu_seconds": round(base_cpu, 3),
            "comparisons": base.comparisons,
            "dropped": k - sum(base_kept),
            "dropped_by_planted_label": _count_labels(labels[:k], [not x for x in base_kept]),
            "extrapolation": f"T(N) = T(n) * (N/n)^2 = {base_s:.2f} s * ({args.n}/{k})^2",
            "extrapolated_seconds": round(extrapolated, 1),
            "extrapolated_cpu_seconds": round(extrapolated_cpu, 1),
            "ours_dedup_only_same_sample_seconds": round(ours_sample_s, 4),
            "ours_dedup_only_same_sample_dropped": sum(r is not None for r in ours_sample),
            "ours_dedup_only_dropped_by_planted_label": _count_labels(
                labels[:k], [r is not None for r in ours_sample]
            ),
        },
        "speedup_vs_extrapolated_baseline": round(extrapolated / ours_s, 1),
        "speedup_vs_extrapolated_baseline_cpu": round(extrapolated_cpu / ours_cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "filter_rss_before_mb": round(rss_before, 1),
        "filter_peak_rss_mb": round(filter_peak, 1),
        "filter_memory_mb": round(filter_peak - rss_before, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))
    print(f"\nwrote {args.out}")
    return report


def _count_labels(labels: list[str], dropped: list[bool]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label, d in zip(labels, dropped):
        if d:
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _markdown(r: dict) -> str:
    b = r["baseline"]
    lines = [
        (
            f"Filter benchmark: {r['n_candidates']:,} generated questions (streamed), dataset "
            f"{r['existing']['n']:,} ({r['existing']['source']})"
        ),
        "",
        "Test sets: "
        + "; ".join(f"{k} {v['n']:,} {v['source']}" for k, v in r["test_sets"].items()),
        "",
        "| measure | value |",
        "|---|---|",
    ]
    contaminated = ", ".join(f"{k} {v}" for k, v in r["contaminated_by_benchmark"].items())
    measures = [
        (
            f"ours: filter_stream on {r['n_candidates']:,} (dedup + decontamination, 4 test sets)",
            f"{r['ours_seconds']:.1f} s wall, {r['ours_cpu_seconds']:.1f} s CPU",
        ),
        ("kept", f"{r['kept']:,}"),
        *((f"dropped: {reason}", f"{count:,}") for reason, count in r["dropped"].items()),
        ("contamination by benchmark", contaminated),
        (
            f"baseline ROUGE-L dedup, {b['sample']:,}-question sample",
            f"{b['seconds']:.1f} s wall, {b['cpu_seconds']:.1f} s CPU "
            f"({b['comparisons']:,} comparisons, {b['dropped']} dropped)",
        ),
        (
            "ours, dedup only, same sample",
            f"{b['ours_dedup_only_same_sample_seconds']:.3f} s "
            f"({b['ours_dedup_only_same_sample_dropped']} dropped)",
        ),
        (
            "sample drops by planted label: baseline / ours",
            f"{_fmt(b['dropped_by_planted_label'])} / "
            f"{_fmt(b['ours_dedup_only_dropped_by_planted_label'])}",
        ),
        (
            f"baseline extrapolated to {r['n_candidates']:,} ({b['extrapolation']})",
            f"{b['extrapolated_seconds']:,.0f} s wall, {b['extrapolated_cpu_seconds']:,.0f} s CPU",
        ),
        (
            "speed-up (extrapolated baseline / ours)",
            f"{r['speedup_vs_extrapolated_baseline']:,.0f}x wall, "
            f"{r['speedup_vs_extrapolated_baseline_cpu']:,.0f}x CPU",
        ),
        (
            "1-minute load average at start / end (2 shared cores)",
            f"{r['load_average_1min_at_start']} / {r['load_average_1min']}",
        ),
        (
            "filter memory: peak resident set while filtering, above the resident set before",
            f"{r['filter_memory_mb']:.0f} MB (peak {r['filter_peak_rss_mb']:.0f} MB, before "
            f"{r['filter_rss_before_mb']:.0f} MB)",
        ),
        (
            "peak RSS of the whole bench (candidates, planted labels, baseline)",
            f"{r['peak_rss_mb']:.0f} MB",
        ),
    ]
    lines += [f"| {measure} | {value} |" for measure, value in measures]
    lines += [
        "",
        "| planted | n | caught | recall | outcome |",
        "|---|---|---|---|---|",
    ]
    for label, row in r["planted"].items():
        extra = ""
        if "recall_where_jaccard_at_or_above_threshold" in row:
            extra = (
                f" (true Jaccard >= threshold: {row['true_jaccard_at_or_above_threshold']}, "
                f"recall there {row['recall_where_jaccard_at_or_above_threshold']})"
            )
        if "recall_by_true_jaccard" in row:
            extra += "; by true Jaccard " + ", ".join(
                f"{k} {v}" for k, v in row["recall_by_true_jaccard"].items()
            )
        outcome = ", ".join(f"{k} {v}" for k, v in row["outcome"].items())
        lines.append(
            f"| {label} | {row['planted']:,} | {row.get('caught', '-')} "
            f"| {row.get('recall', '-')}{extra} | {outcome} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
