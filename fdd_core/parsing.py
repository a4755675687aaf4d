"""Parsers of model output: the program in a completion, and the problems in a list.

Both never raise on model output (anything, including None or bytes, goes in); they return
a value holding the result or nothing plus a reason, so that one bad generation never
sinks a batch and failures can be counted.

`extract_program` finds a Python program that assigns `ans`:

1. Candidates, in order: each ```` ``` ```` fenced block (``python``/``py`` tags or none;
   an unterminated fence runs to the end of the text), then the whole text with the fence
   lines removed (raw code, as a student writes it).
2. A candidate starts at its first line that looks like code (chat preambles such as
   "Sure! Here is the program:" are dropped) and ends before a following "Question:" or
   "Problem:" line (a model running on into an invented next problem).
3. It is repaired line by line against Python's own parser and compiler: a line that does
   not parse and does not look like code (prose between or after statements) is dropped;
   a broken line that looks like code cuts the program there (a generation stopped by
   the token limit mid-statement), unless that line or a later one stores `ans`: then
   the candidate has no program, since what is left would compute something else.
   Top-level bare names (an "Answer" line or a notebook-style trailing ``ans``) are
   dropped: they do nothing but can fail with NameError.
4. If the program never stores `ans`: when its last statement is ``print(expr)``, that
   statement becomes ``ans = expr`` (for ``print(f"... {x}")`` and ``print("label", x)``
   the printed value ``x``); when it defines a function ``solution`` (or ``solve``,
   ``main``, ``compute``, ``answer``, ``calculate``) with no required arguments and
   never calls it, ``ans = solution()`` is appended. These fixes are listed in
   `ParsedProgram.fixes`.
5. The first candidate that compiles and stores `ans` wins. Otherwise the reason is
   "syntax_error" (code was there but did not compile), "no_ans_assignment" (it compiled
   but never stores `ans`) or "no_code"; "empty" for blank or non-text input, and
   "parse_failure" should a bug in this module raise (caught, never seen in the tests).

Nothing here runs the program; the sandbox does that. Compiling only checks syntax.

`extract_problems` splits a list of generated problems: numbered items ("1." "1)" "(1)"
"Problem 1:" "Question 1:" "Q1:"), else bullets ("-", "*", "•"), else blank-line separated
paragraphs; a preamble before the first item is dropped. From each item it strips labels
("Question:", "Harder problem:"), any appended answer or solution ("Answer: 12",
"Solution: ...", code fences), and text after the last question mark; it drops fragments
that are too short, ask nothing, or state no quantity (no digit and no number word: a
numbered step of a solution, not a problem), and exact repeats within the same completion.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass

__all__ = [
    "ParsedProblems",
    "ParsedProgram",
    "extract_problems",
    "extract_program",
]

MAX_CHARS = 20_000  # longer outputs are cut: bounds the work on runaway generations
MAX_LINES = 400
MAX_REPAIRS = 200

# ------------------------------------------------------------------------------ programs


@dataclass(frozen=True)
class ParsedProgram:
    """A program that stores `ans`, or None and why not."""

    program: str | None
    reason: str | None
    fixes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.program is not None


_FENCE = re.compile(r"`{3,}")
_FENCE_LINE = re.compile(r"^[ \t]*`{3,}[A-Za-z0-9_+.#-]*[ \t]*$", re.MULTILINE)
_LANG_TAG = re.compile(r"[A-Za-z0-9_+.#-]*")
_NEXT_QUESTION = re.compile(r"^\s*(?:Question|Problem)\s*\d*\s*[:.]", re.IGNORECASE)
_KEYWORDS = (
    "def",
    "class",
    "for",
    "while",
    "if",
    "elif",
    "else",
    "try",
    "except",
    "finally",
    "with",
    "return",
    "import",
    "from",
    "assert",
    "pass",
    "break",
    "continue",
    "raise",
    "global",
    "del",
    "async",
    "await",
)
_CODE_LINE = re.compile(
    r"""^\s*(?:
        [A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*(?:,\s*[A-Za-z_]\w*\s*)*
            (?:=(?!=)|\+=|-=|\*=|/=|//=|%=|\*\*=)         # assignment
      | (?:"""
    + "|".join(_KEYWORDS)
    + r""")\b             # statement keyword
      | [A-Za-z_][\w.]*\s*\(                              # call: print(...), f(x)
      | \#                                                # comment
      | [\])}]                                            # closing bracket
    )""",
    re.VERBOSE,
)
_STORES_ANS_LINE = re.compile(r"^\s*ans\s*(?:[-+*/%]|//|\*\*)?=(?!=)")
_SOLUTION_FUNCS = ("solution", "solve", "main", "compute", "answer", "calculate")


def _looks_like_code(line: str) -> bool:
    return bool(_CODE_LINE.match(line)) or (line[:1] in (" ", "\t") and bool(line.strip()))


def _compile_error_line(source: str) -> int | None:
    """None when `source` compiles; else the 1-based line of the error (0: unknown)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes and `is 5`
            compile(source, "<program>", "exec", dont_inherit=True)
        return None
    except SyntaxError as exc:
        return exc.lineno or 0
    except (ValueError, RecursionError, MemoryError, OverflowError):
        return 0


