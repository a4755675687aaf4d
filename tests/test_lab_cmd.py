"""`fdd lab` end to end: simulated teacher, real flow, lab metrics in the run's records.

A tiny random student stands in for SmolLM2 (so this takes seconds of training, not
minutes); everything else is what `make lab` runs: configs/lab.yaml, the simulated teacher
on 127.0.0.1, the real openai backend, filters, labelling, dataset store and evaluation.
"""

from __future__ import annotations

import json

import pytest

from fdd.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from fdd_core.backends import clear_backends
    from tasks.common import close_sandboxes
    from tests.prefect_workers import isolated_harness

    try:
        with isolated_harness(startup_timeout=120):
            yield
    finally:  # the flows memoize sandboxes and models per process: free them
        close_sandboxes()
        clear_backends()


def test_fdd_lab_records_label_precision_and_contamination_recall(
    harness, tmp_path, tiny_causal_dir, capsys
):
    train = "[{name: jsonl, path: fdd_core/data/lab/lab_train.jsonl, limit: 12}]"
    argv = [
        "lab",
        "configs/lab.yaml",
        "--port",
        "0",
        "--run-name",
        "lab-test",
        "--dial",
        "test_paraphrase=0.3",
        "--dial",
        "disagree=0.3",
    ]
    for item in (
        f"student.model={tiny_causal_dir}",
        "student.max_tokens=24",
        f"data.train={train}",
        "rounds.n_rounds=1",
        "training.method=full",
        "training.epochs=1",
        "training.max_seq_len=128",
        "evaluation.limit=6",
        "synthesis.max_parents_per_round=12",
        f"storage.root={tmp_path}",
        f"storage.cache_dir={tmp_path / 'cache'}",
        "orchestration.retry_delay_s=0.1",
    ):
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SIMULATED TEACHER" in out and "label_precision" in out
    run = tmp_path / "lab-test"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["teacher"].startswith("simulated-teacher")
    r0, r1 = record["rounds"]
    assert r0["lab_metrics"] == {}
    m = r1["lab_metrics"]
    assert m["labels_accepted"] > 0 and 0 <= m["label_precision"] <= 1
    assert m["paraphrases_planted"] > 0 and 0 <= m["contamination_recall"] <= 1
    assert m["labels_unknown"] == 0  # the world knows every question its teacher wrote
    lab = json.loads((run / "lab.json").read_text())
    assert set(lab["baseline_accuracy"]) == {"lab_test", "lab_hard"}
    # A random tiny student solves nothing, so every parent is hard: similar problems only.
    assert {"program", "similar"} <= set(lab["teacher_http_requests"])
    assert r1["stats"]["grade"]["hard"] > 0
