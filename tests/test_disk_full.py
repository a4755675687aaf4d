"""Disk full (chaos test 5, unit level) on a real small tmpfs: a clear error naming the path
and the space needed, nothing published half-written, and success once space is freed.
The whole-run version is in tests/test_chaos.py."""

from __future__ import annotations

import errno
import random

import pytest

from fdd_core.schemas import Example
from fdd_core.store import read_examples, write_version
from tests.chaos import SmallFS


def _examples(n: int) -> list[Example]:
    rng = random.Random(0)  # incompressible programs: the parquet file stays big
    return [
        Example(
            id=f"ex-{i:05d}",
            problem_id=f"p-{i:05d}",
            question=f"Question {i}: " + "how many apples? " * 20,
            answer=float(i),
            program=f"ans = {i}\n# " + rng.randbytes(800).hex(),
            origin="original",
        )
        for i in range(n)
    ]


def test_dataset_version_on_a_full_disk_fails_clearly_and_publishes_nothing(tmp_path):
    with SmallFS(tmp_path / "small", "128k") as fs:
        root = fs.path / "datasets"
        examples = _examples(400)  # a few hundred KiB of parquet, even compressed
        with pytest.raises(OSError) as info:
            write_version(root, examples, parent=None, round=0, config_hash="c", code_version="v")
        assert info.value.errno == errno.ENOSPC
        notes = "\n".join(info.value.__notes__)
        assert str(root) in notes and "disk full" in notes and "bytes of examples" in notes
        assert "nothing was published" in notes
        assert [p.name for p in root.iterdir()] == [], "a half version was left behind"
        fs.resize("8m")  # space freed
        ref = write_version(root, examples, parent=None, round=0, config_hash="c", code_version="v")
        assert [e.id for e in read_examples(ref)] == [e.id for e in examples]


def test_note_disk_full_names_path_and_space(tmp_path):
    from tasks.common import note_disk_full

    err = OSError(errno.ENOSPC, "No space left on device")
    assert note_disk_full(err, tmp_path / "round-1" / "student", 16 * 1024 * 1024)
    note = err.__notes__[0]
    assert f"disk full while writing {tmp_path / 'round-1' / 'student'}" in note
    assert "needs about 16.0 MiB" in note and "free on that file system" in note
    other = OSError(errno.EACCES, "Permission denied")
    assert not note_disk_full(other, tmp_path, 1) and not getattr(other, "__notes__", None)
