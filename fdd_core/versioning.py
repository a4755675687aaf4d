"""Code and data fingerprints used in cache keys and manifests.

Prefect's TASK_SOURCE policy hashes only a task's own body, not the library it calls. The
fingerprint here hashes every source, prompt and benchmark file of fdd_core, so a change
anywhere below a task invalidates its cached results.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import fdd_core

_CORE = Path(fdd_core.__file__).resolve().parent
_SUFFIXES = {".py", ".txt", ".yaml", ".yml", ".jsonl"}


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """`<version>+<hash of fdd_core files>`, stable across machines for the same code."""
    h = hashlib.sha256()
    for path in sorted(_CORE.rglob("*")):
        if path.suffix in _SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(_CORE)).encode())
            h.update(b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    return f"{fdd_core.__version__}+{h.hexdigest()[:12]}"


def file_fingerprint(path: str | Path | None) -> str:
    """Size and modification time of a data file ('' when there is none)."""
    if not path:
        return ""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return f"{p}:missing"
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
