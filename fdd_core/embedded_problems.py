"""The embedded problem set: simple arithmetic word problems the project writes itself.

A deterministic generator (fixed seed, no network, no third-party data) fills the
project's own templates with names, objects and numbers. Each template is one kind of
problem: adding, taking away, equal groups, sharing exactly, prices and change,
percentages, rates, averages, and two- and three-step combinations of these. About half
the problems need one operation, because the quickstart's teacher is a 135M model that
rarely solves more; answers are whole numbers except for a few prices in cents.

The output is committed as fdd_core/data/embedded_{train,test}.jsonl, one
``{"question", "answer", "steps", "template"}`` object per line (`steps` counts the
arithmetic operations). Every question is unique across both splits. Run

    python -m fdd_core.embedded_problems --check   # files equal the generator's output?
    python -m fdd_core.embedded_problems --write   # regenerate them

after changing a template (and say so in the data README).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path

from fdd_core.schemas import normalize_text

SEED = 20241122
N_TRAIN = 200
N_TEST = 80
DATA_DIR = Path(__file__).resolve().parent / "data"
FILES = {"train": "embedded_train.jsonl", "test": "embedded_test.jsonl"}

# (name, subject pronoun, possessive pronoun)
PEOPLE = [
    ("Ava", "she", "her"),
    ("Liam", "he", "his"),
    ("Maya", "she", "her"),
    ("Noah", "he", "his"),
    ("Priya", "she", "her"),
    ("Omar", "he", "his"),
    ("Sofia", "she", "her"),
    ("Kenji", "he", "his"),
    ("Amara", "she", "her"),
    ("Lucas", "he", "his"),
    ("Zoe", "she", "her"),
    ("Mateo", "he", "his"),
    ("Chloe", "she", "her"),
    ("Ravi", "he", "his"),
    ("Hana", "she", "her"),
    ("Diego", "he", "his"),
    ("Nora", "she", "her"),
    ("Samuel", "he", "his"),
    ("Leila", "she", "her"),
    ("Tomas", "he", "his"),
    ("Grace", "she", "her"),
    ("Yusuf", "he", "his"),
    ("Mei", "she", "her"),
    ("Ethan", "he", "his"),
    ("Isla", "she", "her"),
    ("Kofi", "he", "his"),
    ("Elena", "she", "her"),
    ("Arjun", "he", "his"),
    ("Fatima", "she", "her"),
    ("Jonah", "he", "his"),
]
THINGS = [
    "stickers",
    "marbles",
    "pencils",
    "apples",
    "cookies",
    "books",
    "seashells",
    "stamps",
    "crayons",
    "oranges",
    "cupcakes",
    "buttons",
    "postcards",
    "toy cars",
    "beads",
    "trading cards",
    "balloons",
    "erasers",
]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets", "crates", "trays", "tins"]
# (singular, plural, price range in dollars)
GOODS = [
    ("notebook", "notebooks", (2, 9)),
    ("sandwich", "sandwiches", (4, 12)),
    ("movie ticket", "movie tickets", (7, 15)),
    ("plant", "plants", (5, 20)),
    ("toy robot", "toy robots", (10, 30)),
    ("candle", "candles", (3, 11)),
    ("mug", "mugs", (4, 14)),
    ("kite", "kites", (6, 18)),
    ("puzzle", "puzzles", (8, 25)),
    ("scarf", "scarves", (9, 28)),
    ("pen", "pens", (1, 5)),
    ("basketball", "basketballs", (12, 35)),
]
FOODS = ["cookies", "muffins", "brownies", "pancakes", "dumplings", "cupcakes"]
VEHICLES = [  # (vehicle, unit, lowest and highest speed)
    ("A train", "kilometers", 60, 160),
    ("A bus", "miles", 25, 65),
    ("A ferry", "kilometers", 15, 45),
    ("A car", "miles", 30, 75),
    ("A boat", "kilometers", 10, 40),
    ("A truck", "miles", 35, 70),
]
TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
GROUPS = [  # (place, members, description, its negation)
    ("A school", "students", "walk to school", "do not walk to school"),
    ("A garden", "flowers", "are red", "are not red"),
    ("A library", "books", "are novels", "are not novels"),
    ("A parking lot", "cars", "are electric", "are not electric"),
    ("A farm", "animals", "are chickens", "are not chickens"),
    ("A club", "members", "play chess", "do not play chess"),
]
PERCENTS = [10, 20, 25, 30, 40, 50, 60, 75, 80]

Template = Callable[[random.Random], "tuple[str, Fraction]"]


@dataclass(frozen=True)
class GeneratedProblem:
    question: str
    answer: int | float
    steps: int
    template: str

    def to_json(self) -> str:
        row = {
            "question": self.question,
            "answer": self.answer,
            "steps": self.steps,
            "template": self.template,
        }
        return json.dumps(row, ensure_ascii=False)


# ----------------------------------------------------------------------------- helpers


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    first, second = rng.sample(PEOPLE, 2)
    return first, second


def _money(value: Fraction) -> str:
    return f"${int(value)}" if value.denominator == 1 else f"${float(value):.2f}"


def _percent_base(rng: random.Random, percent: int, low: int, high: int) -> int:
    """A whole number in [low, high] whose `percent`% is a whole number too."""
    step = 100 // gcd(100, percent)  # the smallest such base
    choices = list(range(((low + step - 1) // step) * step, high + 1, step))
    return rng.choice(choices)


# --------------------------------------------------------------------- one-step templates


def add_gain(rng):
    (n, _, _), (f, _, _) = _two_people(rng)
    thing, a, b = rng.choice(THINGS), rng.randint(3, 60), rng.randint(2, 40)
    return (
        f"{n} has {a} {thing}. {f} gives {n} {b} more {thing}. How many {thing} does {n} have now?",
        Fraction(a + b),
    )


def subtract_give(rng):
    (n, s, _), (f, _, _) = _two_people(rng)
    thing, a = rng.choice(THINGS), rng.randint(12, 95)
    b = rng.randint(2, a - 3)
    return (
        f"{n} had {a} {thing}. {s.capitalize()} gave {b} of them to {f}. "
        f"How many {thing} does {n} have left?",
        Fraction(a - b),
    )


def equal_groups(rng):
    thing, box = rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 12), rng.randint(3, 15)
    return (
        f"There are {a} {box} and each one holds {b} {thing}. How many {thing} are there in all?",
        Fraction(a * b),
    )


def share_equally(rng):
    (n, _, _), _ = _two_people(rng)
    thing, k, each = rng.choice(THINGS), rng.randint(2, 9), rng.randint(2, 12)
    return (
        f"{n} shares {k * each} {thing} equally among {k} friends. "
        f"How many {thing} does each friend get?",
        Fraction(each),
    )


def price_total(rng):
    one, many, (lo, hi) = rng.choice(GOODS)
    price, k = rng.randint(lo, hi), rng.randint(2, 9)
    return (f"One {one} costs ${price}. How many dollars do {k} {many} cost?", Fraction(price * k))


def rate_distance(rng):
    vehicle, unit, lo, hi = rng.choice(VEHICLES)
    speed, hours = rng.randrange(lo, hi + 1, 5), rng.randint(2, 8)
    return (
        f"{vehicle} travels {speed} {unit} per hour. "
        f"How many {unit} does it travel in {hours} hours?",
        Fraction(speed * hours),
    )


def percent_of(rng):
    place, members, desc, _ = rng.choice(GROUPS)
    percent = rng.choice(PERCENTS)
    total = _percent_base(rng, percent, 20, 400)
    return (
        f"{place} has {total} {members}. {percent}% of them {desc}. How many {members} {desc}?",
        Fraction(total * percent, 100),
    )


def more_than(rng):
    (n, _, _), (f, _, _) = _two_people(rng)
    thing, a, b = rng.choice(THINGS), rng.randint(4, 50), rng.randint(2, 30)
    return (
        f"{n} has {a} {thing}. {f} has {b} more {thing} than {n}. How many {thing} does {f} have?",
        Fraction(a + b),
    )


def unit_price(rng):
    one, many, (lo, hi) = rng.choice(GOODS)
    cents = rng.choice([0, 0, 0, 50, 25, 75])  # mostly whole dollars, a few with cents
    price = Fraction(rng.randint(lo, hi)) + Fraction(cents, 100)
    (n, _, _), _ = _two_people(rng)
    k = rng.randint(2, 8)
    return (
        f"{n} pays {_money(price * k)} for {k} {many}. How many dollars does one {one} cost?",
        price,
    )


def pages_per_day(rng):
    (n, s, _), _ = _two_people(rng)
    pages, days = rng.randint(5, 40), rng.randint(2, 14)
    return (
        f"{n} reads {pages} pages every day. How many pages does {s} read in {days} days?",
        Fraction(pages * days),
    )


# --------------------------------------------------------------------- two-step templates


def gain_then_give(rng):
    (n, s, _), (f, _, _) = _two_people(rng)
    thing, a, b = rng.choice(THINGS), rng.randint(5, 50), rng.randint(3, 30)
    c = rng.randint(2, a + b - 2)
    return (
        f"{n} has {a} {thing}. {s.capitalize()} buys {b} more and then gives {c} to {f}. "
        f"How many {thing} does {n} have now?",
        Fraction(a + b - c),
    )


def groups_plus_extra(rng):
    (n, _, _), _ = _two_people(rng)
    thing, box = rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b, c = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 15)
    return (
        f"{n} has {a} {box} with {b} {thing} in each, and {c} more {thing} on the table. "
        f"How many {thing} does {n} have altogether?",
        Fraction(a * b + c),
    )


def change_from_bill(rng):
    (n, s, _), _ = _two_people(rng)
    _, many, (lo, hi) = rng.choice(GOODS)
    price, k = rng.randint(lo, hi), rng.randint(2, 5)
    bill = next(b for b in (10, 20, 50, 100, 200) if b > price * k)
    return (
        f"{n} buys {k} {many} for ${price} each and pays with a ${bill} bill. "
        f"How many dollars of change does {s} get?",
        Fraction(bill - price * k),
    )


def percent_rest(rng):
    place, members, desc, neg = rng.choice(GROUPS)
    percent = rng.choice(PERCENTS)
    total = _percent_base(rng, percent, 20, 400)
    return (
        f"{place} has {total} {members}. {percent}% of them {desc}. How many {members} {neg}?",
        Fraction(total * (100 - percent), 100),
    )


def sale_price(rng):
    one, _, (lo, hi) = rng.choice(GOODS)
    percent = rng.choice([10, 20, 25, 50])
    price = _percent_base(rng, percent, lo * 2, hi * 4)
    return (
        f"A {one} costs ${price}. It is on sale for {percent}% off. "
        f"What is the sale price in dollars?",
        Fraction(price * (100 - percent), 100),
    )


def wage_days(rng):
    (n, s, _), _ = _two_people(rng)
    wage, hours, days = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6)
    return (
        f"{n} earns ${wage} per hour. {s.capitalize()} works {hours} hours a day "
        f"for {days} days. How many dollars does {s} earn?",
        Fraction(wage * hours * days),
    )


def average_score(rng):
    (n, _, p), _ = _two_people(rng)
    scores = [rng.randint(6, 40) for _ in range(3)]
    scores[2] += (-sum(scores)) % 3  # make the total divisible by 3
    a, b, c = scores
    return (
        f"{n} scored {a}, {b} and {c} points in three games. What was {p} average score per game?",
        Fraction(a + b + c, 3),
    )


def eat_then_share(rng):
    (n, s, _), _ = _two_people(rng)
    food, k = rng.choice(FOODS), rng.randint(2, 6)
    each, eaten = rng.randint(2, 8), rng.randint(1, 6)
    total = k * each + eaten
    return (
        f"{n} baked {total} {food}. {s.capitalize()} ate {eaten} and shared the rest "
        f"equally among {k} friends. How many {food} did each friend get?",
        Fraction(each),
    )


def times_as_many_total(rng):
    (n, _, _), (f, _, _) = _two_people(rng)
    thing, a, m = rng.choice(THINGS), rng.randint(3, 25), rng.randint(2, 5)
    return (
        f"{n} has {a} {thing}. {f} has {TIMES[m]} as many {thing} as {n}. "
        f"How many {thing} do they have together?",
        Fraction(a + a * m),
    )


# ------------------------------------------------------------------- three-step templates


def packs_minus_gifts(rng):
    (n, s, _), _ = _two_people(rng)
    thing = rng.choice(THINGS)
    a, b, c, d = rng.randint(2, 8), rng.randint(5, 12), rng.randint(2, 5), rng.randint(2, 6)
    if a * b <= c * d:
        a += (c * d) // b + 1
    return (
        f"{n} buys {a} packs of {thing} with {b} {thing} in each pack. "
        f"{s.capitalize()} gives {c} {thing} to each of {d} friends. "
        f"How many {thing} does {n} have left?",
        Fraction(a * b - c * d),
    )


def work_then_spend(rng):
    (n, s, _), _ = _two_people(rng)
    wage, h1, h2 = rng.randint(8, 20), rng.randint(2, 6), rng.randint(2, 6)
    spend = rng.randint(5, wage * (h1 + h2) - 5)
    return (
        f"{n} earns ${wage} per hour. {s.capitalize()} works {h1} hours on Monday and "
        f"{h2} hours on Tuesday, then spends ${spend} on a gift. "
        f"How many dollars does {s} have left?",
        Fraction(wage * (h1 + h2) - spend),
    )


def store_sells(rng):
    _, many, _ = rng.choice(GOODS)
    percent = rng.choice([10, 20, 25, 40, 50])
    total = _percent_base(rng, percent, 40, 300)
    sold_pm = rng.randint(1, total * (100 - percent) // 100 - 1)
    return (
        f"A store has {total} {many}. It sells {percent}% of them in the morning and "
        f"{sold_pm} more in the afternoon. How many {many} are left?",
        Fraction(total * (100 - percent), 100) - sold_pm,
    )


def two_leg_trip(rng):
    vehicle, unit, lo, hi = rng.choice(VEHICLES)
    s1, s2 = rng.randrange(lo, hi + 1, 5), rng.randrange(lo, hi + 1, 5)
    h1, h2 = rng.randint(2, 5), rng.randint(2, 5)
    return (
        f"{vehicle} travels at {s1} {unit} per hour for {h1} hours and then at {s2} "
        f"{unit} per hour for {h2} hours. How many {unit} does it travel in total?",
        Fraction(s1 * h1 + s2 * h2),
    )


def two_item_shopping(rng):
    (n, s, _), _ = _two_people(rng)
    (_, many1, r1), (_, many2, r2) = rng.sample(GOODS, 2)
    a, b = rng.randint(2, 6), rng.randint(2, 6)
    p1, p2 = rng.randint(*r1), rng.randint(*r2)
    return (
        f"{n} buys {a} {many1} at ${p1} each and {b} {many2} at ${p2} each. "
        f"How many dollars does {s} spend in total?",
        Fraction(a * p1 + b * p2),
    )


# (template, operations, weight in the schedule): one-step problems get about half.
TEMPLATES: list[tuple[Template, int, int]] = [
    (add_gain, 1, 3),
    (subtract_give, 1, 3),
    (equal_groups, 1, 3),
    (share_equally, 1, 3),
    (price_total, 1, 3),
    (rate_distance, 1, 3),
    (percent_of, 1, 3),
    (more_than, 1, 3),
    (unit_price, 1, 3),
    (pages_per_day, 1, 3),
    (gain_then_give, 2, 2),
    (groups_plus_extra, 2, 2),
    (change_from_bill, 2, 2),
    (percent_rest, 2, 2),
    (sale_price, 2, 2),
    (wage_days, 2, 2),
    (average_score, 2, 2),
    (eat_then_share, 2, 2),
    (times_as_many_total, 2, 2),
    (packs_minus_gifts, 3, 2),
    (work_then_spend, 3, 2),
    (store_sells, 3, 2),
    (two_leg_trip, 3, 2),
    (two_item_shopping, 3, 2),
]


def _schedule() -> list[tuple[Template, int]]:
    """Templates interleaved by weight, so every stretch of the output mixes kinds."""
    rounds = max(w for _, _, w in TEMPLATES)
    return [(t, steps) for r in range(rounds) for t, steps, w in TEMPLATES if r < w]


def _plain(answer: Fraction, template: str) -> int | float:
    if answer <= 0:
        raise AssertionError(f"template {template} made a non-positive answer {answer}")
    if answer.denominator == 1:
        return int(answer)
    if 100 % answer.denominator:
        raise AssertionError(f"template {template} made a non-terminating answer {answer}")
    return float(answer)


def generate(
    n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = SEED
) -> dict[str, list[GeneratedProblem]]:
    """The embedded set: unique questions, about 2 in 7 of each kind go to test."""
    rng = random.Random(seed)
    schedule = _schedule()
    seen: set[str] = set()
    splits: dict[str, list[GeneratedProblem]] = {"train": [], "test": []}
    i = 0
    while len(splits["train"]) < n_train or len(splits["test"]) < n_test:
        template, steps = schedule[i % len(schedule)]
        split = "test" if i % 7 in (1, 4) else "train"
        i += 1
        if len(splits[split]) >= (n_test if split == "test" else n_train):
            continue
        for _ in range(100):  # redraw the rare repeats
            question, answer = template(rng)
            key = normalize_text(question)
            if key not in seen:
                break
        else:
            raise AssertionError(f"template {template.__name__} keeps repeating itself")
        seen.add(key)
        splits[split].append(
            GeneratedProblem(question, _plain(answer, template.__name__), steps, template.__name__)
        )
    return splits


def render(problems: list[GeneratedProblem]) -> str:
    return "".join(p.to_json() + "\n" for p in problems)


def check(data_dir: Path = DATA_DIR) -> list[str]:
    """Differences between the committed files and the generator's output (empty: equal)."""
    problems = []
    for split, rows in generate().items():
        path = data_dir / FILES[split]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != render(rows):
            problems.append(f"{path}: differs from the generator's output")
    return problems


def write(data_dir: Path = DATA_DIR) -> list[Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in generate().items():
        path = data_dir / FILES[split]
        path.write_text(render(rows), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the committed files differ from the generator",
    )
    action.add_argument("--write", action="store_true", help="regenerate the files")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.data_dir):
            print(f"wrote {path}")
        return 0
    differences = check(args.data_dir)
    for line in differences:
        print(line, file=sys.stderr)
    if differences:
        print("run `python -m fdd_core.embedded_problems --write` to regenerate", file=sys.stderr)
        return 1
    print("embedded problem files match the generator")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
