"""`fdd compare`: runs and experiments side by side, from their records alone.

Inputs are run folders (run.json) and experiment folders (experiment.json, whose variants
are run folders). Runs that differ only in their seed form one *variant*: every number is
the mean over its seeds, with the spread (sample standard deviation, 0 for one seed) beside
it. Outputs: per round and variant, accuracy per benchmark, dataset size and composition,
and the teacher's requests and tokens; a status list; PNG plots (accuracy against round per
variant, and accuracy against reasoning paths when `teacher.n_samples` varies); markdown;
and `compare.json` holding every number the tables show.

Teacher usage of a shared round 0 (experiments): each variant's record carries the usage
of the round 0 it used, so the per-variant numbers say what that variant cost; the
experiment total counts each shared round 0 once.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fdd_core.experiments import EXPERIMENT_FILE, read_experiment
from fdd_core.io import atomic_write_json, atomic_write_text
from fdd_core.reports import markdown_table, text_table

USAGE_KEYS = ("requests", "prompt_tokens", "completion_tokens", "cache_hits")
_SEED_SUFFIX = re.compile(r"_?seed-\d+$")


class RunEntry(BaseModel):
    """One run as compare sees it."""

    label: str
    variant: str
    experiment: str | None = None
    run_dir: str | None = None
    status: str
    error: str | None = None
    seed: int | None = None
    overrides: dict[str, str] = Field(default_factory=dict)
    n_samples: int | None = None
    rounds: list[dict[str, Any]] = Field(default_factory=list)


def _read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no run.json in {run_dir} (not a run folder)") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def _entry_from_run(run_dir: Path, **extra: Any) -> RunEntry:
    record = _read_run(run_dir)
    cfg = record.get("config") or {}
    base = {
        "label": run_dir.name,
        "variant": run_dir.name,
        "run_dir": str(run_dir),
        "status": record.get("status", "unknown"),
        "error": record.get("error"),
        "seed": (cfg.get("teacher") or {}).get("seed"),
        "n_samples": (cfg.get("teacher") or {}).get("n_samples"),
        "rounds": record.get("rounds") or [],
    }
    base.update(extra)
    return RunEntry(**base)


def load_entries(paths: list[str | Path]) -> tuple[list[RunEntry], list[dict[str, Any]]]:
    """Every run under the given run/experiment folders, and each experiment's shared round 0."""
    entries: list[RunEntry] = []
    shared: list[dict[str, Any]] = []
    for raw in paths:
        p = Path(raw).expanduser().resolve()
        if p.is_file():
            p = p.parent
        if (p / EXPERIMENT_FILE).is_file():
            exp = read_experiment(p)
            for v in exp.variants:
                variant = _SEED_SUFFIX.sub("", v.name) or "base"
                extra = {
                    "label": v.name,
                    "variant": variant,
                    "experiment": exp.name,
                    "overrides": v.overrides,
                }
                if v.run_dir and (Path(v.run_dir) / "run.json").is_file():
                    entry = _entry_from_run(Path(v.run_dir), **extra)
                    if v.status == "failed":  # the experiment knows why; run.json may not
                        entry.status, entry.error = "failed", v.error or entry.error
                    entries.append(entry)
                else:
                    entries.append(RunEntry(status=v.status, error=v.error, seed=v.seed, **extra))
            for g in exp.shared_round0:
                if (Path(g.run_dir) / "run.json").is_file():
                    rounds = _read_run(Path(g.run_dir)).get("rounds") or []
                    shared.append({"experiment": exp.name, "key": g.key, "rounds": rounds})
        elif (p / "run.json").is_file():
            entries.append(_entry_from_run(p))
        else:
            raise FileNotFoundError(f"{p}: neither a run folder (run.json) nor an experiment")
    return entries, shared


def _mean(values) -> float | int:
    """The mean, as an int when it is whole (counts read better that way)."""
    m = statistics.fmean(values)
    return int(m) if m.is_integer() else m


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def round_usage(round_record: dict[str, Any]) -> dict[str, int]:
    """Teacher usage of one round, summed over its stages."""
    total = dict.fromkeys(USAGE_KEYS, 0)
    for counts in (round_record.get("teacher_usage") or {}).values():
        for k in USAGE_KEYS:
            total[k] += int(counts.get(k, 0))
    return total