def _stores_ans(tree: ast.AST) -> bool:
    """True when module-level code (not a function body) stores the name `ans`."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Name) and node.id == "ans" and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.alias) and (node.asname or node.name) == "ans":
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def _cut_at_next_question(lines: list[str]) -> list[str]:
    """Lines up to a "Question:" line that follows code (an echoed question before is kept
    out by the code start anyway)."""
    seen_code = False
    for i, line in enumerate(lines):
        if seen_code and _NEXT_QUESTION.match(line):
            return lines[:i]
        seen_code = seen_code or _looks_like_code(line)
    return lines


def _repair(lines: list[str]) -> tuple[list[str], bool]:
    """Drop prose lines and cut at broken code until the rest compiles.

    Returns the lines (possibly empty) and whether a broken code line was cut.
    """
    cut_code = False
    for _ in range(MAX_REPAIRS):
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        if not lines:
            return [], cut_code
        error_line = _compile_error_line("\n".join(lines))
        if error_line is None:
            return lines, cut_code
        index = min(max(error_line, 1), len(lines)) - 1
        if not _looks_like_code(lines[index]) and any(
            _looks_like_code(line) for line in lines[index + 1 :]
        ):
            lines = lines[:index] + lines[index + 1 :]  # prose between statements
            continue
        if _looks_like_code(lines[index]):
            cut_code = True
            if any(_STORES_ANS_LINE.match(line) for line in lines[index:]):
                # Cutting would drop a store of `ans`: what is left would give another
                # answer than the program meant, so this candidate has no program.
                return [], cut_code
        if index == 0 and "=" not in lines[0]:
            # A first line that only looked like code ("for example, ...", "Total (in
            # dollars): 5"): drop it and look further. A broken assignment is not skipped:
            # what follows would use a name it never defined.
            lines = lines[1:]
            continue
        lines = lines[:index]
    return [], cut_code


def _drop_bare_names(source: str, tree: ast.Module) -> str:
    lines = source.split("\n")
    drop: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Name):
            drop.update(range(stmt.lineno - 1, (stmt.end_lineno or stmt.lineno)))
    if not drop:
        return source
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def _printed_value(call: ast.Call) -> ast.expr | None:
    """The value a final print shows: print(x), print(f"... {x}"), print("label:", x)."""
    if call.keywords or not call.args or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    arg = call.args[-1]
    if isinstance(arg, ast.JoinedStr):
        values = [v for v in arg.values if isinstance(v, ast.FormattedValue)]
        return values[0].value if len(values) == 1 else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return None
    if len(call.args) > 1 and not all(
        isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args[:-1]
    ):
        return None
    return arg


def _add_ans(source: str, tree: ast.Module) -> tuple[str, str] | None:
    """A version of `source` that stores `ans`, and the name of the fix; or None."""
    if not tree.body:
        return None
    last = tree.body[-1]
    if (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name)
        and last.value.func.id == "print"
    ):
        value = _printed_value(last.value)
        segment = ast.get_source_segment(source, value) if value is not None else None
        if segment is not None and segment.strip() != "ans":
            lines = source.split("\n")
            head = lines[: last.lineno - 1]
            return "\n".join(head + ["ans = " + " ".join(segment.split("\n"))]), "print_to_ans"
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.FunctionDef)
            and stmt.name in _SOLUTION_FUNCS
            and stmt.name not in called
            and len(stmt.args.args) == len(stmt.args.defaults)
            and not stmt.args.posonlyargs
            and all(d is not None for d in stmt.args.kw_defaults)
        ):
            return source.rstrip() + f"\nans = {stmt.name}()", "call_" + stmt.name
    return None


def _salvage_ans(source: str, tree: ast.Module) -> tuple[str, str] | None:
    """Last resort, tried only when no candidate stores `ans` by itself.

    Small models often compute the result into a variable of their own naming, or leave
    it as a final expression; the answer is still verified (round 0) or voted on.
    """
    last = tree.body[-1]
    if isinstance(last, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = last.targets if isinstance(last, ast.Assign) else [last.target]
        if len(targets) == 1 and isinstance(targets[0], ast.Name):
            return source.rstrip() + f"\nans = {targets[0].id}", "last_assignment_to_ans"
    if isinstance(last, ast.Expr) and isinstance(last.value, (ast.BinOp, ast.Name, ast.Constant)):
        segment = ast.get_source_segment(source, last.value)
        if segment is not None:
            head = source.split("\n")[: last.lineno - 1]
            return "\n".join(head + ["ans = " + " ".join(segment.split("\n"))]), "expression_to_ans"
    return None


def _finish(lines: list[str], salvage: bool = False) -> tuple[ParsedProgram | None, str]:
    """Turn repaired lines into a program, or (None, reason)."""
    source = textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip("\n")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, "syntax_error"
    source = _drop_bare_names(source, tree)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, "syntax_error"
    if not tree.body:
        return None, "no_code"
    if _stores_ans(tree):
        return ParsedProgram(source, None), ""
    fixed = _add_ans(source, tree) or (_salvage_ans(source, tree) if salvage else None)
    if fixed is not None and _compile_error_line(fixed[0]) is None:
        return ParsedProgram(fixed[0], None, (fixed[1],)), ""
    return None, "no_ans_assignment"


def _candidate(block: str, salvage: bool = False) -> tuple[ParsedProgram | None, str]:
    lines = block.split("\n")[:MAX_LINES]
    start = next((i for i, line in enumerate(lines) if _looks_like_code(line)), None)
    if start is None:
        return None, "no_code"
    lines = _cut_at_next_question(lines[start:])
    # Dedent before compiling: a whole block indented by the model is still a program.
    lines = textwrap.dedent("\n".join(lines)).split("\n")
    lines, cut_code = _repair(lines)
    if not lines:
        return None, "syntax_error"
    # Never salvage repaired code: the dropped line may have been the real answer.
    parsed, reason = _finish(lines, salvage and not cut_code)
    if parsed is None and cut_code and reason == "no_ans_assignment":
        reason = "syntax_error"  # the statement that stored `ans` was probably the broken one
    return parsed, reason


def _fenced_blocks(text: str) -> tuple[list[str], str]:
    """The contents of ``` fences (language tag removed) and the text without fence lines."""
    parts = _FENCE.split(text)
    blocks = []
    for part in parts[1::2]:
        first, _, rest = part.partition("\n")
        if _LANG_TAG.fullmatch(first.strip()):
            part = rest  # "python", "py", "" ...
        blocks.append(part)
    outside = _FENCE.sub("", _FENCE_LINE.sub("", text))
    return blocks, outside


_REASON_ORDER = ("syntax_error", "no_ans_assignment", "no_code")


def _extract_program(text: str) -> ParsedProgram:
    truncated = len(text) > MAX_CHARS
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")[:MAX_CHARS]
    blocks, outside = _fenced_blocks(text)
    reasons = []
    # First pass: programs that store `ans` themselves (or print it). Second pass, only when
    # none does and nothing was cut off: take the final assignment or expression.
    for salvage in (False, True) if not truncated else (False,):
        for block in [*blocks, outside]:
            parsed, reason = _candidate(block, salvage)
            if parsed is not None:
                return parsed
            reasons.append(reason)
    return ParsedProgram(None, next(r for r in _REASON_ORDER if r in reasons))


def extract_program(text: object) -> ParsedProgram:
    """The first program in `text` that compiles and stores `ans` (see module docstring)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        return ParsedProgram(None, "empty")
    try:
        return _extract_program(text)
    except Exception:  # noqa: BLE001 - a parser of model output must never raise
        return ParsedProgram(None, "parse_failure")


# ------------------------------------------------------------------------------ problems


@dataclass(frozen=True)
class ParsedProblems:
    """Problems found in a completion (maybe none), and why none when so."""

    problems: list[str]
    reason: str | None
    n_dropped: int = 0  # fragments seen but rejected (too short, no question, repeats)


MIN_PROBLEM_CHARS = 20
MIN_PROBLEM_WORDS = 5

_NUMBERED = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:"
    r"(?:(?:new|harder|similar)[ \t]+)?(?:problem|question|q)[ \t]*#?[ \t]*\d{1,3}[ \t]*"
    r"(?:[:.)\-\u2013\u2014]|$)"
    r"|\(?\d{1,3}[.)](?=[ \t]|$)"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^[ \t]*[-*\u2022+][ \t]+", re.MULTILINE)
_INLINE_NUMBER = re.compile(
    r"(?<=[?.!)])\s+(?:\(?\d{1,2}[.)]|(?:problem|question)\s*\d{1,2}\s*[:.)])\s+", re.IGNORECASE
)
_LABEL_PREFIX = re.compile(
    r"^(?:(?:new|harder|more|complex|complicated|similar|another|modified|rewritten|"
    r"difficult|challenging|math|word)[ \t]+){0,3}"
    r"(?:problem|question|variation|version|example|q)[ \t]*\d{0,3}[ \t]*:[ \t]*",
    re.IGNORECASE,
)
_TAIL = re.compile(
    r"(?:```|####|\(\s*(?:answer|ans|solution)\b"
    r"|\b(?:final answer|answer|ans|solution|solutions|explanation|reasoning|steps?\s*\d*"
    r"|hint|python code|program)\s*[:=])",
    re.IGNORECASE,
)
_ASKS = re.compile(
    r"\?|\b(?:how many|how much|how long|how far|how old|what|which|find|calculate|compute"
    r"|determine|work out)\b",
    re.IGNORECASE,
)
# A word problem states quantities: a digit or a number word.
_HAS_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty"
    r"|thirty|forty|fifty|hundred|thousand|dozen|half|twice|double|triple|third|quarter)\b",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")


