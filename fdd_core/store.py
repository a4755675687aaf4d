"""Immutable, content-addressed dataset versions on disk.

A version is a folder ``<root>/<version_id>`` holding ``examples.parquet`` (one
`fdd_core.schemas.Example` per row) and ``manifest.json``: version id, parent version, round,
row/problem counts, counts by origin, config hash, code version, creation time, the parquet
file's size and sha256, and an ``extra`` dict for statistics.

The version id is a hash of the sorted example ids plus the parent's version id: the same
rows on the same parent give the same version, whatever their order, so writing it again
returns the existing folder untouched. Rows with equal ids are taken to be equal rows (an
`Example` id hashes its problem and its program, not its other fields).

Writes are atomic: everything goes into a ``.tmp-<id>-*`` folder in the same parent
folder, files are fsynced, and one ``os.rename`` publishes the version. A crash, a full disk
or a permission error therefore leaves either no version or a whole one, never a
half-written folder under a version name, and never touches other versions. A hard crash
can leave a ``.tmp-*`` folder behind; readers ignore dot folders, and they can be deleted.
What this does not protect against: a disk that lies about fsync, or someone editing a
published folder by hand (``read_examples`` checks the row count, not the checksum).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from fdd_core import __version__
from fdd_core.schemas import DatasetRef, Example, content_hash

EXAMPLES_FILE = "examples.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"
_ORIGINS = ("original", "complex", "similar")

# One column per Example field (tests check that this stays in step with the schema).
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.float64(), nullable=False),
        pa.field("program", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("round", pa.int64(), nullable=False),
        pa.field("source_dataset", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
    ]
)


class StoreError(ValueError):
    """A dataset version that is incomplete or inconsistent; the message names the folder."""


class VersionNotFoundError(StoreError, LookupError):
    """No version (or more than one, for a prefix) answers to the given folder, id or prefix."""


# ----------------------------------------------------------------------------- writing


def version_id_for(example_ids: Sequence[str], parent_version: str | None) -> str:
    """Content hash of the sorted example ids and the parent version id."""
    return content_hash(*sorted(example_ids), f"parent={parent_version or ''}")


def write_version(
    root: str | Path,
    examples: Sequence[Example],
    *,
    parent: DatasetRef | None,
    round: int,
    config_hash: str,
    code_version: str,
    extra: dict | None = None,
) -> DatasetRef:
    """Publish `examples` as a new version under `root` (or return the identical existing one)."""
    root = Path(root)
    examples = list(examples)
    ids = _checked_ids(examples)
    parent_version = parent.version_id if parent is not None else None
    vid = version_id_for(ids, parent_version)
    final = root / vid
    if final.exists():
        return _ref_of_existing(final, vid)

    manifest = {
        "version_id": vid,
        "parent_version": parent_version,
        # Where the parent lives when it is not beside this version (a round 0 shared by the
        # variants of an experiment): lineage() follows it there.
        **(
            {"parent_root": str(Path(parent.path).parent.absolute())}
            if parent is not None and Path(parent.path).parent.absolute() != root.absolute()
            else {}
        ),
        "round": round,
        "n_rows": len(examples),
        "n_problems": len({e.problem_id for e in examples}),
        "counts_by_origin": _counts_by_origin(examples),
        "config_hash": config_hash,
        "code_version": code_version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "format": "parquet",
        "format_version": FORMAT_VERSION,
        "extra": dict(extra or {}),
    }
    try:  # fail before touching the disk
        json.dumps(manifest["extra"])
    except (TypeError, ValueError) as exc:
        raise TypeError(f"write_version: `extra` must be JSON-serialisable ({exc})") from None
    data = _parquet_bytes(examples)
    manifest["files"] = {
        EXAMPLES_FILE: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    }
    where = f"while writing dataset version {vid} under {root}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{vid}-", dir=root))
    except OSError as exc:
        exc.add_note(f"{where}: could not create a temporary folder there")
        raise
    try:
        _write_file(tmp / EXAMPLES_FILE, data)
        _write_file(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            # Another writer published the same content first: theirs is as good as ours.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and (final / MANIFEST_FILE).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return _ref_of_existing(final, vid)
            raise
        _fsync_dir(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                exc.add_note(
                    f"{where}: disk full; the version needs {len(data)} bytes of examples "
                    f"plus its manifest, {shutil.disk_usage(root).free} bytes are free there"
                )
            exc.add_note(f"{where}: nothing was published and earlier versions are untouched")
        raise
    return DatasetRef(path=str(final.absolute()), version_id=vid, n_rows=len(examples))


def _checked_ids(examples: list[Example]) -> list[str]:
    seen: dict[str, int] = {}
    for i, e in enumerate(examples):
        if not isinstance(e, Example):
            raise TypeError(f"examples[{i}] is a {type(e).__name__}, expected an Example")
        if e.id in seen:
            raise ValueError(
                f"duplicate example id {e.id!r} at rows {seen[e.id]} and {i}: a dataset "
                "version holds each (problem, program) once"
            )
        seen[e.id] = i
    return list(seen)


def _counts_by_origin(examples: list[Example]) -> dict[str, int]:
    counts = dict.fromkeys(_ORIGINS, 0)
    for e in examples:
        counts[e.origin] = counts.get(e.origin, 0) + 1
    return counts


def _parquet_bytes(examples: list[Example]) -> bytes:
    table = pa.Table.from_pylist([e.model_dump() for e in examples], schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (the single place data reaches the disk; tests inject
    failures here)."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a folder's entries (the rename). Best effort: some file systems refuse it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ref_of_existing(folder: Path, vid: str) -> DatasetRef:
    manifest = read_manifest(folder)
    if manifest.get("version_id") != vid:
        raise StoreError(
            f"{folder}: folder name says version {vid} but its manifest says "
            f"{manifest.get('version_id')!r}"
        )
    return DatasetRef(path=str(folder.absolute()), version_id=vid, n_rows=manifest["n_rows"])


# ----------------------------------------------------------------------------- reading


def _folder(ref: DatasetRef | str | Path) -> Path:
    return Path(ref.path) if isinstance(ref, DatasetRef) else Path(ref)


def read_manifest(ref: DatasetRef | str | Path) -> dict:
    """The version's manifest, plus ``path`` (the folder, as read)."""
    folder = _folder(ref)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise VersionNotFoundError(f"dataset version folder not found: {folder}")
    if not path.is_file():
        raise StoreError(f"{folder} has no {MANIFEST_FILE}: it is not a complete dataset version")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or "version_id" not in manifest or "n_rows" not in manifest:
        raise StoreError(f"{path}: not a dataset manifest (needs version_id and n_rows)")
    if isinstance(ref, DatasetRef) and (
        ref.version_id != manifest["version_id"] or ref.n_rows != manifest["n_rows"]
    ):
        raise StoreError(
            f"{folder}: reference expects version {ref.version_id} with {ref.n_rows} rows, "
            f"the manifest says {manifest['version_id']} with {manifest['n_rows']} rows"
        )
    manifest["path"] = str(folder)
    return manifest


