"""Child processes of this process, found and stopped without a process-group assumption.

Sandbox workers run in sessions of their own (so a program cannot signal the run), and a
temporary Prefect server is a child too: neither gets the terminal's Ctrl-C, and neither is
stopped by `os._exit`. `stop_descendants` finds every live process below this one through
/proc and stops it: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int | None = None) -> list[int]:
    """Live processes below `pid` (default: this process), parents before children."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:  # no /proc (not Linux): nothing found
        return []
    for entry in entries:
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _stop(pids: list[int], grace_s: float, more=lambda: []) -> list[int]:
    """SIGTERM `pids`, SIGKILL the ones (and `more()`) still alive after `grace_s`."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids + more():
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def stop_descendants(grace_s: float = 3.0) -> list[int]:
    """SIGTERM every descendant, SIGKILL the ones still alive after `grace_s`; their pids."""
    return _stop(descendants(), grace_s, more=descendants)  # and anything started meanwhile


def stop_tree(pid: int, grace_s: float = 5.0) -> list[int]:
    """Stop `pid` and every process below it (found before any is signalled): SIGTERM,
    then SIGKILL for what is still alive after `grace_s`. Returns the pids signalled."""
    return _stop([pid, *descendants(pid)], grace_s)


def describe_exit(returncode: int) -> str:
    """'exited with code 3' / 'was killed by signal SIGKILL (-9)' for a Popen returncode."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} ({returncode})"
    return f"exited with code {returncode}"