def _accuracy(round_record: dict[str, Any]) -> dict[str, float]:
    return {
        name: float(m.get("accuracy", 0.0))
        for name, m in (round_record.get("metrics") or {}).items()
    }


class Comparison(BaseModel):
    entries: list[RunEntry]
    shared: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def benchmarks(self) -> list[str]:
        names: list[str] = []
        for e in self.entries:
            for r in e.rounds:
                for b in _accuracy(r):
                    if b not in names:
                        names.append(b)
        return names

    def variants(self) -> dict[str, list[RunEntry]]:
        """Variant -> its runs that have rounds (one per seed)."""
        out: dict[str, list[RunEntry]] = {}
        for e in self.entries:
            if e.rounds:
                out.setdefault(e.variant, []).append(e)
        return out

    def round_rows(self) -> list[dict[str, Any]]:
        """Per variant and round: means (and spreads) over the seeds that reached it."""
        rows = []
        for variant, runs in self.variants().items():
            n_rounds = max(len(e.rounds) for e in runs)
            for r in range(n_rounds):
                recs = [e.rounds[r] for e in runs if len(e.rounds) > r]
                row: dict[str, Any] = {"variant": variant, "round": r, "seeds": len(recs)}
                for b in self.benchmarks:
                    vals = [_accuracy(x)[b] for x in recs if b in _accuracy(x)]
                    mean, sd = _mean_sd(vals)
                    row[f"acc:{b}"] = round(mean, 4)
                    row[f"sd:{b}"] = round(sd, 4)
                row["examples"] = _mean(x["dataset"]["n_rows"] for x in recs)
                for origin in ("original", "complex", "similar"):
                    row[origin] = _mean(
                        (x.get("counts_by_origin") or {}).get(origin, 0) for x in recs
                    )
                usage = [round_usage(x) for x in recs]
                for k in USAGE_KEYS:
                    row[f"teacher_{k}"] = _mean(u[k] for u in usage)
                rows.append(row)
        return rows

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per variant: last-round accuracy (mean, spread) and total teacher use (mean)."""
        rows = []
        for variant, runs in self.variants().items():
            row: dict[str, Any] = {"variant": variant, "seeds": len(runs)}
            for b in self.benchmarks:
                vals = [_accuracy(e.rounds[-1]).get(b) for e in runs]
                mean, sd = _mean_sd([v for v in vals if v is not None])
                row[f"acc:{b}"] = round(mean, 4)
                row[f"sd:{b}"] = round(sd, 4)
            row["rounds"] = _mean(len(e.rounds) for e in runs)
            row["examples"] = _mean(e.rounds[-1]["dataset"]["n_rows"] for e in runs)
            for k in ("requests", "completion_tokens"):
                row[f"teacher_{k}"] = _mean(sum(round_usage(x)[k] for x in e.rounds) for e in runs)
            rows.append(row)
        return rows

    def status_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "run": e.label,
                "variant": e.variant,
                "seed": "" if e.seed is None else e.seed,
                "status": e.status,
                "rounds": len(e.rounds),
                "error": (e.error or "").splitlines()[-1][:120] if e.error else "",
            }
            for e in self.entries
        ]

    def experiment_teacher_total(self) -> dict[str, int]:
        """What the teacher was really asked: each shared round 0 once, then rounds >= 1."""
        total = dict.fromkeys(USAGE_KEYS, 0)
        shared_used = bool(self.shared)
        for s in self.shared:
            for r in s["rounds"]:
                for k, v in round_usage(r).items():
                    total[k] += v
        for e in self.entries:
            for r in e.rounds[1:] if shared_used and e.experiment else e.rounds:
                for k, v in round_usage(r).items():
                    total[k] += v
        return total

    def paths_rows(self) -> list[dict[str, Any]]:
        """Last-round accuracy against teacher.n_samples, per variant with n_samples removed."""
        if len({e.n_samples for e in self.entries if e.rounds}) < 2:
            return []
        groups: dict[tuple[str, int], list[RunEntry]] = {}
        for e in self.entries:
            if not e.rounds or e.n_samples is None:
                continue
            rest = {k: v for k, v in e.overrides.items() if k != "teacher.n_samples"}
            series = ",".join(f"{k}={v}" for k, v in rest.items()) or "runs"
            groups.setdefault((series, e.n_samples), []).append(e)
        rows = []
        for (series, n), runs in sorted(groups.items()):
            row: dict[str, Any] = {"series": series, "n_samples": n, "seeds": len(runs)}
            for b in self.benchmarks:
                vals = [_accuracy(e.rounds[-1]).get(b) for e in runs]
                mean, sd = _mean_sd([v for v in vals if v is not None])
                row[f"acc:{b}"], row[f"sd:{b}"] = round(mean, 4), round(sd, 4)
            rows.append(row)
        return rows

    def markdown(self, plots: list[Path] | None = None) -> str:
        lines = ["# fdd compare", ""]
        lines += ["Accuracy is the mean over seeds; `sd:` is the sample standard deviation.", ""]
        lines += ["## Final round per variant", "", markdown_table(self.summary_rows())]
        lines += ["## Per round", "", markdown_table(self.round_rows())]
        paths = self.paths_rows()
        if paths:
            lines += ["## Accuracy against reasoning paths", "", markdown_table(paths)]
        lines += ["## Runs", "", markdown_table(self.status_rows())]
        if self.shared:
            lines += [
                "## Teacher, whole experiment (each shared round 0 counted once)",
                "",
                markdown_table([self.experiment_teacher_total()]),
            ]
        for p in plots or []:
            lines += [f"![{p.stem}]({p.name})", ""]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        out = ["Final round per variant (mean over seeds; sd = spread):"]
        out.append(text_table(self.summary_rows()))
        out.append("Per round:")
        out.append(text_table(self.round_rows()))
        out.append("Runs:")
        out.append(text_table(self.status_rows()))
        return "\n".join(out)


def compare(paths: list[str | Path]) -> Comparison:
    entries, shared = load_entries(paths)
    if not entries:
        raise ValueError("nothing to compare: no runs found")
    return Comparison(entries=entries, shared=shared)


# --------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> Path:
    """PNG written to a temporary name, then renamed (no half-written plot)."""
    import os

    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_accuracy_by_round(c: Comparison, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, benches = c.round_rows(), c.benchmarks
    if not rows or not benches:
        return None
    fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 3.6), squeeze=False)
    for ax, b in zip(axes[0], benches):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            mine = [r for r in rows if r["variant"] == variant]
            ax.errorbar(
                [r["round"] for r in mine],
                [r[f"acc:{b}"] for r in mine],
                yerr=[r[f"sd:{b}"] for r in mine],
                marker="o",
                capsize=3,
                label=variant,
            )
        ax.set_title(b)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_accuracy_by_paths(c: Comparison, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, benches = c.paths_rows(), c.benchmarks
    if not rows or not benches:
        return None
    fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 3.6), squeeze=False)
    for ax, b in zip(axes[0], benches):
        for series in dict.fromkeys(r["series"] for r in rows):
            mine = sorted((r for r in rows if r["series"] == series), key=lambda r: r["n_samples"])
            ax.errorbar(
                [r["n_samples"] for r in mine],
                [r[f"acc:{b}"] for r in mine],
                yerr=[r[f"sd:{b}"] for r in mine],
                marker="o",
                capsize=3,
                label=series,
            )
        ax.set_title(f"{b}: last round")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("reasoning paths per problem (teacher.n_samples)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    return _save(fig, path)


def write_comparison(c: Comparison, out_dir: str | Path) -> dict[str, Any]:
    """compare.md, compare.json and the PNG plots into `out_dir` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        p
        for p in (
            plot_accuracy_by_round(c, out / "accuracy_by_round.png"),
            plot_accuracy_by_paths(c, out / "accuracy_by_paths.png"),
        )
        if p is not None
    ]
    md = atomic_write_text(out / "compare.md", c.markdown(plots))
    data = atomic_write_json(
        out / "compare.json",
        {
            "summary": c.summary_rows(),
            "rounds": c.round_rows(),
            "paths": c.paths_rows(),
            "runs": c.status_rows(),
            "experiment_teacher_total": c.experiment_teacher_total() if c.shared else None,
        },
    )
    return {"markdown": md, "json": data, "plots": plots}


__all__ = ["Comparison", "RunEntry", "compare", "load_entries", "round_usage", "write_comparison"]
