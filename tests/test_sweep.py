"""`fdd sweep` and `fdd compare` end to end on a tiny setup.

Teacher: the real `openai` backend against tests/servers/scripted_teacher.py (its request
log says which prompts reached it). Student: a tiny random Llama trained for real. Three
strategy variants (one of them invalid on purpose) times a seed pair.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import pytest

from fdd_core.config import dump_config
from fdd_core.prompts import program_messages
from tests.servers.scripted_teacher import _last_user, numbers_in, world_question
from tests.test_flows import harness, teacher_server, tiny_config  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.server]

N_TRAIN = 12


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    for path, prefix, n in ((train, "sweep-train", N_TRAIN), (test, "sweep-test", 4)):
        with path.open("w") as fh:
            for i in range(n):
                q = world_question(f"{prefix}-{i}", 2 + i % 2)
                fh.write(json.dumps({"question": q, "answer": sum(numbers_in(q))}) + "\n")
    return train, test


def _prompt_hash(question: str) -> str:
    """The hash the scripted teacher logs for a chat program prompt of this question."""
    return hashlib.sha256(_last_user(program_messages(question)).encode()).hexdigest()[:16]


def _log_lines(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def sweep(harness, small_world, teacher_server, tiny_causal_dir, tmp_path_factory):  # noqa: F811
    from fdd.cli import main

    url, log = teacher_server
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = tiny_config(small_world, url, tiny_causal_dir, tmp / "runs", "base", tmp / "cache")
    cfg.evaluation.limit = 4
    cfg.evaluation.batch_size = 4
    cfg.training.max_steps = 2
    cfg_path = tmp / "base.yaml"
    cfg_path.write_text(dump_config(cfg))
    argv = [
        "sweep",
        str(cfg_path),
        "--vary",
        "synthesis.strategy=fdd,uniform,none,bogus",
        "--seeds",
        "0,1",
        "--name",
        "strategies",
        "--max-parallel",
        "2",
    ]
    before = len(_log_lines(log))
    rc = main(argv)
    sent = _log_lines(log)[before:]
    exp_dir = tmp / "runs" / "strategies"
    return {"argv": argv, "rc": rc, "sent": sent, "exp_dir": exp_dir, "log": log}


def _originals(small_world) -> list[str]:
    return [json.loads(x)["question"] for x in small_world[0].read_text().splitlines()]


def test_sweep_records_every_variant_and_survives_the_failing_one(sweep):
    assert sweep["rc"] == 1  # one variant (both its seeds) failed
    exp = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    status = {v["name"]: v["status"] for v in exp["variants"]}
    assert status == {
        f"strategy-{s}_seed-{seed}": ("failed" if s == "bogus" else "completed")
        for s in ("fdd", "uniform", "none", "bogus")
        for seed in (0, 1)
    }
    bad = next(v for v in exp["variants"] if v["name"] == "strategy-bogus_seed-0")
    assert "synthesis.strategy" in bad["error"] and "bogus" in bad["error"]
    assert exp["status"] == "partial"
    for v in exp["variants"]:
        if v["status"] == "completed":
            run = json.loads((Path(v["run_dir"]) / "run.json").read_text())
            assert run["status"] == "completed" and len(run["rounds"]) == 2
            assert run["config"]["synthesis"]["strategy"] == v["overrides"]["synthesis.strategy"]
            assert (
                run["config"]["teacher"]["seed"] == v["seed"] == run["config"]["training"]["seed"]
            )


def test_round0_is_computed_once_per_seed(sweep, small_world):
    originals = {_prompt_hash(q) for q in _originals(small_world)}
    round0 = [r for r in sweep["sent"] if r["prompt"] in originals]
    # 2 seeds x N_TRAIN prompts (one request each); without sharing it would be 6 x N_TRAIN.
    assert len(round0) == 2 * N_TRAIN
    assert len({(r["prompt"], r["seed"]) for r in round0}) == 2 * N_TRAIN
    exp = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    assert len(exp["shared_round0"]) == 2
    assert all(g["status"] == "completed" and len(g["variants"]) == 3 for g in exp["shared_round0"])
    # Every variant of a seed reports the same round 0, and it records the teacher's cost.
    for seed in (0, 1):
        r0s = [
            json.loads((Path(v["run_dir"]) / "run.json").read_text())["rounds"][0]
            for v in exp["variants"]
            if v["seed"] == seed and v["status"] == "completed"
        ]
        assert len({r["dataset"]["version_id"] for r in r0s}) == 1
        assert all(r["teacher_usage"]["rationales"]["requests"] == N_TRAIN for r in r0s)


def test_strategies_spend_equal_budgets_and_none_keeps_d0_and_its_student(sweep):
    exp = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    runs = {
        v["name"]: json.loads((Path(v["run_dir"]) / "run.json").read_text())
        for v in exp["variants"]
        if v["status"] == "completed"
    }
    for seed in (0, 1):
        fdd, uni, none = (
            runs[f"strategy-{s}_seed-{seed}"]["rounds"] for s in ("fdd", "uniform", "none")
        )
        assert fdd[1]["stats"]["plan"]["requested"] == uni[1]["stats"]["plan"]["requested"] > 0
        # Equal budget seen from the teacher side: one synthesis request per planned parent.
        for rounds in (fdd, uni):
            plan = rounds[1]["stats"]["plan"]
            usage = rounds[1]["teacher_usage"]["synthesize"]
            assert usage["requests"] == plan["complex_parents"] + plan["similar_parents"]
        assert none[1]["added"] == 0 and "synthesize" not in none[1]["teacher_usage"]
        assert none[1]["dataset"]["n_rows"] == none[0]["dataset"]["n_rows"]
        # Nothing added: round 0's student is reused, not trained again on the same rows.
        assert none[1]["model"] == none[0]["model"] and "round-0" in none[1]["model"]["path"]
        assert none[1]["stats"]["train"] == {"reused_previous_student": 1}
        assert fdd[1]["added"] > 0 and "train" not in fdd[1]["stats"]  # it grew: it trained
        assert none[1]["stats"]["grade"]["easy"] + none[1]["stats"]["grade"]["hard"] == N_TRAIN


def test_rerun_runs_only_the_failed_variants(sweep):
    from fdd.cli import main

    exp_before = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    before = len(_log_lines(sweep["log"]))
    assert main(sweep["argv"]) == 1
    assert len(_log_lines(sweep["log"])) == before  # nothing reached the teacher again
    exp = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    attempts = {v["name"]: v["attempts"] for v in exp["variants"]}
    assert attempts == {v["name"]: v["attempts"] for v in exp_before["variants"]}
    assert all(a == 1 for n, a in attempts.items() if "bogus" not in n)


def test_compare_table_equals_the_run_records_and_plots_decode(sweep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    from fdd.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", str(sweep["exp_dir"]), "--out", str(out)]) == 0
    data = json.loads((out / "compare.json").read_text())
    exp = json.loads((sweep["exp_dir"] / "experiment.json").read_text())
    records: dict[str, list[dict]] = {}
    for v in exp["variants"]:
        if v["status"] == "completed":
            run = json.loads((Path(v["run_dir"]) / "run.json").read_text())
            records.setdefault(v["name"].rsplit("_seed-", 1)[0], []).append(run)
    rows = {(r["variant"], r["round"]): r for r in data["rounds"]}
    assert (
        {v for v, _ in rows}
        == set(records)
        == {f"strategy-{s}" for s in ("fdd", "uniform", "none")}
    )
    for variant, runs in records.items():
        for r in (0, 1):
            row = rows[(variant, r)]
            assert row["seeds"] == 2
            for bench in runs[0]["rounds"][r]["metrics"]:
                accs = [run["rounds"][r]["metrics"][bench]["accuracy"] for run in runs]
                assert row[f"acc:{bench}"] == pytest.approx(statistics.fmean(accs), abs=1e-4)
                assert row[f"sd:{bench}"] == pytest.approx(statistics.stdev(accs), abs=1e-4)
            assert row["examples"] == statistics.fmean(
                run["rounds"][r]["dataset"]["n_rows"] for run in runs
            )
            reqs = [
                sum(u["requests"] for u in run["rounds"][r]["teacher_usage"].values())
                for run in runs
            ]
            assert row["teacher_requests"] == statistics.fmean(reqs)
    # The experiment total pays each shared round 0 once.
    assert data["experiment_teacher_total"]["requests"] == len(sweep["sent"])
    failed = [r for r in data["runs"] if r["status"] == "failed"]
    assert {r["run"] for r in failed} == {"strategy-bogus_seed-0", "strategy-bogus_seed-1"}
    md = (out / "compare.md").read_text()
    assert "strategy-uniform" in md and "accuracy_by_round.png" in md
    png = out / "accuracy_by_round.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[0] > 100 and img.shape[1] > 200
    assert not (out / "accuracy_by_paths.png").exists()  # n_samples did not vary
    # The sweep flow wrote the same comparison into the experiment and published it.
    assert (sweep["exp_dir"] / "compare" / "compare.md").is_file()
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    wanted = ["experiment-strategies-table", "experiment-strategies-compare"]
    with get_client(sync_client=True) as client:  # by key: a page holds only some of them all
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted))
        )
    assert {a.key for a in found} == set(wanted)


def test_a_variant_failing_at_run_time_is_a_recorded_value(harness, tmp_path):  # noqa: F811
    """The sweep's runner turns a subflow's exception into a failed outcome (no crash)."""
    from fdd_core.config import RunConfig
    from flows.sweep import run_one

    cfg = RunConfig.model_validate(
        {
            "data": {"train": [{"name": "jsonl", "path": str(tmp_path / "missing.jsonl")}]},
            "storage": {"root": str(tmp_path), "run_name": "broken"},
        }
    )
    outcome = run_one(label="broken", config=cfg, run_dir=str(tmp_path / "broken"), deployment=None)
    assert outcome["status"] == "failed" and "missing.jsonl" in outcome["error"]
    record = json.loads((tmp_path / "broken" / "run.json").read_text())
    assert record["status"] == "failed"