def _split_items(text: str) -> list[str]:
    for marker in (_NUMBERED, _BULLET):
        starts = list(marker.finditer(text))
        if starts:
            items = []
            for m, nxt in zip(starts, [*starts[1:], None], strict=True):
                items.append(text[m.end() : nxt.start() if nxt else len(text)])
            return items  # the preamble before the first item is dropped
    return re.split(r"\n[ \t]*\n", text)


def _clean_item(item: str) -> str:
    tail = _TAIL.search(item)
    if tail:
        item = item[: tail.start()]
    item = _WS.sub(" ", item).strip()
    item = _LABEL_PREFIX.sub("", item, count=1)
    item = item.strip(" \t\"'`*_#>:-\u201c\u201d")
    if "?" in item:
        item = item[: item.rindex("?") + 1]
    return item.strip(" \t\"'`*_#>\u201c\u201d")


def _is_problem(item: str) -> bool:
    return (
        len(item) >= MIN_PROBLEM_CHARS
        and len(item.split()) >= MIN_PROBLEM_WORDS
        and bool(_ASKS.search(item))
        and bool(_HAS_NUMBER.search(item))
    )


def _extract_problems(text: str, max_n: int | None) -> ParsedProblems:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")[:MAX_CHARS]
    text = text.replace("**", "").replace("__", "")  # markdown bold around labels
    pieces = []
    for item in _split_items(text):
        pieces.extend(_INLINE_NUMBER.split(item))
    problems: list[str] = []
    seen: set[str] = set()
    dropped = 0
    for piece in pieces:
        if not piece.strip():
            continue
        item = _clean_item(piece)
        key = item.lower()
        if not _is_problem(item) or key in seen:
            dropped += 1
            continue
        seen.add(key)
        problems.append(item)
    if max_n is not None and isinstance(max_n, int) and max_n >= 0:
        problems = problems[:max_n]
    return ParsedProblems(problems, None if problems else "no_problems", dropped)


def extract_problems(text: object, max_n: int | None = None) -> ParsedProblems:
    """The new problems listed in a completion, in order, at most `max_n` of them."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        return ParsedProblems([], "empty")
    try:
        return _extract_problems(text, max_n)
    except Exception:  # noqa: BLE001 - a parser of model output must never raise
        return ParsedProblems([], "parse_failure")
