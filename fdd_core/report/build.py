"""Assemble the run report from the records and write report.html, report.md and the PNGs.

`build_report(run_dir)` returns a `Report` (sections of text, tables and figures) and
`write_report_files` writes it: ``report.html`` (self-contained: figures embedded as base64
PNG, no external resource, opens offline), ``report.md`` (figures linked from
``report/``), ``report/<figure>.png`` and ``report/tables.json`` (every table as rows).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdd_core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fdd_core.report import data as D
from fdd_core.report import plots
from fdd_core.reports import markdown_table

REPORT_DIR = "report"
FIGURE_INDEX = "figures.json"


@dataclass
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)  # (summary, preformatted)


@dataclass
class Report:
    run_dir: Path
    title: str
    sections: list[Section]
    missing: list[str]
    figure_keys: dict[str, str] = field(default_factory=dict)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {name: rows for s in self.sections for name, rows in s.tables}

    def figures(self) -> dict[str, bytes]:
        return {name: png for s in self.sections for name, png in s.figures}


class FigureCache:
    """Draws a figure only when its data changed since the PNG on disk was drawn.

    The key is a hash of the plot function and its arguments, kept in
    ``report/figures.json``: a re-run whose records did not change re-uses every PNG
    (drawing is most of the report's cost).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            self.index = json.loads((folder / FIGURE_INDEX).read_text())
        except (OSError, ValueError):
            self.index = {}
        self.used: dict[str, str] = {}

    def __call__(self, name: str, plot, *args) -> bytes:
        blob = json.dumps([plot.__name__, plots.PIXELS, args], default=str, sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()[:32]
        path = self.folder / f"{name}.png"
        png = None
        if self.index.get(name) == key and path.is_file():
            png = path.read_bytes()
        self.used[name] = key
        return png if png is not None else plot(*args)


def build_report(run_dir: str | Path) -> Report:
    """The report of a run folder, from its records only."""
    data = D.load_run(run_dir)
    fig = FigureCache(Path(run_dir) / REPORT_DIR)
    sections = [
        _accuracy(data, fig),
        _funnel(data, fig),
        _growth(data, fig),
        _leakage(data, fig),
        _paths(data, fig),
        _cost(data, fig),
        _examples(data),
        _training(data, fig),
    ]
    cfg = data.config
    teacher = (cfg.get("teacher") or {}).get("model", "?")
    student = (cfg.get("student") or {}).get("model", "?")
    title = f"FDD run report: {Path(run_dir).name}"
    intro = Section(
        "overview",
        "Overview",
        text=[
            f"Run folder `{Path(run_dir).resolve()}`, status "
            f"**{data.record.get('status', 'unknown')}**, {len(data.rounds)} round(s) recorded "
            f"of {(data.record.get('n_rounds') or 0) + 1 if 'n_rounds' in data.record else '?'}.",
            f"Teacher `{teacher}`, student `{Path(str(student)).name}`.",
        ],
    )
    if "scripted" in str(teacher) or "simulated" in str(teacher):
        intro.text.append("The teacher of this run is simulated (a scripted test server).")
    return Report(Path(run_dir), title, [intro, *sections], data.missing, fig.used)


# --------------------------------------------------------------------------- sections


def _accuracy(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("accuracy", "Accuracy per benchmark per round")
    rows = D.accuracy_rows(data)
    if not rows:
        s.text.append("No benchmark was configured: nothing was measured.")
        return s
    if not any(r["round"] == "base" for r in rows):
        s.text.append(
            "The untrained base model was not measured (set `evaluation.measure_base: true` "
            "to draw it as a reference)."
        )
    s.tables.append(("accuracy", rows))
    s.figures.append(("accuracy", fig("accuracy", plots.accuracy_plot, rows)))
    return s


def _funnel(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("funnel", "The funnel per round")
    for rd in data.rounds:
        rows = D.funnel_rows(rd)
        if rows is None:
            s.text.append(f"Round {rd.index}: no funnel record (an older run).")
            continue
        s.tables.append((f"funnel_round_{rd.index}", rows))
        name = f"funnel_round_{rd.index}"
        s.figures.append((name, fig(name, plots.funnel_plot, rows, f"Round {rd.index}")))
    return s


def _growth(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("growth", "Dataset growth and difficulty of what was added")
    growth, diff = D.growth_rows(data), D.difficulty_rows(data)
    s.text.append("Difficulty proxy: program steps (non-empty, non-comment lines of a rationale).")
    s.tables += [("growth", growth), ("difficulty", diff)]
    s.figures.append(("growth", fig("growth", plots.growth_plot, growth, diff)))
    return s


def _leakage(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("leakage", "Leakage: similarity of questions to the benchmarks' test questions")
    benches = D.leakage_benchmarks(data)
    if not benches:
        s.text.append(
            "No leakage scores are recorded (no benchmark configured, no feedback round, or "
            "an older run)."
        )
        return s
    f = data.config.get("filtering") or {}
    s.text.append(
        "For every generated question (all candidates, before filtering) and every original "
        "training question: its highest similarity to any test question of the benchmark. "
        f"`ngram`: share of its {f.get('ngram_n', '?')}-word n-grams found in one test "
        "question (the filter drops at > 0); `jaccard`: exact Jaccard of its "
        f"{f.get('shingle_size', '?')}-word shingle sets (the filter drops at an estimated "
        f"{f.get('near_dup_threshold', '?')} or more)."
    )
    gen, ref = D.generated_leakage(data), data.reference_leakage or []
    for bench in benches:
        g = {m: D.leakage_values(gen, bench, m) for m in ("ngram", "jaccard")}
        r = {m: D.leakage_values(ref, bench, m) for m in ("ngram", "jaccard")}
        name = f"leakage_{D._short(bench)}"
        s.figures.append((name, fig(name, plots.leakage_plot, D._short(bench), g, r)))
    s.tables += [("leakage", D.leakage_rows(data)), ("contamination", D.contamination_rows(data))]
    return s


def _paths(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("paths", "Reasoning paths")
    rows = D.paths_rows(data)
    if not rows:
        s.text.append("Round 0's dataset is not readable: no distribution.")
        return s
    k = (data.config.get("teacher") or {}).get("n_samples", "?")
    s.text.append(
        f"Verified programs per original problem in D0 (the teacher wrote {k} per problem; "
        "duplicates removed). Accuracy against paths across runs that differ in "
        "`teacher.n_samples` is the experiments comparison's plot (`fdd compare`)."
    )
    s.tables.append(("paths", rows))
    s.figures.append(("paths", fig("paths", plots.paths_plot, rows)))
    return s


def _cost(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("cost", "Cost")
    usage = D.usage_rows(data)
    if usage is None:
        s.text.append("Teacher usage (requests, tokens, cache hits): not recorded in this run.")
    else:
        s.tables.append(("teacher_usage", usage))
        per_point = D.tokens_per_point_rows(data)
        if per_point:
            s.tables.append(("tokens_per_point", per_point))
    timing = D.timing_rows(data)
    if timing:
        s.text.append(
            "Wall time per stage of the first execution of each round (a re-run that hits the "
            "cache adds an execution but keeps these numbers)."
        )
        s.tables.append(("wall_time", timing))
        drawn = [{k: r[k] for k in ("round", "stage", "wall s")} for r in timing]
        s.figures.append(("wall_time", fig("wall_time", plots.timing_plot, drawn)))
        gpu = sum(r["gpu s"] for r in timing)
        s.text.append(
            f"Device time: {gpu:.1f} GPU-seconds." if gpu else "Device time: no GPU was used."
        )
    else:
        s.text.append("Wall time per stage: not recorded (an older run).")
    return s


def _program_block(v: dict) -> str:
    lines = [f"question: {v['question']}"]
    if v.get("parent"):
        lines.append(f"parent:   {v['parent']}")
    if v.get("agreement") is not None:
        lines.append(f"vote:     {v.get('vote_answer')} (agreement {v['agreement']:.2f})")
    if v.get("reason"):
        lines.append(f"reason:   {v['reason']}")
    for p in v.get("programs", []):
        lines += [f"--- program {p['sample']} -> {p['answer']}", p["program"]]
    return "\n".join(lines)


def _examples(data: D.RunData) -> Section:
    s = Section("examples", "Examples")
    sets = D.example_sets(data)
    if not sets and len(data.rounds) > 1:
        s.text.append("No candidate or vote records: no examples of new problems.")
    for v in sets:
        s.details.append(
            (
                f"round {v['round']} {v['origin']} {v['verdict']}"
                + (f" ({v['reason']})" if v.get("reason") else "")
                + f": {v['question'][:90]}",
                _program_block(v),
            )
        )
    for e in D.student_examples(data):
        s.details.append(
            (
                f"student, {e['benchmark']}, {e['kind']}: {e['question'][:90]}",
                f"question:  {e['question']}\nreference: {e['reference']}\n"
                f"answer:    {e['answer']} ({e['status']})\n--- program\n{e.get('program')}",
            )
        )
    return s


def _training(data: D.RunData, fig: FigureCache) -> Section:
    s = Section("training", "Training curves")
    curves = D.loss_curves(data)
    if not curves:
        s.text.append("No loss per step is recorded (no student trained, or an older run).")
        return s
    s.tables.append(
        (
            "training",
            [
                {"round": r, "steps": len(v), "first loss": v[0], "last loss": v[-1]}
                for r, v in sorted(curves.items())
            ],
        )
    )
    s.figures.append(("training_loss", fig("training_loss", plots.loss_plot, curves)))
    return s


# --------------------------------------------------------------------------- rendering


def render_markdown(report: Report, appendix: str = "") -> str:
    out = [f"# {report.title}", ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        out += [t + "\n" for t in s.text]
        for name, _png in s.figures:
            out += [f"![{name}]({REPORT_DIR}/{name}.png)", ""]
        for name, rows in s.tables:
            out += [f"**{name}**", "", markdown_table(rows)]
        for summary, body in s.details:
            out += [
                f"<details><summary>{html.escape(summary)}</summary>",
                "",
                "```",
                body,
                "```",
                "</details>",
                "",
            ]
    if report.missing:
        out += ["## Not recorded", ""] + [f"- {m}" for m in report.missing] + [""]
    if appendix:
        out += ["## Round details", "", appendix]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}
details{margin:.3em 0}summary{cursor:pointer}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.missing{color:#a33}
"""


def _html_table(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"<p><em>{html.escape(name)}: no rows</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f'<table data-name="{html.escape(name)}"><tr>{head}</tr>{body}</table>'


def _md_inline(text: str) -> str:
    """Backticks and ** of the section texts as HTML (everything else escaped)."""
    import re

    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def render_html(report: Report) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for s in report.sections:
        parts.append(f"<h2 id='{s.key}'>{html.escape(s.title)}</h2>")
        parts += [f"<p>{_md_inline(t)}</p>" for t in s.text]
        for name, png in s.figures:
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<img alt='{html.escape(name)}' data-figure='{html.escape(name)}' "
                f"width='{plots.PIXELS[0]}' src='data:image/png;base64,{b64}'>"
            )
        parts += [_html_table(name, rows) for name, rows in s.tables]
        for summary, body in s.details:
            parts.append(
                f"<details><summary>{html.escape(summary)}</summary>"
                f"<pre>{html.escape(body)}</pre></details>"
            )
    if report.missing:
        parts.append("<h2 id='missing'>Not recorded</h2><ul class='missing'>")
        parts += [f"<li>{html.escape(m)}</li>" for m in report.missing]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report_files(report: Report, appendix: str = "") -> dict[str, Path]:
    """report.html, report.md, report/<figure>.png and report/tables.json, atomically."""
    run_dir = report.run_dir
    folder = run_dir / REPORT_DIR
    for name, png in report.figures().items():
        path = folder / f"{name}.png"
        if not (path.is_file() and path.read_bytes() == png):
            atomic_write_bytes(path, png)
    atomic_write_json(folder / FIGURE_INDEX, report.figure_keys)
    atomic_write_json(folder / "tables.json", report.tables())
    md = atomic_write_text(run_dir / "report.md", render_markdown(report, appendix))
    page = atomic_write_text(run_dir / "report.html", render_html(report))
    return {"html": page, "markdown": md, "figures": folder}


def write_run_report(run_dir: str | Path, appendix: str = "") -> dict[str, Path]:
    """Build and write the report of a run folder; returns where the files are."""
    return write_report_files(build_report(run_dir), appendix)


def tables_json(report: Report) -> str:
    return json.dumps(report.tables(), indent=2, default=str)


__all__ = [
    "REPORT_DIR",
    "Report",
    "Section",
    "build_report",
    "render_html",
    "render_markdown",
    "write_report_files",
    "write_run_report",
]
