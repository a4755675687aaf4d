"""What the portable llama.cpp build costs against a native one, on the embedded GGUF.

`make llama-python` builds llama-cpp-python with `-DGGML_NATIVE=OFF` (AVX2/FMA/F16C, no tuning to
the build machine), because machines of this kind differ in CPU from one day to the next
and a native build died with SIGILL on the next machine. This measures the price: each
interpreter given (a `.venv-llama` of each build) loads the embedded GGUF in a fresh
process and decodes the same greedy completion several times, alternating builds so load
drifts hit both alike. The first interpreter is the baseline of the ratios.

    python -m bench.bench_llama_build --python .venv-llama/bin/python \
        --python /tmp/llama-native/bin/python --labels portable,native
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
from llama_cpp import Llama
gguf, n_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=gguf, n_ctx=1024, n_threads=threads, verbose=False, seed=0)
prompt = "Question: Tom has 3 apples and buys 5 more. How many apples now?\n# Python program\n"
llm.create_completion(prompt, max_tokens=8, temperature=0.0)  # warm-up
t0 = time.perf_counter()
out = llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "tokens": out["usage"]["completion_tokens"]}))
"""


def run_once(python: str, gguf: str, n_tokens: int, threads: int) -> float:
    """Decode tokens/s of one fresh process (model load excluded)."""
    proc = subprocess.run(
        [python, "-c", CHILD, gguf, str(n_tokens), str(threads)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed with {proc.returncode}:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row["tokens"] / row["seconds"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--python", action="append", required=True, help="interpreter of one build")
    p.add_argument("--labels", default=None, help="comma-separated names, one per --python")
    p.add_argument("--tokens", type=int, default=128, help="completion tokens per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per build (alternating)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    labels = args.labels.split(",") if args.labels else args.python
    if len(labels) != len(args.python):
        p.error("--labels needs one name per --python")

    from fdd_core.models import embedded_gguf_path

    gguf = str(embedded_gguf_path())
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(args.repeats):
        for label, python in zip(labels, args.python):
            rates[label].append(run_once(python, gguf, args.tokens, args.threads))
    base = statistics.median(rates[labels[0]])
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average), threads {args.threads}")
    print(f"{'build':<12} {'tokens/s (median)':>18} {'runs':>24} {'vs ' + labels[0]:>12}")
    for label in labels:
        med = statistics.median(rates[label])
        runs = ", ".join(f"{r:.1f}" for r in rates[label])
        print(f"{label:<12} {med:>18.1f} {runs:>24} {med / base:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
