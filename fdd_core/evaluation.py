"""Score a student on benchmarks: it writes a program per problem, the sandbox runs it.

`evaluate(backend, spec, problems, sandbox_cfg)` renders each problem with the spec's
prompt, generates one program per problem greedily through any `Backend` (in batches),
extracts the program (`extract_program`, never raises), runs the programs in the sandbox
(parallel workers; the sandbox runs batch i while the backend generates batch i + 1) and
compares `ans` with the reference (`answers_match`, relative tolerance
`SandboxConfig.rel_tol`). Every problem lands in exactly one bucket:

    correct, wrong_answer        the program ran and stored a number
    no_program                   no program storing `ans` could be extracted
    error, timeout, memory       the program crashed / ran too long / hit the memory limit
    no_answer, bad_answer        it ran but left no `ans` / a non-numeric one
    generation_error             the backend reported an error for this problem

Accuracy is correct / n. With an `out_dir`, the predictions (one JSON row per problem:
id, question, reference, program, answer, status, ...) and the result are written
atomically as ``<out_dir>/predictions.jsonl`` and ``<out_dir>/result.json``.

`benchmark_model(model, benchmarks, ...)` loads the student (a `ModelRef`, a trained folder,
a checkpoint or a model name), evaluates each benchmark into ``<out_dir>/<benchmark>/`` and
keeps a summary of all of them in ``<out_dir>/results.json`` (merged with earlier runs into
the same folder). By default results are stored with the model: ``<model folder>/eval``,
or ``<cache>/eval/<model name>`` for a model that is not a local folder (the embedded one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fdd_core.backends.base import Backend, Completion
from fdd_core.benchmarks import BenchmarkSpec, load_problems, load_spec
from fdd_core.config import EvaluationConfig, ModelConfig, SandboxConfig, StudentConfig
from fdd_core.grading import answers_match
from fdd_core.io import atomic_write_json, read_jsonl, write_jsonl
from fdd_core.parsing import extract_program
from fdd_core.progress import Progress
from fdd_core.sandbox import ExecutionResult, Sandbox
from fdd_core.schemas import ModelRef, Problem

log = logging.getLogger(__name__)

__all__ = [
    "BUCKETS",
    "EvalResult",
    "default_eval_dir",
    "evaluate",
    "benchmark_model",
    "model_config_for",
    "read_predictions",
]

BUCKETS: tuple[str, ...] = (
    "correct",
    "wrong_answer",
    "no_program",
    "error",
    "timeout",
    "memory",
    "no_answer",
    "bad_answer",
    "generation_error",
)
# Buckets shown in their own column by `summary()`; the rest are added up in "other".
SUMMARY_BUCKETS = ("correct", "wrong_answer", "error", "timeout", "no_program")
MAX_TEXT = 4000  # characters of a completion kept in the predictions file
MAX_STDERR = 600
RESULTS_FILE = "results.json"


class EvalResult(BaseModel):
    """The score of one model on one benchmark, and where its details were written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    benchmark: str
    spec_version: int
    model_id: str
    n: int
    correct: int
    accuracy: float
    breakdown: dict[str, int]
    max_tokens: int
    generated_tokens: int = 0
    duration_s: float = 0.0
    predictions_path: str | None = None
    result_path: str | None = None
    created_at: str = ""

    def summary(self) -> dict[str, Any]:
        """A flat row for tables and round reports."""
        row: dict[str, Any] = {"n": self.n, "accuracy": self.accuracy}
        row.update({k: self.breakdown.get(k, 0) for k in SUMMARY_BUCKETS})
        row["other"] = sum(v for k, v in self.breakdown.items() if k not in SUMMARY_BUCKETS)
        return row


@dataclass
class _Pending:
    """One generated batch waiting for its sandbox results."""

    start: int
    completions: list[Completion]
    programs: list[str | None]
    reasons: list[str | None]
    future: Future


def _status(
    program: str | None,
    completion: Completion,
    run: ExecutionResult | None,
    reference: float,
    rel_tol: float,
) -> str:
    if completion.finish_reason == "error":
        return "generation_error"
    if program is None or run is None:
        return "no_program"
    if run.status != "ok":
        return run.status if run.status in BUCKETS else "error"
    if run.answer is not None and answers_match(run.answer, reference, rel_tol):
        return "correct"
    return "wrong_answer"


def _row(
    problem: Problem,
    completion: Completion,
    program: str | None,
    reason: str | None,
    run: ExecutionResult | None,
    status: str,
) -> dict[str, Any]:
    return {
        "id": problem.id,
        "question": problem.question,
        "reference": problem.answer,
        "program": program,
        "answer": run.answer if run is not None else None,
        "status": status,
        "parse_reason": reason,
        "finish_reason": completion.finish_reason,
        "completion": completion.text[:MAX_TEXT],
        "completion_tokens": completion.completion_tokens,
        "stderr": (run.stderr[-MAX_STDERR:] if run is not None and run.status != "ok" else ""),
    }


