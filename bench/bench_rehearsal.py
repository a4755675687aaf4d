"""Rehearsal at GSM8K scale: the WHOLE flow against a SCRIPTED teacher and a tiny student.

    python -m bench.bench_rehearsal [--scales 0.25,0.5,1] [--rounds 2] [--k 4]
                                    [--candidates-per-problem 1.338] [--out bench/results/rehearsal]
                                    [--data /work/shared/data/gsm8k/train.jsonl]

For every scale it writes the first `scale x 7,473` GSM8K training problems (scale > 1:
the 7,473 again with a deterministic change to each copy's question, so copies are
distinct problems: copy N+1 starts "In town N+1, "; the answer is unchanged),
starts the SCRIPTED teacher (bench/scripted_teacher.py: answers at once with programs
that compute the reference answer and with deterministic new problems; not an LLM) in a
process of its own, and runs `fdd_distill` (flows/distill.py: the parent flow, its round
subflows and every Prefect task, with an ephemeral Prefect server in a PREFECT_HOME of its
own) in a child process, twice: a fresh run, then the same config again (every task a cache
hit). The student is a tiny random Llama (fdd_core.models.build_tiny_model) with a few
new tokens, trained a few steps; evaluation is GSM8K test with a small limit: what is
measured is the pipeline, not the models.

Per stage (the names of flows/round.py's StageClock, summed over rounds; "outside rounds"
is the parent flow's own work and the Prefect start) it reports wall time (the run's own
timings.jsonl), CPU time and peak RSS of the run's process tree (sampled from /proc every
0.2 s: the flow process, its sandbox workers, the training process, the Prefect server),
the scripted teacher's CPU time, the number of Prefect task runs created in the stage
(from the Prefect API) and the files written in it (by modification time, under the run
folder, the cache folder and PREFECT_HOME). It counts the teacher workload in tokens (the
teacher's character counts, turned into tokens with the embedded model's tokenizer on the
teacher's samples) to compare the pipeline's own time with what a served 7B teacher needs.

Results: OUT/rehearsal.json (and one folder per scale with the runs). Use a scale of
0.01 or so for a check of the wiring (tests/test_bench_rehearsal.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = Path("/work/shared/data/gsm8k/train.jsonl")
GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")
BASE_N = 7473
SAMPLE_S = 0.2
CHAT_OVERHEAD_TOKENS = 10  # role markers of a system + user chat prompt, per request
# Stages whose time is not the pipeline's own (the brief: everything but teacher and training).
NOT_PIPELINE = {"train"}


# ----------------------------------------------------------------------------- data


def write_problems(src: Path, n: int, dest: Path) -> int:
    """The first `n` problems of `src` (cycling with a deterministic change per copy)."""
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{src}: no problems")
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        copy, idx = divmod(i, len(rows))
        q, a = rows[idx]["question"], rows[idx]["answer"]
        if copy:
            q, a = _changed(q, a, copy)
        out.append(json.dumps({"question": q, "answer": a}))
    tmp = dest.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(dest)
    return n


def _changed(question: str, answer: str, copy: int) -> tuple[str, str]:
    """Copy `copy` (>= 1) of a problem: a new lead-in; the answer is unchanged text-wise
    except that the scripted teacher only needs the `#### N` line, which stays right."""
    return f"In town {copy + 1}, {question[:1].lower()}{question[1:]}", answer


# ----------------------------------------------------------------------------- sampling


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (ppid, cpu seconds incl. reaped children, rss MB) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE") / 2**20
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is state (field 3); utime=14, stime=15, cutime=16, cstime=17, rss=24
        ppid = int(fields[1])
        cpu = sum(int(fields[k]) for k in (11, 12, 13, 14)) / tick
        rss = int(fields[21]) * page
        out[int(d)] = (ppid, cpu, rss)
    return out


def tree_usage(root: int, exclude: set[int] = frozenset()) -> tuple[float, float]:
    """(cpu seconds, rss MB) of `root` and its descendants."""
    table = _proc_table()
    children = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    cpu = rss = 0.0
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in exclude or pid not in table:
            continue
        cpu += table[pid][1]
        rss += table[pid][2]
        stack.extend(children[pid])
    return cpu, rss


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(fields[k]) for k in (11, 12)) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """(t, tree cpu s, tree rss MB, teacher cpu s) every SAMPLE_S seconds."""

    def __init__(self, teacher_pid: int | None) -> None:
        super().__init__(daemon=True, name="rehearsal-sampler")
        self.teacher_pid = teacher_pid
        self.samples: list[tuple[float, float, float, float]] = []
        self._halt = threading.Event()

    def sample(self) -> None:
        cpu, rss = tree_usage(os.getpid())
        tcpu = proc_cpu(self.teacher_pid) if self.teacher_pid else 0.0
        self.samples.append((time.time(), cpu, rss, tcpu))

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


# ----------------------------------------------------------------------------- the child


def child_main(args) -> int:
    """Run the flow once (in this process) and write what was measured."""
    from fdd_core.config import RunConfig

    cfg = RunConfig.model_validate(json.loads(Path(args.config).read_text()))
    sampler = Sampler(args.teacher_pid)
    sampler.sample()
    sampler.start()
    t0 = time.time()
    from fdd_core.preflight import preflight

    preflight(cfg)
    t_pre = time.time()
    from flows.distill import fdd_distill

    state = fdd_distill(config=cfg, return_state=True)
    t1 = time.time()
    sampler.stop()
    if not state.is_completed():
        raise SystemExit(f"the flow did not complete: {state}")
    result = state.result()
    runs = task_runs_under(state.state_details.flow_run_id)
    from tasks.common import close_sandboxes

    close_sandboxes()
    import fdd_core

    out = {
        "code": str(Path(fdd_core.__file__).parent),
        "t0": t0,
        "t_preflight": t_pre,
        "t1": t1,
        "run_dir": result.run_dir,
        "samples": sampler.samples,
        "task_runs": runs,
        "rounds": [
            {
                "round": r.round,
                "rows": r.dataset.n_rows,
                "added": r.added,
                "stats": r.stats,
                "dropped": r.dropped,
                "teacher_usage": r.teacher_usage,
            }
            for r in result.rounds
        ],
    }
    Path(args.out).write_text(json.dumps(out))
    return 0


def task_runs_under(flow_run_id) -> list[dict]:
    """Every task run of the flow run and its subflow runs: name, state, created time."""
    from flows.common import task_runs_under as runs_of

    _, runs = runs_of(flow_run_id)
    return [
        {
            "name": re.sub(r"-[0-9a-z]+$", "", r.name),
            "state": r.state.name if r.state else None,
            "created": r.created.timestamp() if r.created else None,
        }
        for r in runs
    ]


# ----------------------------------------------------------------------------- the parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CODE_DIRS = ("fdd_core", "flows", "tasks", "fdd", "bench")


def snapshot_code(dest: Path) -> Path:
    """A copy of the code the runs execute (tasks cache on a fingerprint of fdd_core's
    files: a file edited in the checkout between the fresh run and the re-run, or during
    a run, must not change what is measured)."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    for name in CODE_DIRS:
        shutil.copytree(
            REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    return dest


def start_teacher(data: Path, folder: Path, code: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    ready = folder / "teacher-url"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.scripted_teacher",
            "--data",
            str(data),
            "--port",
            str(port),
            "--samples",
            str(folder / "teacher-samples.json"),
            "--ready-file",
            str(ready),
        ],
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "teacher.log", "w"),  # noqa: SIM115 - the process keeps it
    )
    deadline = time.monotonic() + 60
    while not ready.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the scripted teacher did not start: {folder / 'teacher.log'}")
        time.sleep(0.1)
    return proc, ready.read_text().strip()


