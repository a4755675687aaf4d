"""The run report, built from a finished run of the scripted-teacher flow and checked
against that run's records: every table's numbers, every figure's PNG, the leakage counts.

The run is the tests/test_flows.py setup made smaller (16 problems, a teacher without
latency) with the base model measured, so every section has data.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from fdd_core.io import read_jsonl
from tests.servers.scripted_teacher import numbers_in, world_question
from tests.test_flows import REPO, _free_port, harness, tiny_config  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.server]

N_TRAIN = 16
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = REPO / "docs" / "img" / "run-report.png"


@pytest.fixture(scope="module")
def fast_teacher(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("teacher") / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.scripted_teacher", "--port", str(port)]
        + ["--log", str(log), "--latency", "0"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"scripted teacher did not start: {proc.stderr.read()!r}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    for name, n, steps in (("train", N_TRAIN, None), ("test", 6, 2)):
        with (folder / f"{name}.jsonl").open("w") as fh:
            for i in range(n):
                q = world_question(f"{name}-{i}", steps or 2 + i % 2)
                fh.write(json.dumps({"question": q, "answer": sum(numbers_in(q))}) + "\n")
    return folder / "train.jsonl", folder / "test.jsonl"


@pytest.fixture(scope="module")
def finished_run(harness, small_world, fast_teacher, tiny_causal_dir, tmp_path_factory):  # noqa: F811
    from flows.distill import fdd_distill

    cfg = tiny_config(
        small_world,
        fast_teacher,
        tiny_causal_dir,
        tmp_path_factory.mktemp("runs"),
        "reported",
        tmp_path_factory.mktemp("cache"),
    )
    cfg.evaluation.measure_base = True
    cfg.evaluation.limit = 6
    result = fdd_distill(config=cfg)
    return cfg, result, Path(result.run_dir)


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(BytesIO(data)) as img:
        img.verify()  # decodes the chunks; raises on a broken file
    with Image.open(BytesIO(data)) as img:
        img.load()
        return img.size


def test_report_files_are_written_at_the_end_of_the_run(finished_run):
    _, _, run_dir = finished_run
    for name in ("report.html", "report.md", "report/tables.json", "report/accuracy.png"):
        assert (run_dir / name).is_file(), name
    md = (run_dir / "report.md").read_text()
    assert "## Accuracy per benchmark per round" in md and "![accuracy](report/accuracy.png)" in md


def test_report_tables_equal_the_run_records(finished_run):
    cfg, result, run_dir = finished_run
    tables = json.loads((run_dir / "report" / "tables.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    rounds = record["rounds"]
    r0, r1 = rounds

    # Accuracy: the base model (round 0) and each round's student, as benchmarked.
    acc = tables["accuracy"]
    want = [("base", m) for m in r0["base_metrics"].values()]
    want += [(r["round"], m) for r in rounds for m in r["metrics"].values()]
    assert [(row["round"], row["accuracy"], row["correct"], row["n"]) for row in acc] == [
        (rnd, m["accuracy"], m["correct"], m["n"]) for rnd, m in want
    ]
    assert len(want) == 3  # base + 2 rounds, one benchmark

    # Funnel: the recorded pairs, and those equal the stages' own counters.
    for r in rounds:
        pairs = json.loads(
            (run_dir / "records" / f"round_{r['round']}" / "funnel.json").read_text()
        )
        assert [
            [row["step"], row["count"]] for row in tables[f"funnel_round_{r['round']}"]
        ] == pairs
    f0 = {row["step"]: row["count"] for row in tables["funnel_round_0"]}
    s0 = r0["stats"]["rationales"]
    assert f0["problems"] == s0["problems"] == N_TRAIN
    assert f0["teacher completions"] == s0["completions"] == N_TRAIN * cfg.teacher.n_samples
    assert f0["verified"] == s0["verified"] and f0["examples added"] == r0["added"]
    f1 = {row["step"]: row["count"] for row in tables["funnel_round_1"]}
    assert f1["pool"] == N_TRAIN and f1["easy"] + f1["hard"] == N_TRAIN
    assert f1["candidates"] == r1["stats"]["filter"]["candidates"]
    assert (
        f1["accepted"] == r1["stats"]["label"]["accepted"] and f1["examples added"] == r1["added"]
    )
    for reason, n in r1["dropped"].items():
        assert f1.get(f"dropped: {reason}", 0) == n

    # Growth: added per origin sums to the last version's counts.
    growth = tables["growth"]
    for origin, n in r1["counts_by_origin"].items():
        assert sum(row[f"added {origin}"] for row in growth) == n
    assert [row["total examples"] for row in growth] == [r["dataset"]["n_rows"] for r in rounds]
    from fdd_core.store import read_examples

    last = read_examples(result.rounds[-1].dataset)
    assert sum(row["examples"] for row in tables["difficulty"]) == len(last)

    # Reasoning paths: every original problem counted once, every D0 program once.
    paths = tables["paths"]
    assert sum(row["problems"] for row in paths) == N_TRAIN
    d0 = read_examples(result.rounds[0].dataset)
    assert sum(row["verified programs"] * row["problems"] for row in paths) == len(d0)

    # Leakage: the distribution counts every generated question and every original one.
    candidates = read_jsonl(run_dir / "records" / "round_1" / "candidates.jsonl")
    assert len(candidates) == r1["stats"]["synthesize"]["generated"] > 0
    for row in tables["leakage"]:
        assert row["n"] == (len(candidates) if row["questions"] == "generated" else N_TRAIN)
    jac = [c["leakage"][cfg.evaluation.benchmarks[0]]["jaccard"] for c in candidates]
    gen_jac = next(
        r for r in tables["leakage"] if r["measure"] == "jaccard" and r["questions"] == "generated"
    )
    assert gen_jac["max"] == round(max(jac), 4)
    (cont,) = tables["contamination"]
    assert cont["contaminated_ngram"] == r1["dropped"]["contaminated_ngram"]
    assert cont["contaminated_near"] == r1["dropped"]["contaminated_near"]
    assert cont["candidates"] == len(candidates)

    # Cost: wall time per stage is the first recorded execution of each round.
    for r in (0, 1):
        first = read_jsonl(run_dir / "records" / f"round_{r}" / "timings.jsonl")[0]
        rows = [row for row in tables["wall_time"] if row["round"] == r]
        assert [(row["stage"], row["wall s"]) for row in rows] == [
            (stage, round(secs, 2)) for stage, secs in first["stages"]
        ]
    html = (run_dir / "report.html").read_text()
    if any("teacher_usage" in r for r in rounds):
        assert tables["teacher_usage"]
    else:
        assert "Teacher usage (requests, tokens, cache hits): not recorded" in html

    # Training: the loss per step the trainer recorded.
    for row, r in zip(tables["training"], result.rounds):
        meta = json.loads((Path(r.model.path) / "meta.json").read_text())
        assert row["steps"] == meta["steps"] == len(meta["loss_per_step"])
        assert row["last loss"] == meta["loss_per_step"][-1]


def test_every_figure_is_a_png_of_the_expected_size(finished_run):
    from fdd_core.report.plots import PIXELS

    _, _, run_dir = finished_run
    files = sorted((run_dir / "report").glob("*.png"))
    names = {p.stem for p in files}
    assert {"accuracy", "funnel_round_0", "funnel_round_1", "growth", "paths"} <= names
    assert {"wall_time", "training_loss"} <= names and any(n.startswith("leakage_") for n in names)
    for path in files:
        assert _png_size(path.read_bytes()) == PIXELS, path.name
    # The HTML embeds the same figures and loads nothing from elsewhere.
    html = (run_dir / "report.html").read_text()
    embedded = re.findall(
        r"data-figure='([^']+)' width='\d+' src='data:image/png;base64,([^']+)'", html
    )
    assert {name for name, _ in embedded} == names
    for name, b64 in embedded:
        data = base64.b64decode(b64)
        assert data == (run_dir / "report" / f"{name}.png").read_bytes()
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", html)


def test_examples_show_parents_programs_votes_and_reasons(finished_run):
    _, _, run_dir = finished_run
    html = (run_dir / "report.html").read_text()
    verdicts = [r for p in (run_dir / "records" / "round_1" / "verdicts").glob("*.jsonl")
                for r in read_jsonl(p)]  # fmt: skip
    accepted = next(v for v in verdicts if v["accepted"])
    assert accepted["parent_id"] and accepted["programs"]
    assert "<details><summary>round 1" in html and "parent:" in html and "vote:" in html
    assert "student, test, " in html  # the student's benchmark programs


def test_report_artifacts_are_published(finished_run):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        arts = {a.key: a for a in client.read_artifacts() if a.key}
    assert "reported-report" in arts
    image = arts["reported-report-accuracy"]
    assert image.type == "image" and str(image.data).startswith("data:image/png;base64,")
    assert arts["reported-report-table-funnel-round-1"].type == "table"


def test_report_of_an_older_run_says_what_is_missing(finished_run, tmp_path):
    from fdd_core.report import write_run_report

    _, _, run_dir = finished_run
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("records", "report*"))
    paths = write_run_report(old)
    html = paths["html"].read_text()
    assert "Not recorded" in html
    for what in ("round 0: funnel", "round 1: candidate verdicts", "original training questions"):
        assert what in html
    assert "data-figure='accuracy'" in html  # what the run.json holds still shows


def test_cli_report_command(finished_run, tmp_path, capsys):
    from fdd.cli import main

    _, _, run_dir = finished_run
    assert main(["report", str(run_dir)]) == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (scripts/install_system_deps.sh installs it)"
)
def test_chromium_renders_the_report_with_its_plots(finished_run, tmp_path):
    _, _, run_dir = finished_run
    # A copy of the page that records, once loaded, how many figures decoded at full size.
    probe = tmp_path / "probe.html"
    probe.write_text(
        (run_dir / "report.html")
        .read_text()
        .replace(
            "</body>",
            "<script>window.addEventListener('load', () => {document.body.setAttribute("
            "'data-decoded', [...document.images].filter(i => i.complete && "
            "i.naturalWidth === 800 && i.naturalHeight === 400).length)});</script></body>",
        )
    )
    n_figures = (run_dir / "report.html").read_text().count("data-figure=")

    def chromium(profile: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / profile}", "--window-size=1200,1600",
               "--virtual-time-budget=5000", *args]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, timeout=120, check=False)

    dom = chromium("p-dom", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'data-decoded="(\d+)"', dom.stdout.decode("utf-8", "replace"))
    assert match and int(match.group(1)) == n_figures, "not every figure decoded in the browser"

    shot = tmp_path / "report.png"
    done = chromium("p-shot", f"--screenshot={shot}", (run_dir / "report.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 1600)
        colors = {c: n for n, c in img.convert("RGB").getcolors(maxcolors=1 << 22)}
    # The first screen shows the accuracy plot (its line and markers in matplotlib's
    # tab:blue) and round 0's funnel, whose bars fill large areas in the funnel colour.
    assert colors.get((31, 119, 180), 0) > 50
    assert colors.get((76, 114, 176), 0) > 20_000
    if os.environ.get("FDD_UPDATE_DOCS_IMG") == "1":  # refresh the picture in the docs
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG)
