"""Word problems from an explicit latent structure: what a problem *is*, apart from its words.

A `Structure` is one story kind (a collector's items, a shop's stock, savings, a water
tank), its entities (a person, a friend, a noun with its unit), a start quantity, a chain
of steps (``add``, ``sub``, ``mul``, ``div``, ``pct`` = take away a percentage) applied to
that quantity in order, and distractor clauses that state irrelevant numbers (in the spirit
of GSM-NoOp). Every choice of wording is part of the structure too (`phrasing` indices), so
`render` is a pure function and the same structure always reads the same.

From a structure follow, exactly:

- `answer`: the chain folded with exact fractions (every step keeps a positive whole
  number, by construction);
- `program`: the reference Program-of-Thought in the project's format (fdd_core/prompts.py:
  short Python that stores the final answer in `ans`), one line per step, distractors ignored;
- the teacher's operations on problems (`complex_variation`: one or two more steps or a
  distractor, same story, new answer; `similar_problem`: the same operations and as many
  distractors, new entities, numbers and wording), all driven by a `random.Random`.

Names and nouns come from fdd_core/embedded_problems.py, whose embedded set this world
extends with latent structure.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

from fdd_core.embedded_problems import GOODS, PEOPLE, THINGS

OPS = ("add", "sub", "mul", "div", "pct")
OP_WEIGHTS = {"add": 3, "sub": 3, "mul": 1, "div": 1, "pct": 1}
PERCENTS = (10, 20, 25, 50, 75)
TIMES_WORDS = {2: "twice", 3: "three times", 4: "four times"}
MAX_VALUE = 2000  # no intermediate quantity grows beyond this


@dataclass(frozen=True)
class Story:
    """One kind of situation: its nouns and every way each sentence can be worded.

    Placeholders: {name} {Pro} {pro} {pos} {obj} {friend} {noun} {v} {times}.
    """

    key: str
    nouns: tuple[tuple[str, str], ...]  # (noun as written, variable name in programs)
    start: tuple[str, ...]
    steps: dict[str, tuple[str, ...]]
    question: tuple[str, ...]
    start_range: tuple[int, int]
    add_range: tuple[int, int] = (2, 30)


def _things() -> tuple[tuple[str, str], ...]:
    return tuple((t, t.replace(" ", "_")) for t in THINGS)


STORIES: dict[str, Story] = {
    s.key: s
    for s in (
        Story(
            key="collector",
            nouns=_things(),
            start=("{name} has {v} {noun}.", "{name} starts the week with {v} {noun}."),
            steps={
                "add": (
                    "{Pro} buys {v} more {noun}.",
                    "{friend} gives {obj} {v} more {noun}.",
                    "Then {pro} finds {v} more {noun}.",
                ),
                "sub": (
                    "{Pro} gives {v} {noun} to {friend}.",
                    "Then {pro} loses {v} of the {noun}.",
                    "{Pro} uses {v} {noun} for a school project.",
                ),
                "mul": (
                    "Then {pro} collects until {pro} has {times} as many {noun} as before.",
                    "The number of {noun} {pro} has is multiplied by {v}.",
                ),
                "div": (
                    "{Pro} splits the {noun} into {v} equal piles and keeps one pile.",
                    "Then {pro} shares the {noun} equally among {v} cousins, "
                    "including {obj}self, and keeps one share.",
                ),
                "pct": (
                    "{Pro} gives away {v}% of {pos} {noun}.",
                    "Then {v}% of the {noun} get lost.",
                ),
            },
            question=(
                "How many {noun} does {name} have now?",
                "How many {noun} does {name} have at the end?",
            ),
            start_range=(8, 80),
        ),
        Story(
            key="shop",
            nouns=tuple((g[1], g[1].replace(" ", "_")) for g in GOODS),
            start=(
                "{name}'s shop has {v} {noun} in stock.",
                "A store run by {name} has {v} {noun}.",
            ),
            steps={
                "add": (
                    "A delivery brings {v} more {noun}.",
                    "{name} orders {v} more {noun} from a supplier.",
                ),
                "sub": ("The shop sells {v} {noun}.", "Customers buy {v} of the {noun}."),
                "mul": (
                    "After a big order the stock becomes {times} as large.",
                    "The number of {noun} is multiplied by {v}.",
                ),
                "div": (
                    "The {noun} are split equally among {v} branches, "
                    "and this shop keeps one share.",
                    "{name} packs the {noun} into {v} equal crates and keeps only one crate.",
                ),
                "pct": (
                    "{v}% of the {noun} are sold in a sale.",
                    "The shop sells {v}% of its {noun}.",
                ),
            },
            question=(
                "How many {noun} does the shop have now?",
                "How many {noun} are left in the shop at the end?",
            ),
            start_range=(20, 200),
        ),
        Story(
            key="savings",
            nouns=(("dollars", "money"),),
            start=("{name} has ${v} in savings.", "{name} has saved ${v}."),
            steps={
                "add": ("{Pro} earns ${v} mowing lawns.", "{friend} pays {obj} ${v} for a bike."),
                "sub": (
                    "{Pro} spends ${v} on a gift.",
                    "Then {pro} pays ${v} for a concert ticket.",
                ),
                "mul": (
                    "After selling {pos} old comics {pro} has {times} as much money as before.",
                    "{Pos} money is multiplied by {v}.",
                ),
                "div": (
                    "{Pro} splits {pos} money equally among {v} jars and keeps one jar.",
                    "Then {pro} shares the money equally between {v} siblings, "
                    "including {obj}self, and keeps one share.",
                ),
                "pct": (
                    "{Pro} spends {v}% of {pos} money on books.",
                    "Then {pro} donates {v}% of it.",
                ),
            },
            question=(
                "How many dollars does {name} have now?",
                "How much money, in dollars, does {name} have at the end?",
            ),
            start_range=(20, 300),
        ),
        Story(
            key="tank",
            nouns=(("liters", "water"),),
            start=(
                "{name}'s water tank holds {v} liters.",
                "A tank in {name}'s garden has {v} liters of water.",
            ),
            steps={
                "add": ("{name} pours in {v} more liters.", "Rain adds {v} liters to the tank."),
                "sub": ("{v} liters leak out.", "{name} uses {v} liters to water the plants."),
                "mul": (
                    "A pump fills it until it holds {times} as much water as before.",
                    "The amount of water is multiplied by {v}.",
                ),
                "div": (
                    "The water is shared equally among {v} tanks and this tank keeps one share.",
                    "{name} splits the water equally into {v} barrels "
                    "and keeps one barrel in the tank.",
                ),
                "pct": ("{v}% of the water evaporates.", "{name} drains {v}% of the water."),
            },
            question=(
                "How many liters of water are in the tank now?",
                "How many liters are left in the tank at the end?",
            ),
            start_range=(20, 300),
        ),
    )
}

DISTRACTORS = (
    "{friend} has {v} {other}.",
    "{name} is {v} years old.",
    "The walk to the park takes {v} minutes.",
    "{friend} had {v} more {noun} than {name} last year.",
)
CONNECT = ("", "After that, ", "Later, ")  # lead-ins a step sentence may get


@dataclass(frozen=True)
class Step:
    op: str
    value: int
    phrasing: int = 0
    lead: int = 0  # index into CONNECT


@dataclass(frozen=True)
class Distractor:
    after: int  # inserted after sentence `after` (0: after the start sentence)
    kind: int
    value: int
    other: int = 0  # index into THINGS for "{other}"


@dataclass(frozen=True)
class Structure:
    """A problem's latent structure (see the module docstring)."""

    story: str
    person: int
    friend: int
    noun: int
    start: int
    steps: tuple[Step, ...]
    distractors: tuple[Distractor, ...] = ()
    start_phrasing: int = 0
    question_phrasing: int = 0

    # -- values ------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(s.op for s in self.steps)

    def values(self) -> list[Fraction]:
        """The quantity after the start and after each step."""
        x = Fraction(self.start)
        out = [x]
        for s in self.steps:
            x = apply(s.op, x, s.value)
            out.append(x)
        return out

    def answer(self) -> int:
        value = self.values()[-1]
        if value.denominator != 1 or value <= 0:
            raise ValueError(f"structure has a non-whole or non-positive answer {value}")
        return int(value)

    # -- words and code ----------------------------------------------------------------

    def _fields(self) -> dict[str, str]:
        name, pro, pos = PEOPLE[self.person]
        obj = {"she": "her", "he": "him"}[pro]
        return {
            "name": name,
            "pro": pro,
            "Pro": pro.capitalize(),
            "pos": pos,
            "Pos": pos.capitalize(),
            "obj": obj,
            "friend": PEOPLE[self.friend][0],
            "noun": STORIES[self.story].nouns[self.noun][0],
        }

    def sentences(self) -> list[str]:
        story = STORIES[self.story]
        f = self._fields()
        out = [_fill(story.start[self.start_phrasing % len(story.start)], f, self.start)]
        for s in self.steps:
            texts = story.steps[s.op]
            text = _fill(texts[s.phrasing % len(texts)], f, s.value)
            lead = CONNECT[s.lead % len(CONNECT)]
            if lead and not text.startswith("Then "):
                text = lead + text[0].lower() + text[1:] if text[0] != "{" else lead + text
                text = _keep_names(text, f)
            out.append(text)
        for d in sorted(self.distractors, key=lambda d: d.after, reverse=True):
            f2 = dict(f, other=THINGS[d.other % len(THINGS)])
            out.insert(d.after + 1, _fill(DISTRACTORS[d.kind % len(DISTRACTORS)], f2, d.value))
        out.append(_fill(story.question[self.question_phrasing % len(story.question)], f, 0))
        return out

    def render(self) -> str:
        return " ".join(self.sentences())

    def variable(self) -> str:
        return STORIES[self.story].nouns[self.noun][1]

    def program(self) -> str:
        """The reference program: the start, one line per step, `ans` last."""
        x = self.variable()
        lines = [f"{x} = {self.start}"]
        lines += [f"{x} = {step_expr(x, s.op, s.value)}" for s in self.steps]
        lines.append(f"ans = {x}")
        return "\n".join(lines)

    # -- (de)serialisation -------------------------------------------------------------

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Structure:
        return cls(
            **{
                **data,
                "steps": tuple(Step(**s) for s in data["steps"]),
                "distractors": tuple(Distractor(**d) for d in data.get("distractors", ())),
            }
        )