def read_examples(ref: DatasetRef | str | Path) -> list[Example]:
    """All rows of a version, validated; columns this code does not know are ignored."""
    manifest = read_manifest(ref)
    path = _folder(ref) / EXAMPLES_FILE
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: cannot read the examples ({exc})") from exc
    if table.num_rows != manifest["n_rows"]:
        raise StoreError(
            f"{path}: {table.num_rows} rows, but {MANIFEST_FILE} says {manifest['n_rows']}"
        )
    known = [name for name in table.column_names if name in Example.model_fields]
    rows = table.select(known).to_pylist()
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(Example(**row))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<row>'}: {e['msg']}" for e in exc.errors()
            )
            raise StoreError(
                f"{path}: row {i} (id={row.get('id')!r}) is not a valid Example: {problems}"
            ) from None
    return examples


def list_versions(root: str | Path) -> list[dict]:
    """Manifests (with ``path``) of every published version under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    manifests = []
    for child in root.iterdir():
        if child.name.startswith(".") or not (child / MANIFEST_FILE).is_file():
            continue  # temporary folders of interrupted writes, stray files
        manifests.append(read_manifest(child))
    return sorted(
        manifests, key=lambda m: (m.get("created_at", ""), m.get("round", 0), m["version_id"])
    )


def find_version(root: str | Path, version_id_or_prefix: str) -> DatasetRef:
    """The version whose id is, or uniquely starts with, the given string."""
    wanted = version_id_or_prefix.strip()
    if not wanted:
        raise VersionNotFoundError("an empty version id matches every version; give a prefix")
    versions = list_versions(root)
    matches = [m for m in versions if m["version_id"].startswith(wanted)]
    if not matches:
        known = ", ".join(m["version_id"] for m in versions[-10:]) or "none"
        raise VersionNotFoundError(f"no dataset version {wanted!r} under {root} (latest: {known})")
    if len(matches) > 1:
        ids = ", ".join(m["version_id"] for m in matches)
        raise VersionNotFoundError(f"{wanted!r} is ambiguous under {root}: it matches {ids}")
    m = matches[0]
    return DatasetRef(
        path=str(Path(m["path"]).absolute()), version_id=m["version_id"], n_rows=m["n_rows"]
    )


def lineage(root: str | Path, version_id: str) -> list[dict]:
    """Manifests from the given version (id or unique prefix) back to its root version.

    A parent is looked up beside its child first, then in the folder the child's manifest
    names as `parent_root` (a round 0 shared by several runs lives outside each run).
    """
    chain: list[dict] = []
    seen: set[str] = set()
    current: str | None = find_version(root, version_id).version_id
    where = [Path(root)]
    while current is not None:
        if current in seen:
            raise StoreError(f"lineage of {version_id} under {root} loops at {current}")
        seen.add(current)
        folder = next((w / current for w in where if (w / current / MANIFEST_FILE).is_file()), None)
        if folder is None:
            child = chain[-1]["version_id"] if chain else version_id
            raise VersionNotFoundError(
                f"lineage of {version_id} is broken: parent {current} of {child} "
                f"is not under {' nor '.join(str(w) for w in where)}"
            )
        manifest = read_manifest(folder)
        chain.append(manifest)
        current = manifest.get("parent_version")
        where = [folder.parent]
        if manifest.get("parent_root"):
            where.append(Path(manifest["parent_root"]))
    return chain


# ----------------------------------------------------------------------------- provenance


@lru_cache(maxsize=1)
def code_version() -> str:
    """``fdd_core.__version__``, plus ``+g<short commit>`` inside a git checkout. Never fails."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip()
        if out.returncode == 0 and commit and all(c in "0123456789abcdef" for c in commit):
            return f"{__version__}+g{commit}"
    except Exception:  # noqa: BLE001, S110 - no git, no checkout, a hung git: version alone
        pass
    return __version__


__all__ = [
    "EXAMPLES_FILE",
    "MANIFEST_FILE",
    "SCHEMA",
    "StoreError",
    "VersionNotFoundError",
    "code_version",
    "find_version",
    "lineage",
    "list_versions",
    "read_examples",
    "read_manifest",
    "version_id_for",
    "write_version",
]
