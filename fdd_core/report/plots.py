"""The report's figures as PNG bytes (matplotlib, headless Agg backend).

Every figure has the same fixed pixel size (`FIG_SIZE` inches at `DPI`), saved without
tight cropping, so a PNG's size is known in advance (tests check it).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from fdd_core.report import data as D

FIG_SIZE = (8.0, 4.0)
DPI = 100
PIXELS = (int(FIG_SIZE[0] * DPI), int(FIG_SIZE[1] * DPI))  # (width, height)
ORIGIN_COLORS = {"original": "#4C72B0", "complex": "#DD8452", "similar": "#55A868"}


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, ncols, figsize=FIG_SIZE, dpi=DPI, squeeze=False, layout="constrained"
    )
    return fig, list(axes[0])


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def accuracy_plot(rows: Sequence[dict]) -> bytes:
    """Accuracy per benchmark per round (the paper's Fig. 2), base model dashed."""
    fig, (ax,) = _figure()
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    for i, bench in enumerate(benches):
        pts = [(r["round"], r["accuracy"]) for r in rows if r["benchmark"] == bench]
        line = [(x, y) for x, y in pts if x != "base"]
        color = f"C{i}"
        if line:
            ax.plot(*zip(*line), marker="o", color=color, label=bench)
        for x, y in pts:
            if x == "base":
                ax.axhline(y, color=color, linestyle="--", linewidth=1, label=f"{bench} (base)")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy per benchmark per round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if benches:
        ax.legend(fontsize=8)
    return _png(fig)


def funnel_plot(steps: Sequence[dict], title: str) -> bytes:
    fig, (ax,) = _figure()
    names = [s["step"] for s in steps][::-1]
    counts = [s["count"] for s in steps][::-1]
    colors = ["#C44E52" if n.startswith(("dropped", "rejected")) else "#4C72B0" for n in names]
    ax.barh(names, counts, color=colors)
    ax.set_xlim(0, max([*counts, 1]) * 1.15)
    for y, c in enumerate(counts):
        ax.text(c, y, f" {c}", va="center", fontsize=8, clip_on=True)
    ax.set_xlabel("count")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def growth_plot(growth: Sequence[dict], difficulty: Sequence[dict]) -> bytes:
    """Examples added per round by origin (stacked), and their mean program steps."""
    fig, (ax, ax2) = _figure(2)
    rounds = [r["round"] for r in growth]
    bottom = [0] * len(rounds)
    for origin in D.ORIGINS:
        vals = [r[f"added {origin}"] for r in growth]
        ax.bar(rounds, vals, bottom=bottom, color=ORIGIN_COLORS[origin], label=origin)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("round")
    ax.set_ylabel("examples added")
    ax.set_title("Dataset growth by origin")
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    for origin in D.ORIGINS:
        pts = [(r["round"], r["mean steps"]) for r in difficulty if r["origin"] == origin]
        if pts:
            ax2.plot(*zip(*pts), marker="o", color=ORIGIN_COLORS[origin], label=origin)
    ax2.set_xlabel("round added")
    ax2.set_ylabel("mean program steps")
    ax2.set_title("Difficulty of what was added")
    if difficulty:
        ax2.legend(fontsize=8)
    ax2.set_xticks(rounds)
    return _png(fig)


def leakage_plot(bench: str, generated: dict[str, list[float]], ref: dict[str, list[float]]):
    """Histograms of the highest similarity to a benchmark's tests (the paper's Fig. 4)."""
    fig, axes = _figure(2)
    bins = [i / 20 for i in range(21)]
    for ax, measure in zip(axes, ("ngram", "jaccard")):
        for label, values, color in (
            ("original (reference)", ref.get(measure, []), "#4C72B0"),
            ("generated", generated.get(measure, []), "#DD8452"),
        ):
            if values:
                weights = [1 / len(values)] * len(values)
                ax.hist(values, bins=bins, weights=weights, alpha=0.6, color=color, label=label)
        ax.set_xlabel(f"highest {measure} similarity to {bench} test")
        ax.set_ylabel("share of questions")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8)
    axes[0].set_title("n-gram overlap")
    axes[1].set_title("shingle Jaccard")
    return _png(fig)


def paths_plot(rows: Sequence[dict]) -> bytes:
    fig, (ax,) = _figure()
    ax.bar([r["verified programs"] for r in rows], [r["problems"] for r in rows], color="#4C72B0")
    ax.set_xlabel("verified programs (reasoning paths) per problem, round 0")
    ax.set_ylabel("problems")
    ax.set_title("Reasoning paths per problem")
    ax.set_xticks([r["verified programs"] for r in rows])
    return _png(fig)


def timing_plot(rows: Sequence[dict]) -> bytes:
    fig, (ax,) = _figure()
    rounds = sorted({r["round"] for r in rows})
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    bottom = [0.0] * len(rounds)
    for i, stage in enumerate(stages):
        vals = [
            sum(r["wall s"] for r in rows if r["round"] == rd and r["stage"] == stage)
            for rd in rounds
        ]
        ax.bar(rounds, vals, bottom=bottom, label=stage, color=f"C{i % 10}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("round")
    ax.set_ylabel("wall time (s)")
    ax.set_title("Wall time per stage")
    ax.set_xticks(rounds)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def loss_plot(curves: dict[int, list[float]]) -> bytes:
    fig, (ax,) = _figure()
    for r, losses in sorted(curves.items()):
        ax.plot(range(1, len(losses) + 1), losses, label=f"round {r}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss per step of each round's student")
    ax.legend(fontsize=8)
    return _png(fig)


__all__ = ["DPI", "FIG_SIZE", "PIXELS"]