def _keep_names(text: str, f: dict[str, str]) -> str:
    # Lower-casing the first letter after a lead-in must not lower-case a name.
    for key in ("name", "friend"):
        low = f[key][0].lower() + f[key][1:]
        if text.find(low) >= 0 and f[key] not in text:
            text = text.replace(low, f[key], 1)
    return text


def _fill(template: str, f: dict[str, str], v: int) -> str:
    return template.format(v=v, times=TIMES_WORDS.get(v, f"{v} times"), **f)


def apply(op: str, x: Fraction, v: int) -> Fraction:
    if op == "add":
        return x + v
    if op == "sub":
        return x - v
    if op == "mul":
        return x * v
    if op == "div":
        return x / v
    if op == "pct":
        return x - x * v / 100
    raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def step_expr(x: str, op: str, v: int) -> str:
    return {
        "add": f"{x} + {v}",
        "sub": f"{x} - {v}",
        "mul": f"{x} * {v}",
        "div": f"{x} / {v}",
        "pct": f"{x} - {x} * {v} / 100",
    }[op]


# --------------------------------------------------------------------------- sampling


def feasible_values(op: str, x: int, story: Story, rng: random.Random) -> list[int]:
    """Values `op` may take on quantity `x` keeping a positive whole number."""
    if op == "add":
        return list(range(story.add_range[0], story.add_range[1] + 1))
    if op == "sub":
        return list(range(2, min(x - 1, 60) + 1)) if x > 3 else []
    if op == "mul":
        return [k for k in (2, 3, 4) if x * k <= MAX_VALUE]
    if op == "div":
        return [k for k in range(2, 10) if x % k == 0 and x // k >= 2]
    if op == "pct":
        return [p for p in PERCENTS if (x * p) % 100 == 0]
    raise ValueError(op)


def _pick_op(rng: random.Random, x: int, story: Story) -> str:
    ops = [o for o in OPS if feasible_values(o, x, story, rng)]
    return rng.choices(ops, weights=[OP_WEIGHTS[o] for o in ops])[0]


def _phrasings(rng: random.Random, story: Story, op: str) -> tuple[int, int]:
    return rng.randrange(len(story.steps[op])), rng.randrange(len(CONNECT))


def _steps_for(
    rng: random.Random, story: Story, start: int, ops: tuple[str, ...] | int
) -> tuple[Step, ...] | None:
    """Steps with these ops (or this many random ones) from `start`; None if infeasible."""
    x, steps = start, []
    count = ops if isinstance(ops, int) else len(ops)
    for i in range(count):
        op = _pick_op(rng, x, story) if isinstance(ops, int) else ops[i]
        values = feasible_values(op, x, story, rng)
        if not values:
            return None
        v = rng.choice(values)
        phrasing, lead = _phrasings(rng, story, op)
        steps.append(Step(op, v, phrasing, lead if i else 0))
        x = int(apply(op, Fraction(x), v))
    return tuple(steps)


def _distractor(rng: random.Random, n_sentences: int) -> Distractor:
    return Distractor(
        after=rng.randrange(n_sentences),
        kind=rng.randrange(len(DISTRACTORS)),
        value=rng.randint(3, 40),
        other=rng.randrange(len(THINGS)),
    )


def _entities(rng: random.Random, story: Story) -> tuple[int, int, int]:
    person, friend = rng.sample(range(len(PEOPLE)), 2)
    return person, friend, rng.randrange(len(story.nouns))


def random_structure(
    rng: random.Random,
    n_steps: int,
    n_distractors: int = 0,
    *,
    story: str | None = None,
    ops: tuple[str, ...] | None = None,
) -> Structure:
    """A random structure with `n_steps` steps (or exactly `ops`) and distractors."""
    for _ in range(500):
        st = STORIES[story or rng.choice(sorted(STORIES))]
        start = rng.randint(*st.start_range)
        if ops is not None and any(o in ("div", "pct") for o in ops[:1]):
            start = rng.choice([s for s in range(*st.start_range) if s % 20 == 0] or [start])
        steps = _steps_for(rng, st, start, ops if ops is not None else n_steps)
        if steps is None:
            continue
        person, friend, noun = _entities(rng, st)
        distractors = tuple(_distractor(rng, len(steps) + 1) for _ in range(n_distractors))
        return Structure(
            story=st.key,
            person=person,
            friend=friend,
            noun=noun,
            start=start,
            steps=steps,
            distractors=distractors,
            start_phrasing=rng.randrange(len(st.start)),
            question_phrasing=rng.randrange(len(st.question)),
        )
    raise ValueError(f"no feasible structure for ops {ops} in story {story}")


# --------------------------------------------------------------------------- operations

VariationKind = str  # "extend1", "extend2", "distractor"


@dataclass(frozen=True)
class Variation:
    structure: Structure
    kind: VariationKind
    parent_answer: int = field(default=0)


def complex_variation(parent: Structure, rng: random.Random) -> Variation:
    """One or two more steps, or one more distractor: same story, a new answer."""
    story = STORIES[parent.story]
    for _ in range(200):
        kind = rng.choices(["extend1", "extend2", "distractor"], weights=[2, 1, 1])[0]
        if kind == "distractor":
            new = replace(
                parent, distractors=(*parent.distractors, _distractor(rng, parent.n_steps + 1))
            )
            # A distractor keeps the answer; it counts as harder because the question now
            # states a number that must be ignored. Change one step value so the answer
            # is new, as the prompt asks for.
            if parent.steps:
                i = rng.randrange(parent.n_steps)
                steps = _steps_for(rng, story, parent.start, parent.ops)
                if steps is None:
                    continue
                kept = [*parent.steps]
                kept[i] = replace(kept[i], value=steps[i].value)
                new = replace(new, steps=tuple(kept))
                if not _valid(new):
                    continue
        else:
            extra = 1 if kind == "extend1" else 2
            last = int(parent.values()[-1])
            more = _steps_for(rng, story, last, extra)
            if more is None:
                continue
            more = tuple(replace(s, lead=rng.randrange(1, len(CONNECT))) for s in more)
            new = replace(parent, steps=(*parent.steps, *more))
        if _valid(new) and new.answer() != parent.answer():
            return Variation(new, kind, parent.answer())
    raise ValueError("could not vary the structure")


def similar_problem(parent: Structure, rng: random.Random) -> Structure:
    """The same operations and as many distractors; new entities, numbers and wording."""
    for _ in range(200):
        new = random_structure(rng, parent.n_steps, len(parent.distractors), ops=parent.ops)
        if new.render() != parent.render():
            return new
    raise ValueError("could not find a similar problem")


def reworded(structure: Structure, rng: random.Random) -> Structure:
    """The same problem (same numbers, same answer) in other words where possible."""
    story = STORIES[structure.story]
    steps = tuple(
        replace(
            s,
            phrasing=(s.phrasing + 1 + rng.randrange(max(1, len(story.steps[s.op]) - 1)))
            % len(story.steps[s.op]),
            lead=(s.lead + 1) % len(CONNECT) if i else 0,
        )
        for i, s in enumerate(structure.steps)
    )
    return replace(
        structure,
        steps=steps,
        start_phrasing=(structure.start_phrasing + 1) % len(story.start),
        question_phrasing=(structure.question_phrasing + 1) % len(story.question),
    )


def _valid(s: Structure) -> bool:
    try:
        values = s.values()
    except ZeroDivisionError:
        return False
    return all(v.denominator == 1 and 0 < v <= MAX_VALUE for v in values)