def stop_teacher(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def make_config(args, folder: Path, data: Path, n: int, teacher_url: str, student: Path) -> dict:
    budget = max(1, round(n * args.candidates_per_problem))
    return {
        "teacher": {
            "backend": "openai",
            "model": "scripted-teacher-gsm8k",
            "base_url": teacher_url,
            "endpoint": "chat",
            "n_samples": args.k,
            "temperature": 0.7,
            "max_tokens": 512,
            "max_concurrency": args.teacher_concurrency,
            "request_timeout_s": 60,
            "max_retries": 2,
        },
        "student": {
            "backend": "hf",
            "model": str(student),
            "device": "cpu",
            "max_tokens": args.student_max_tokens,
            "batch_size": 64,
        },
        "data": {"train": [{"name": "gsm8k", "path": str(data)}]},
        "rounds": {"n_rounds": args.rounds, "stop_when_no_growth": False},
        "synthesis": {
            "n_complex": 2,
            "n_similar": 2,
            "budget": budget,
            "max_parents_per_round": None,
        },
        "labeling": {"n_programs": args.k, "agreement_threshold": 0.5, "max_rationales": 1},
        "training": {
            "method": "full",
            "epochs": 1,
            "max_steps": args.train_steps,
            "batch_size": 8,
            "max_seq_len": 128,
            "learning_rate": 0.001,
        },
        "evaluation": {
            "benchmarks": ["gsm8k"],
            "data_paths": {"gsm8k": str(args.test_data)},
            "limit": args.eval_limit,
            "batch_size": 32,
        },
        "orchestration": {"shard_size": args.shard_size, "max_workers": args.max_workers},
        "storage": {
            "root": str(folder / "runs"),
            "run_name": "rehearsal",
            "cache_dir": str(folder / "cache"),
        },
    }


def run_child(folder: Path, cfg_path: Path, teacher_pid: int, tag: str, code: Path) -> dict:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(folder / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_LEVEL="WARNING",
        TOKENIZERS_PARALLELISM="false",
    )
    out = folder / f"measure-{tag}.json"
    log = folder / f"child-{tag}.log"
    with open(log, "w") as fh:
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "bench.bench_rehearsal",
                "--child",
                "--config",
                str(cfg_path),
                "--teacher-pid",
                str(teacher_pid),
                "--out",
                str(out),
            ],
            cwd=code,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    if rc != 0:
        raise RuntimeError(f"the {tag} run failed (exit {rc}); see {log}")
    return json.loads(out.read_text())


