"""Dataset cards and `fdd data export`: the copies are loaded back with `datasets` itself."""

from __future__ import annotations

import json

import pytest
import yaml

from fdd_core.config import RunConfig
from fdd_core.dataset_card import (
    card_metadata,
    dataset_card,
    export_version,
    push_to_hub,
    write_dataset_card,
)
from fdd_core.schemas import Example, Problem, Rationale
from fdd_core.store import read_examples, write_version


def _example(i: int, origin: str = "original", round: int = 0) -> Example:
    problem = Problem.create(
        f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
        answer=float(2 * i + 2) if origin == "original" else None,
        origin=origin,  # type: ignore[arg-type]
        round=round,
        parent_id=None if origin == "original" else "p-parent",
        source_dataset="gsm8k" if origin == "original" else "fdd-synthetic",
    )
    rationale = Rationale(
        problem_id=problem.id,
        program=f"a = {i}\nb = {i + 2}\nans = a + b",
        answer=float(2 * i + 2),
        teacher="scripted-teacher",
        prompt_version="pot-v1",
        sample_index=0,
    )
    return Example.join(problem, rationale)


@pytest.fixture
def versions(tmp_path):
    root = tmp_path / "run" / "datasets"
    d0 = [_example(i) for i in range(5)]
    v0 = write_version(root, d0, parent=None, round=0, config_hash="c", code_version="t")
    d1 = d0 + [_example(10 + i, "complex", 1) for i in range(3)] + [_example(20, "similar", 1)]
    v1 = write_version(root, d1, parent=v0, round=1, config_hash="c", code_version="t")
    return v0, v1


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_header_says_size_lineage_origins_and_sources(versions):
    v0, v1 = versions
    cfg = RunConfig()
    path = write_dataset_card(v1, cfg)
    meta = _header(path.read_text())
    fdd = meta["fdd"]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": 9}]
    assert meta["size_categories"] == ["n<1K"]
    assert [m["version_id"] for m in fdd["lineage"]] == [v1.version_id, v0.version_id]
    assert fdd["counts_by_origin"] == {"original": 5, "complex": 3, "similar": 1}
    assert fdd["counts_by_round"] == {0: 5, 1: 4}
    assert fdd["teacher_models"] == ["scripted-teacher"]
    assert fdd["prompt_versions"] == ["pot-v1"]
    assert {s["name"]: s["license"] for s in fdd["source_datasets"]}["gsm8k"] == "MIT"
    assert fdd["filtering"]["near_dup_threshold"] == cfg.filtering.near_dup_threshold
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == list(Example.model_fields)
    # The card is not part of the version's content: the rows still read back whole.
    assert len(read_examples(v1)) == 9


def test_card_without_config_says_not_recorded(versions):
    meta = card_metadata(versions[0], None)
    assert "not recorded" in meta["fdd"]["filtering"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_loads_with_load_dataset(versions, tmp_path, fmt):
    from datasets import load_dataset

    _, v1 = versions
    out = export_version(v1, tmp_path / f"export-{fmt}", fmt)  # type: ignore[arg-type]
    assert (out / "README.md").is_file() and (out / "manifest.json").is_file()
    direct = load_dataset(
        "parquet" if fmt == "parquet" else "json",
        data_files=str(out / f"train.{fmt}"),
        cache_dir=str(tmp_path / "hf-cache"),
    )["train"]
    # load_dataset on the folder reads the card's `configs` to find the data file.
    by_card = load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache2"))["train"]
    want = sorted(e.id for e in read_examples(v1))
    assert sorted(direct["id"]) == want and sorted(by_card["id"]) == want
    assert set(direct.column_names) == set(Example.model_fields)


def test_export_hf_loads_with_load_from_disk(versions, tmp_path):
    from datasets import load_from_disk

    _, v1 = versions
    out = export_version(v1, tmp_path / "export-hf", "hf")
    ds = load_from_disk(str(out))
    assert sorted(ds["id"]) == sorted(e.id for e in read_examples(v1))
    assert "lineage" in (out / "README.md").read_text()


def test_export_refuses_a_non_empty_folder_and_bad_format(versions, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_version(versions[0], busy, "parquet")
    with pytest.raises(ValueError, match="parquet, jsonl, hf"):
        export_version(versions[0], tmp_path / "new", "csv")  # type: ignore[arg-type]
    assert (busy / "x").read_text() == "mine" and not (tmp_path / "new").exists()


def test_push_to_hub_without_token_is_a_clear_error(versions, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    out = export_version(versions[0], tmp_path / "e", "parquet")
    with pytest.raises(RuntimeError, match="needs a Hugging Face token"):
        push_to_hub(out, "me/data", "parquet")


def test_push_to_hub_without_network_is_a_clear_error(versions, tmp_path, monkeypatch):
    secret = "hf_secret_value_123"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    out = export_version(versions[0], tmp_path / "e", "parquet")
    with pytest.raises(RuntimeError, match="cannot reach") as err:
        push_to_hub(out, "me/data", "parquet")
    assert secret not in str(err.value)
    assert secret not in json.dumps([p.read_text() for p in out.glob("*.json")])
    assert secret not in dataset_card(versions[0])


def test_cli_data_export(versions, tmp_path, capsys):
    from datasets import load_dataset

    from fdd.cli import main

    _, v1 = versions
    root = str(tmp_path / "run")
    out = tmp_path / "cli-export"
    assert main(["data", "export", v1.version_id[:8], str(out), "--root", root]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    ds = load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert ds.num_rows == v1.n_rows
    # An existing, non-empty folder is refused with the CLI's error exit, untouched.
    assert main(["data", "export", v1.version_id[:8], str(out), "--root", root]) == 2
    assert "not an empty folder" in capsys.readouterr().err
