"""Tests of fdd_core.store: round trips, idempotency, atomic writes, lookups and lineage."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fdd_core
from fdd_core import store
from fdd_core.schemas import DatasetRef, Example, Problem, Rationale
from fdd_core.store import (
    StoreError,
    code_version,
    find_version,
    lineage,
    list_versions,
    read_examples,
    read_manifest,
    write_version,
)

REPO = Path(__file__).resolve().parents[1]


def _example(i: int, origin: str = "original", round: int = 0, program_variant: int = 0) -> Example:
    problem = Problem.create(
        f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
        answer=float(2 * i + 2) if origin == "original" else None,
        origin=origin,  # type: ignore[arg-type]
        round=round,
        parent_id=None if origin == "original" else "p-parent",
        source_dataset="embedded" if origin == "original" else "",
    )
    rationale = Rationale(
        problem_id=problem.id,
        program=f"a = {i}\nb = {i + 2}\nans = a + b  # v{program_variant}",
        answer=float(2 * i + 2),
        teacher="smollm2-135m-instruct",
        prompt_version="pot-v1",
        sample_index=program_variant,
    )
    return Example.join(problem, rationale)


def _write(root, examples, parent=None, round=0, **kw):
    return write_version(
        root,
        examples,
        parent=parent,
        round=round,
        config_hash="cfg123",
        code_version="0.1.0+gtest",
        **kw,
    )


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


D0 = [_example(i) for i in range(6)] + [_example(0, program_variant=1)]


# ----------------------------------------------------------------------------- round trip


def test_round_trip_and_manifest(tmp_path):
    new = [_example(100 + i, "complex", 1) for i in range(3)] + [_example(200, "similar", 1)]
    ref0 = _write(tmp_path, D0, extra={"acceptance_rate": 0.5})
    ref1 = _write(tmp_path, D0 + new, parent=ref0, round=1)

    assert read_examples(ref0) == D0
    assert read_examples(ref1.path) == D0 + new  # a plain folder path works too
    assert ref0.n_rows == 7 and ref1.n_rows == 11
    assert Path(ref0.path) == tmp_path / ref0.version_id

    m0, m1 = read_manifest(ref0), read_manifest(ref1)
    assert m0["version_id"] == ref0.version_id and m0["parent_version"] is None
    assert m1["parent_version"] == ref0.version_id and m1["round"] == 1
    assert m0["counts_by_origin"] == {"original": 7, "complex": 0, "similar": 0}
    assert m1["counts_by_origin"] == {"original": 7, "complex": 3, "similar": 1}
    assert (m0["n_rows"], m0["n_problems"], m1["n_problems"]) == (7, 6, 10)
    assert (m0["config_hash"], m0["code_version"]) == ("cfg123", "0.1.0+gtest")
    assert m0["extra"] == {"acceptance_rate": 0.5} and m1["extra"] == {}
    assert m0["created_at"] < m1["created_at"]
    assert (
        m0["files"]["examples.parquet"]["bytes"]
        == (Path(ref0.path) / "examples.parquet").stat().st_size
    )


def test_empty_version_round_trips(tmp_path):
    ref = _write(tmp_path, [])
    assert ref.n_rows == 0 and read_examples(ref) == []


def test_schema_covers_every_example_field():
    assert set(store.SCHEMA.names) == set(Example.model_fields)


def test_duplicate_ids_and_non_examples_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"duplicate example id .* rows 0 and 2"):
        _write(tmp_path, [D0[0], D0[1], D0[0]])
    with pytest.raises(TypeError, match=r"examples\[1\] is a dict"):
        _write(tmp_path, [D0[0], D0[1].model_dump()])
    with pytest.raises(TypeError, match="JSON"):
        _write(tmp_path, D0, extra={"bad": object()})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- idempotency


def test_same_content_twice_returns_the_existing_version_untouched(tmp_path):
    ref = _write(tmp_path, D0)
    manifest_path = Path(ref.path) / "manifest.json"
    before = (manifest_path.read_bytes(), manifest_path.stat().st_mtime_ns)
    again = _write(tmp_path, list(reversed(D0)), round=5)  # order is not part of identity
    assert again == ref
    assert (manifest_path.read_bytes(), manifest_path.stat().st_mtime_ns) == before
    assert _folders(tmp_path) == [ref.version_id]


def test_version_id_depends_on_rows_and_parent(tmp_path):
    a = _write(tmp_path, D0)
    b = _write(tmp_path, D0[:-1])
    c = _write(tmp_path, D0, parent=b, round=1)
    assert len({a.version_id, b.version_id, c.version_id}) == 3


# ----------------------------------------------------------------------------- atomicity


def _failing_writer(fail_on: str):
    real = store._write_file

    def writer(path: Path, data: bytes) -> None:
        if path.name == fail_on:
            with open(path, "xb") as fh:  # half the bytes reach the disk, then it is full
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    return writer


@pytest.mark.parametrize("fail_on", ["examples.parquet", "manifest.json"])
def test_disk_full_mid_write_leaves_no_version_and_keeps_earlier_ones(
    tmp_path, monkeypatch, fail_on
):
    ref0 = _write(tmp_path, D0)
    monkeypatch.setattr(store, "_write_file", _failing_writer(fail_on))
    with pytest.raises(OSError) as info:
        _write(tmp_path, D0 + [_example(50, "similar", 1)], parent=ref0, round=1)
    assert info.value.errno == errno.ENOSPC
    assert "nothing was published" in "\n".join(getattr(info.value, "__notes__", []))
    assert _folders(tmp_path) == [ref0.version_id]  # no new folder, no temporary left over
    assert read_examples(ref0) == D0
    assert [m["version_id"] for m in list_versions(tmp_path)] == [ref0.version_id]

    monkeypatch.undo()  # the disk has room again: the same write now succeeds
    ref1 = _write(tmp_path, D0 + [_example(50, "similar", 1)], parent=ref0, round=1)
    assert read_examples(ref1)[-1] == _example(50, "similar", 1)


def test_failed_rename_leaves_no_version(tmp_path, monkeypatch):
    ref0 = _write(tmp_path, D0)

    def rename(src, dst):
        raise OSError(errno.EIO, "I/O error", str(dst))

    monkeypatch.setattr(store.os, "rename", rename)
    with pytest.raises(OSError):
        _write(tmp_path, D0[:3])
    assert _folders(tmp_path) == [ref0.version_id]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores file permissions; the monkeypatched test covers this",
)
def test_read_only_root_fails_cleanly(tmp_path):
    ref0 = _write(tmp_path, D0)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            _write(tmp_path, D0[:2])
    finally:
        tmp_path.chmod(0o755)
    assert _folders(tmp_path) == [ref0.version_id]


def test_unwritable_root_fails_cleanly_with_a_note(tmp_path, monkeypatch):
    ref0 = _write(tmp_path, D0)

    def mkdtemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(store.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(PermissionError) as info:
        _write(tmp_path, D0[:2])
    assert str(tmp_path) in "\n".join(info.value.__notes__)
    assert _folders(tmp_path) == [ref0.version_id]
    assert read_examples(ref0) == D0


def test_process_killed_before_publishing_leaves_only_an_ignored_temporary(tmp_path):
    """A real crash: the writing process dies (os._exit) just before the rename."""
    script = (
        "import os, sys\n"
        "from fdd_core import store\n"
        "from tests.test_store import D0\n"
        "store.os.rename = lambda src, dst: os._exit(137)\n"
        "store.write_version(\n"
        "    sys.argv[1], D0, parent=None, round=0, config_hash='c', code_version='v'\n"
        ")\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    leftovers = _folders(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert list_versions(tmp_path) == []
    with pytest.raises(StoreError, match="no dataset version"):
        find_version(tmp_path, leftovers[0][5:9])
    ref = _write(tmp_path, D0)  # a later run writes the version normally
    assert read_examples(ref) == D0


# ----------------------------------------------------------------------------- reading errors


def test_missing_manifest_or_folder_is_a_clear_error(tmp_path):
    ref = _write(tmp_path, D0)
    (Path(ref.path) / "manifest.json").unlink()
    with pytest.raises(StoreError, match=rf"{ref.version_id} has no manifest.json"):
        read_examples(ref)
    with pytest.raises(StoreError, match="folder not found"):
        read_examples(tmp_path / "nope")


def test_row_count_mismatch_is_detected(tmp_path):
    ref = _write(tmp_path, D0)
    manifest_path = Path(ref.path) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["n_rows"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"examples.parquet: 7 rows, but manifest.json says 99"):
        read_examples(ref.path)
    with pytest.raises(StoreError, match="reference expects"):
        read_examples(ref)  # the ref says 7 rows


def test_extra_columns_are_ignored_and_bad_rows_are_named(tmp_path):
    ref = _write(tmp_path, D0)
    path = Path(ref.path) / "examples.parquet"
    table = pq.read_table(path)
    table = table.append_column("difficulty", pa.array([0.1 * i for i in range(len(D0))]))
    pq.write_table(table, path)
    assert read_examples(ref) == D0  # forward compatible

    origins = table.column("origin").to_pylist()
    origins[3] = "invented"
    table = table.set_column(table.column_names.index("origin"), "origin", pa.array(origins))
    pq.write_table(table, path)
    with pytest.raises(StoreError, match=r"examples.parquet: row 3 \(id='r-[0-9a-f]+'\).*origin"):
        read_examples(ref)


# ----------------------------------------------------------------------------- lookups


def _chain(root: Path, n: int) -> list[DatasetRef]:
    refs: list[DatasetRef] = []
    rows = list(D0)
    for r in range(n):
        if r:
            rows = rows + [_example(1000 + r, "similar", r)]
        refs.append(_write(root, rows, parent=refs[-1] if refs else None, round=r))
    return refs


def test_lineage_walks_back_to_the_root_version(tmp_path):
    refs = _chain(tmp_path, 4)
    chain = lineage(tmp_path, refs[-1].version_id)
    assert [m["version_id"] for m in chain] == [r.version_id for r in reversed(refs)]
    assert [m["round"] for m in chain] == [3, 2, 1, 0]
    assert lineage(tmp_path, refs[0].version_id[:10])[0]["version_id"] == refs[0].version_id

    import shutil

    shutil.rmtree(refs[1].path)
    with pytest.raises(StoreError, match=rf"parent {refs[1].version_id} of {refs[2].version_id}"):
        lineage(tmp_path, refs[-1].version_id)


def test_lineage_follows_a_parent_that_lives_in_another_folder(tmp_path):
    # A sweep's round 0 is shared by its variants: D0 in one folder, D1 in each run's own.
    shared, run = tmp_path / "shared", tmp_path / "run"
    d0 = _write(shared, [_example(1, "original", 0)], parent=None, round=0)
    d1 = _write(run, [_example(1, "original", 0), _example(2, "similar", 1)], parent=d0, round=1)
    d2 = _write(run, [_example(3, "complex", 2)], parent=d1, round=2)
    assert read_manifest(d1)["parent_root"] == str(shared.absolute())
    assert "parent_root" not in read_manifest(d2)  # beside its parent: nothing to record
    chain = lineage(run, d2.version_id)
    assert [m["version_id"] for m in chain] == [d2.version_id, d1.version_id, d0.version_id]

    import shutil

    shutil.rmtree(d0.path)
    with pytest.raises(StoreError, match=rf"parent {d0.version_id} of {d1.version_id}.*{shared}"):
        lineage(run, d2.version_id)


def test_list_versions_is_ordered_and_skips_temporaries(tmp_path):
    refs = _chain(tmp_path, 3)
    (tmp_path / ".tmp-deadbeef-x").mkdir()
    (tmp_path / "notes.txt").write_text("not a version")
    listed = list_versions(tmp_path)
    assert [m["version_id"] for m in listed] == [r.version_id for r in refs]
    assert list_versions(tmp_path / "missing") == []


def test_find_version_by_unique_prefix_and_clear_errors(tmp_path):
    refs = _chain(tmp_path, 12)  # 12 hex ids: some share a first character
    by_first: dict[str, list[str]] = {}
    for r in refs:
        by_first.setdefault(r.version_id[0], []).append(r.version_id)
    shared = next(v for v in by_first.values() if len(v) > 1)
    with pytest.raises(StoreError, match="ambiguous") as info:
        find_version(tmp_path, shared[0][0])
    assert all(v in str(info.value) for v in shared)

    target = refs[5]
    assert find_version(tmp_path, target.version_id[:8]) == target
    assert find_version(tmp_path, target.version_id) == target
    with pytest.raises(LookupError, match="no dataset version 'zzz'"):  # callers catch these
        find_version(tmp_path, "zzz")
    with pytest.raises(StoreError, match="empty"):
        find_version(tmp_path, "")


# ----------------------------------------------------------------------------- provenance


def test_code_version_has_the_package_version_and_commit():
    code_version.cache_clear()
    v = code_version()
    assert v.startswith(fdd_core.__version__)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:
        assert v == f"{fdd_core.__version__}+g{head.stdout.strip()}"


def test_code_version_never_fails_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(store.subprocess, "run", no_git)
    code_version.cache_clear()
    try:
        assert code_version() == fdd_core.__version__
    finally:
        code_version.cache_clear()