def stage_intervals(m: dict) -> list[tuple[str, float, float]]:
    """(stage, start, end) of this execution, from each round's timings.jsonl."""
    run_dir = Path(m["run_dir"])
    out = [("preflight", m["t0"], m["t_preflight"])]
    for path in sorted(run_dir.glob("**/timings.jsonl")):
        for row in (json.loads(x) for x in path.read_text().splitlines() if x.strip()):
            if not (m["t0"] - 1 <= row["started_at"] <= m["t1"]):
                continue
            t = row["started_at"]
            for stage, secs in row["stages"]:
                out.append((stage, t, t + secs))
                t += secs
    return sorted(out, key=lambda x: x[1])


def _interp(samples: list, t: float, col: int) -> float:
    prev = samples[0]
    for s in samples:
        if s[0] >= t:
            if s[0] == prev[0]:
                return s[col]
            w = (t - prev[0]) / (s[0] - prev[0])
            return prev[col] + w * (s[col] - prev[col])
        prev = s
    return samples[-1][col]


def _files(roots: list[Path]) -> list[tuple[float, int]]:
    out = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size))
    return out


def _du(root: Path) -> dict:
    files = _files([root]) if root.exists() else []
    return {"files": len(files), "bytes": sum(s for _, s in files)}


def analyse(m: dict, folder: Path) -> dict:
    """Per-stage figures of one execution (see the module docstring)."""
    samples = m["samples"]
    intervals = stage_intervals(m)
    roots = [Path(m["run_dir"]), folder / "cache", folder / "prefect-home"]
    files = [f for f in _files(roots) if m["t0"] - 1 <= f[0] <= m["t1"] + 1]
    stages: dict[str, dict] = {}

    def add(stage: str, a: float, b: float) -> None:
        s = stages.setdefault(
            stage,
            {
                "wall_s": 0.0,
                "cpu_s": 0.0,
                "teacher_cpu_s": 0.0,
                "peak_rss_mb": 0.0,
                "task_runs": 0,
                "files": 0,
                "bytes": 0,
            },
        )
        s["wall_s"] += b - a
        s["cpu_s"] += _interp(samples, b, 1) - _interp(samples, a, 1)
        s["teacher_cpu_s"] += _interp(samples, b, 3) - _interp(samples, a, 3)
        inside = [x[2] for x in samples if a <= x[0] <= b]
        s["peak_rss_mb"] = max(s["peak_rss_mb"], max(inside, default=_interp(samples, a, 2)))

    def owner(t: float) -> str:
        for stage, a, b in intervals:
            if a <= t <= b:
                return stage
        return "outside rounds"

    # Gaps between stages (the parent flow's own work, Prefect's start) are "outside rounds".
    t = m["t0"]
    for stage, a, b in intervals:
        if a > t:
            add("outside rounds", t, a)
        add(stage, a, b)
        t = max(t, b)
    if m["t1"] > t:
        add("outside rounds", t, m["t1"])
    by_name: dict[str, Counter] = defaultdict(Counter)
    for r in m["task_runs"]:
        stage = owner(r["created"]) if r["created"] else "outside rounds"
        stages.setdefault(stage, {"wall_s": 0.0})["task_runs"] = (
            stages[stage].get("task_runs", 0) + 1
        )
        by_name[r["name"]][r["state"]] += 1
    for mtime, size in files:
        s = stages.setdefault(owner(mtime), {"wall_s": 0.0})
        s["files"] = s.get("files", 0) + 1
        s["bytes"] = s.get("bytes", 0) + size
    total_cpu = samples[-1][1] - samples[0][1]
    wall = m["t1"] - m["t0"]
    pipeline = sum(v["wall_s"] for k, v in stages.items() if k not in NOT_PIPELINE)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(total_cpu, 2),
        "teacher_cpu_s": round(samples[-1][3] - samples[0][3], 2),
        "peak_rss_mb": round(max(x[2] for x in samples), 1),
        "pipeline_wall_s": round(pipeline, 2),
        "stages": {
            k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()}
            for k, v in stages.items()
        },
        "task_runs": {k: dict(v) for k, v in sorted(by_name.items())},
        "task_runs_total": len(m["task_runs"]),
        "folders": {
            "run_folder": _du(Path(m["run_dir"])),
            "prefect_results": _du(Path(m["run_dir"]) / "prefect-results"),
            "cache_dir": _du(folder / "cache"),
            "prefect_home": _du(folder / "prefect-home"),
        },
    }