def evaluate(
    backend: Backend,
    spec: BenchmarkSpec,
    problems: Sequence[Problem],
    sandbox_cfg: SandboxConfig,
    *,
    batch_size: int = 64,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    max_tokens: int | None = None,
    sandbox: Sandbox | None = None,
) -> EvalResult:
    """Greedy programs for `problems`, run and graded; see the module docstring.

    `max_tokens` overrides the spec's budget; `sandbox` reuses a running sandbox (else one
    is started for the call). Problems without a reference answer are refused.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    missing = [p.id for p in problems if p.answer is None]
    if missing:
        raise ValueError(
            f"benchmark {spec.name!r}: {len(missing)} problem(s) have no reference answer "
            f"(first: {missing[0]}); every benchmark problem needs one"
        )
    params = spec.sampling(max_tokens)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = [{} for _ in problems]
    tokens = 0
    with contextlib.ExitStack() as stack:
        box = sandbox if sandbox is not None else stack.enter_context(Sandbox(sandbox_cfg))
        runner = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="eval-sandbox"))
        bar = stack.enter_context(
            Progress(len(problems), f"eval {spec.name}", unit="problem", enabled=progress)
        )
        pending: _Pending | None = None
        for start in range(0, len(problems), batch_size):
            batch = problems[start : start + batch_size]
            outs = backend.generate([spec.render(p.question) for p in batch], params)
            if len(outs) != len(batch) or any(not o for o in outs):
                raise RuntimeError(
                    f"backend {backend.name} returned {len(outs)} answers for {len(batch)} "
                    "prompts (or an empty one); expected one completion per prompt"
                )
            completions = [o[0] for o in outs]
            parsed = [
                extract_program(c.text) if c.finish_reason != "error" else None for c in completions
            ]
            programs = [p.program if p is not None else None for p in parsed]
            reasons = [p.reason if p is not None else "generation_error" for p in parsed]
            runnable = [prog for prog in programs if prog is not None]
            # Run this batch while the backend generates the next one.
            future = runner.submit(box.run_many, runnable)
            if pending is not None:
                _finish(pending, problems, rows, sandbox_cfg.rel_tol)
            pending = _Pending(start, completions, programs, reasons, future)
            tokens += sum(c.completion_tokens for c in completions)
            bar.update(len(batch), tokens=sum(c.completion_tokens for c in completions))
        if pending is not None:
            _finish(pending, problems, rows, sandbox_cfg.rel_tol)

    breakdown = dict.fromkeys(BUCKETS, 0)
    for row in rows:
        breakdown[row["status"]] += 1
    n = len(problems)
    out = Path(out_dir) if out_dir is not None else None
    result = EvalResult(
        benchmark=spec.name,
        spec_version=spec.version,
        model_id=getattr(backend, "model_id", "?"),
        n=n,
        correct=breakdown["correct"],
        accuracy=breakdown["correct"] / n if n else 0.0,
        breakdown=breakdown,
        max_tokens=params.max_tokens,
        generated_tokens=tokens,
        duration_s=round(time.perf_counter() - started, 3),
        predictions_path=str(out / "predictions.jsonl") if out else None,
        result_path=str(out / "result.json") if out else None,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if out is not None:
        write_jsonl(out / "predictions.jsonl", rows)
        atomic_write_json(
            out / "result.json",
            {**result.model_dump(mode="json"), "spec": spec.model_dump(mode="json")},
        )
    log.info(
        "%s: accuracy %.3f (%d/%d) %s",
        spec.name,
        result.accuracy,
        result.correct,
        n,
        {k: v for k, v in breakdown.items() if v},
    )
    return result


def _finish(pending: _Pending, problems: Sequence[Problem], rows: list, rel_tol: float) -> None:
    runs = iter(pending.future.result())
    for k, (completion, program, reason) in enumerate(
        zip(pending.completions, pending.programs, pending.reasons)
    ):
        problem = problems[pending.start + k]
        run = next(runs) if program is not None else None
        status = _status(program, completion, run, problem.answer, rel_tol)
        rows[pending.start + k] = _row(problem, completion, program, reason, run, status)


# --------------------------------------------------------------------------- models


def _is_student_folder(path: Path) -> bool:
    return path.is_dir() and any(
        (path / f).is_file() for f in ("meta.json", "adapter_config.json", "config.json")
    )


def model_config_for(model: str | ModelRef, student_cfg: ModelConfig | None = None) -> ModelConfig:
    """The backend config serving `model`: a ModelRef or trained folder (LoRA: base +
    adapter), a checkpoint folder, or a model name; other settings from `student_cfg`."""
    from fdd_core.training import read_model_ref, student_model_config

    base = student_cfg if student_cfg is not None else StudentConfig()
    if isinstance(model, ModelRef):
        return student_model_config(model, base)
    path = Path(model).expanduser()
    if _is_student_folder(path):
        return student_model_config(read_model_ref(path), base)
    if student_cfg is not None and model == student_cfg.model:
        return student_cfg  # the configured student itself (keeps its adapter, if any)
    update: dict = {"model": model}
    if "adapter" in type(base).model_fields:  # in-process backends; an endpoint has none
        update["adapter"] = None
    return base.model_copy(update=update)


def default_eval_dir(model: str | ModelRef, cache_dir: str | Path | None = None) -> Path:
    """`<model folder>/eval` for local models; `<cache>/eval/<name>` for named ones."""
    from fdd_core.models import default_cache_dir

    path = Path(model.path if isinstance(model, ModelRef) else model).expanduser()
    if path.is_dir():
        return path / "eval"
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "eval" / re.sub(r"[^A-Za-z0-9_.-]", "_", str(model))


def benchmark_model(
    model: str | ModelRef,
    benchmarks: Sequence[str],
    *,
    eval_cfg: EvaluationConfig,
    sandbox_cfg: SandboxConfig,
    student_cfg: StudentConfig | None = None,
    out_dir: str | Path | None = None,
    cache_dir: str | None = None,
    max_tokens: int | None = None,
    progress: bool | None = None,
    backend: Backend | None = None,
) -> dict[str, EvalResult]:
    """Evaluate `model` on each benchmark; results under `out_dir` (default: with the model).

    Data files come from `eval_cfg.data_paths[name]` (else the spec's file, the packaged
    set or the hub); `eval_cfg.limit` keeps the first N problems. `backend` reuses a loaded
    backend (it is not closed); otherwise one is made from `model_config_for(model,
    student_cfg)` and closed at the end.
    """
    if not benchmarks:
        raise ValueError("benchmark_model needs at least one benchmark")
    specs = [load_spec(b) for b in benchmarks]  # fail on a bad name before loading a model
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmarks must have distinct names, got {names}")
    loaded = [
        load_problems(
            s, eval_cfg.data_paths.get(b) or eval_cfg.data_paths.get(s.name), limit=eval_cfg.limit
        )
        for b, s in zip(benchmarks, specs)
    ]
    out = Path(out_dir) if out_dir is not None else default_eval_dir(model, cache_dir)
    results: dict[str, EvalResult] = {}
    with contextlib.ExitStack() as stack:
        if backend is None:
            from fdd_core.backends import make_backend

            cfg = model_config_for(model, student_cfg)
            backend = make_backend(cfg, cache_dir=cache_dir, progress=False)
            stack.callback(backend.close)
        box = stack.enter_context(Sandbox(sandbox_cfg))
        for spec, data in zip(specs, loaded):
            if data.skipped:
                log.warning("%s: skipped rows %s (from %s)", spec.name, data.skipped, data.source)
            results[spec.name] = evaluate(
                backend,
                spec,
                data.problems,
                sandbox_cfg,
                batch_size=eval_cfg.batch_size,
                out_dir=out / spec.name,
                progress=progress,
                max_tokens=max_tokens,
                sandbox=box,
            )
    _write_summary(out, model, results)
    return results


def _write_summary(out: Path, model: str | ModelRef, results: dict[str, EvalResult]) -> None:
    """Merge these results into `<out>/results.json` (earlier benchmarks are kept)."""
    path = out / RESULTS_FILE
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s is unreadable; writing a fresh one", path)
    benches = summary.get("benchmarks") if isinstance(summary.get("benchmarks"), dict) else {}
    for name, res in results.items():
        benches[name] = {
            **res.summary(),
            "spec_version": res.spec_version,
            "model_id": res.model_id,
            "max_tokens": res.max_tokens,
            "created_at": res.created_at,
            "result": str(Path(name) / "result.json"),
            "predictions": str(Path(name) / "predictions.jsonl"),
        }
    ref = model.model_dump() if isinstance(model, ModelRef) else {"model": str(model)}
    atomic_write_json(path, {"model": ref, "benchmarks": benches})


def read_predictions(result: EvalResult) -> list[dict]:
    """The predictions rows of a result written with an `out_dir`."""
    if not result.predictions_path:
        raise ValueError(f"{result.benchmark}: this result was not written to disk")
    return read_jsonl(result.predictions_path)