def teacher_tokens(samples_path: Path) -> dict:
    """The teacher workload in tokens: characters x tokens-per-character of the samples."""
    from transformers import AutoTokenizer

    from fdd_core.models import EMBEDDED_MODEL, resolve_model

    data = json.loads(samples_path.read_text())
    stats, samples = data["stats"], data["samples"]
    tok = AutoTokenizer.from_pretrained(resolve_model(EMBEDDED_MODEL))
    out: dict = {"tokenizer": "SmolLM2-135M-Instruct (embedded)", "kinds": {}}
    prompt_total = completion_total = 0
    for kind, rows in samples.items():
        p_chars = sum(len(r["prompt"]) for r in rows)
        c_chars = sum(len(c) for r in rows for c in r["completions"])
        p_tok = sum(len(tok(r["prompt"])["input_ids"]) for r in rows)
        c_tok = sum(len(tok(c)["input_ids"]) for r in rows for c in r["completions"])
        req = stats.get(f"requests_{kind}", 0)
        prompt = stats.get(f"prompt_chars_{kind}", 0) * p_tok / max(1, p_chars)
        prompt += CHAT_OVERHEAD_TOKENS * req
        completion = stats.get(f"completion_chars_{kind}", 0) * c_tok / max(1, c_chars)
        out["kinds"][kind] = {
            "requests": req,
            "completions": stats.get(f"completions_{kind}", 0),
            "prompt_tokens": round(prompt),
            "completion_tokens": round(completion),
        }
        prompt_total += prompt
        completion_total += completion
    out["prompt_tokens"] = round(prompt_total)
    out["completion_tokens"] = round(completion_total)
    out["unknown_question"] = stats.get("unknown_question", 0)
    return out


def run_scale(args, scale: float, student: Path) -> dict:
    n = max(1, round(BASE_N * scale))
    folder = Path(args.out) / f"n{n}"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    data = folder / "train.jsonl"
    write_problems(Path(args.data), n, data)
    code = snapshot_code(folder / "code")
    proc, url = start_teacher(data, folder, code)
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    try:
        cfg = make_config(args, folder, data, n, url, student)
        cfg_path = folder / "config.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        print(f"[n={n}] fresh run ...", flush=True)
        fresh = run_child(folder, cfg_path, proc.pid, "fresh", code)
        # Before the re-run rewrites some of its files (run record, reports, Prefect's DB).
        fresh_figures = analyse(fresh, folder)
        print(f"[n={n}] re-run (everything cached) ...", flush=True)
        again = run_child(folder, cfg_path, proc.pid, "rerun", code)
    finally:
        stop_teacher(proc)
    load.append(Path("/proc/loadavg").read_text().split()[:3])
    res = {
        "n_problems": n,
        "scale": scale,
        "synthesis_budget": cfg["synthesis"]["budget"],
        "loadavg_before_after": load,
        "fresh": fresh_figures,
        "rerun": analyse(again, folder),
        "rounds": fresh["rounds"],
        "teacher": teacher_tokens(folder / "teacher-samples.json"),
    }
    fresh_s, pipe_s = res["fresh"]["wall_s"], res["fresh"]["pipeline_wall_s"]
    print(
        f"[n={n}] fresh {fresh_s:.0f} s (pipeline {pipe_s:.0f} s), "
        f"re-run {res['rerun']['wall_s']:.0f} s",
        flush=True,
    )
    return res


STAGE_ORDER = (
    "preflight",
    "outside rounds",
    "rationales",
    "leakage reference",
    "grade",
    "synthesize",
    "filter",
    "label",
    "grow",
    "train",
    "benchmark",
)
# Output tokens/s of one served 7B-8B model (vLLM, batched): see the benchmark's notes.
SERVED_7B_TOKENS_PER_S = {"H100 (Llama 3.1 8B)": 12500, "A100 80GB (Qwen 7B)": 3363}


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a else "-"


def _cell(vals: list[float], fmt: str = "{:,.1f}") -> str:
    """`a / b / c (x b/a, x c/b)`: the figure at each scale and its growth."""
    text = " / ".join(fmt.format(v) for v in vals)
    ratios = [_ratio(x, y) for x, y in zip(vals, vals[1:])]
    return text + (f" (x{', x'.join(ratios)})" if ratios else "")


def report(results: list[dict]) -> str:
    """Markdown: per-stage figures at each scale (smallest first) and their growth."""
    results = sorted(results, key=lambda r: r["n_problems"])
    scales = " / ".join(f"{r['n_problems']:,}" for r in results)
    figures = (
        ("wall_s", "wall s", "{:,.1f}"),
        ("cpu_s", "CPU s", "{:,.1f}"),
        ("teacher_cpu_s", "teacher CPU s", "{:,.1f}"),
        ("peak_rss_mb", "peak RSS MB", "{:,.0f}"),
        ("task_runs", "task runs", "{:,}"),
        ("files", "files", "{:,}"),
        ("bytes", "MB written", "{:,.1f}"),
    )
    lines = [
        f"Fresh run, n = {scales} problems; each cell: the figure at each n (growth factors).",
        "",
        "| stage | " + " | ".join(f[1] for f in figures) + " |",
        "|---" * (1 + len(figures)) + "|",
    ]
    for stage in STAGE_ORDER:
        if not any(stage in r["fresh"]["stages"] for r in results):
            continue
        cells = []
        for key, _, fmt in figures:
            vals = [r["fresh"]["stages"].get(stage, {}).get(key, 0) for r in results]
            if key == "bytes":
                vals = [v / 1e6 for v in vals]
            cells.append(_cell(vals, fmt))
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "| whole run | fresh | re-run (all cached) |", "|---|---|---|"]
    totals = (
        ("wall_s", "wall s", "{:,.1f}"),
        ("pipeline_wall_s", "pipeline wall s (all but train)", "{:,.1f}"),
        ("cpu_s", "CPU s (run's process tree)", "{:,.1f}"),
        ("teacher_cpu_s", "scripted teacher CPU s", "{:,.1f}"),
        ("peak_rss_mb", "peak RSS MB (process tree)", "{:,.0f}"),
        ("task_runs_total", "Prefect task runs", "{:,}"),
    )
    for key, label, fmt in totals:
        cells = [_cell([r[w][key] for r in results], fmt) for w in ("fresh", "rerun")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for folder in ("run_folder", "prefect_results", "cache_dir", "prefect_home"):
        for key, unit in (("files", "files"), ("bytes", "MB")):
            cells = []
            for w in ("fresh", "rerun"):
                vals = [r[w]["folders"][folder][key] for r in results]
                vals = [v / 1e6 for v in vals] if key == "bytes" else vals
                cells.append(_cell(vals, "{:,.1f}" if key == "bytes" else "{:,}"))
            lines.append(f"| {folder} {unit} (after the run) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "| n | teacher requests | prompt tokens | completion tokens | candidates/round | "
        + " | ".join(f"served 7B s, {k}" for k in SERVED_7B_TOKENS_PER_S)
        + " | pipeline s | pipeline / 7B teacher |"
    )
    lines.append("|" + "---|" * (7 + len(SERVED_7B_TOKENS_PER_S)))
    for r in results:
        t = r["teacher"]
        req = sum(k["requests"] for k in t["kinds"].values())
        cands = [x["stats"].get("filter", {}).get("candidates") for x in r["rounds"][1:]]
        secs = [t["completion_tokens"] / v for v in SERVED_7B_TOKENS_PER_S.values()]
        pipe = r["fresh"]["pipeline_wall_s"]
        share = " / ".join(f"{100 * pipe / s:.1f}%" for s in secs)
        lines.append(
            f"| {r['n_problems']:,} | {req:,} | {t['prompt_tokens']:,} | "
            f"{t['completion_tokens']:,} | {', '.join(f'{c:,}' for c in cands if c)} | "
            + " | ".join(f"{s:,.0f}" for s in secs)
            + f" | {pipe:,.0f} | {share} |"
        )
    return "\n".join(lines) + "\n"


def shard_read_ab(ns: list[int], shard_size: int, repeats: int = 3) -> list[dict]:
    """Seconds to read every shard of n problems: the whole file per shard (before) vs the
    shard's slice (`read_problems(ref, bounds)`, after), alternating A/B."""
    import tempfile

    from fdd_core.schemas import Problem
    from fdd_core.shards import read_problems, shard_bounds, write_problems

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            problems = [
                Problem.create(f"Problem {i}: a shop sells {i} pens a day for {i % 7} days?", i)
                for i in range(n)
            ]
            ref = write_problems(tmp, f"p{n}", problems)
            bounds = shard_bounds(n, shard_size)
            best = {"whole file": float("inf"), "slice": float("inf")}
            for _ in range(repeats):
                t = time.perf_counter()
                for b in bounds:
                    read_problems(ref)[b[0] : b[1]]
                best["whole file"] = min(best["whole file"], time.perf_counter() - t)
                t = time.perf_counter()
                for b in bounds:
                    read_problems(ref, b)
                best["slice"] = min(best["slice"], time.perf_counter() - t)
            rows.append(
                {"n": n, "shards": len(bounds), **{k: round(v, 3) for k, v in best.items()}}
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="0.25,0.5", help="fractions of the 7,473 problems")
    ap.add_argument("--rounds", type=int, default=2, help="feedback rounds after round 0")
    ap.add_argument("--k", type=int, default=4, help="programs per problem (and per label)")
    ap.add_argument(
        "--candidates-per-problem",
        type=float,
        default=10000 / BASE_N,
        help="synthesis budget per original problem (10,000 candidates at 7,473)",
    )
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--max-workers", type=int, default=2)
    ap.add_argument("--teacher-concurrency", type=int, default=16)
    ap.add_argument("--student-max-tokens", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--eval-limit", type=int, default=16)
    ap.add_argument("--data", default=str(GSM8K_TRAIN))
    ap.add_argument("--test-data", default=str(GSM8K_TEST))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "rehearsal"))
    ap.add_argument(
        "--report", nargs="+", metavar="JSON", help="print the markdown tables of result files"
    )
    ap.add_argument(
        "--shard-read",
        metavar="N,N",
        help="only time reading every shard of N problems, whole file vs slice",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--teacher-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.shard_read:
        ns = [int(x) for x in args.shard_read.split(",")]
        for row in shard_read_ab(ns, args.shard_size):
            print(json.dumps(row))
        return 0
    if args.report:
        results = [r for path in args.report for r in json.loads(Path(path).read_text())]
        print(report(results), end="")
        return 0
    for p in (args.data, args.test_data):
        if not Path(p).is_file():
            raise SystemExit(f"missing data file {p} (GSM8K train/test jsonl)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    student = out / "tiny-student"
    if not (student / "config.json").is_file():
        from fdd_core.models import build_tiny_model

        build_tiny_model(student, arch="causal")
    results = []
    for scale in (float(s) for s in args.scales.split(",")):
        results.append(run_scale(args, scale, student))
        (out / "rehearsal.json").write_text(json.dumps(results, indent=1))
    print(report(results), end="")
    print(f"results: {out / 'rehearsal.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
