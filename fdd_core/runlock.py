"""One run per run folder: a lock file created with O_EXCL, holding who took it and when.

`acquire(run_dir)` creates ``run_dir/run.lock`` with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+, so it works between machines that share the storage) and writes
the holder into it: host, pid, process start time, when it was taken, and a random token.
While held, a daemon thread touches the file every `heartbeat_s` seconds, so its
modification time says the holder is alive even when the holder is on another machine.

A lock that is already there is honoured unless it is stale:
- same host: the holder's pid is gone (or is another process that reused the pid: the
  recorded process start time differs);
- another host: the pid cannot be checked from here, so the lock is stale once its file has
  not been touched for `stale_after_s` seconds (default 10 minutes, 20 heartbeats).
A fresh lock makes `acquire` raise `RunLockedError` at once, naming the holder.

Every decision about the lock file (create it; if it is there, read it, judge it stale,
remove it, create ours) is taken while holding an advisory `flock` on a second file,
``run.lock.guard``, which is never removed. Without that, two processes that both judge
the same lock stale could both remove "it" (the second one removing the first one's new
lock) and both win. The guard is held for milliseconds; the kernel drops it when its
holder dies, so a crash never leaves the folder locked for good. On NFS, Linux maps
`flock` to byte-range locks that the server arbitrates between machines.
`release()` removes the file only while it still holds this lock's token.

Not guaranteed: clocks of the machines sharing storage must agree to within a fraction of
`stale_after_s`; a holder frozen (SIGSTOP, a suspended VM) for longer than that loses its
lock; filesystems without atomic exclusive create (some FUSE or object-store mounts) do
not give mutual exclusion; where the filesystem has no `flock` at all (it fails with
ENOLCK or EOPNOTSUPP) the guard is skipped with a warning and breaking a stale lock is
no longer race-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = "run.lock"
GUARD_SUFFIX = ".guard"
GUARD_WAIT_S = 30.0
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_STALE_AFTER_S = 600.0

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""

    def __init__(self, message: str, holder: LockHolder) -> None:
        super().__init__(message)
        self.holder = holder
        self.retryable = False  # the task retry contract: never retry a locked run


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started_at: str  # ISO time the lock was taken
    token: str
    proc_start: str | None = None  # the holder's /proc start time (pid reuse check)
    command: str = ""

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started_at}"


_UNKNOWN_HOLDER = LockHolder(host="?", pid=0, started_at="?", token="")  # not written yet


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in a lock file; None when absent or unreadable (half-written)."""
    try:
        data = json.loads(path.read_text())
        return LockHolder(**{k: data[k] for k in LockHolder.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def stale_reason(
    path: Path, holder: LockHolder | None, stale_after_s: float, now: float | None = None
) -> str | None:
    """Why the lock at `path` is stale, or None while its holder may be alive."""
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return "it is gone"
    if holder is None:
        # Unreadable: a writer died between create and write, or is writing right now.
        return f"it is unreadable and {age:.0f} s old" if age > 5.0 else None
    if holder.host == socket.gethostname():
        if not _pid_alive(holder.pid):
            return f"its process {holder.pid} on this host is gone"
        start = _proc_start(holder.pid)
        if holder.proc_start and start and start != holder.proc_start:
            return f"pid {holder.pid} now belongs to another process"
        return None
    if age > stale_after_s:
        return f"host {holder.host} has not renewed it for {age:.0f} s (> {stale_after_s:.0f} s)"
    return None


class RunLock:
    """A held lock; `release()` (or leaving the `with` block) gives it back."""

    def __init__(self, path: Path, holder: LockHolder, heartbeat_s: float) -> None:
        self.path = path
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name="fdd-run-lock", daemon=True
        )
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if self.still_held():
                    os.utime(self.path)
            except OSError:
                pass

    def still_held(self) -> bool:
        current = read_holder(self.path)
        return current is not None and current.token == self.holder.token

    def release(self) -> None:
        self._stop.set()
        with _guard(self.path):  # so no breaker replaces it between the check and unlink
            if self.still_held():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path, holder: LockHolder) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(holder), fh)
        fh.flush()
        os.fsync(fh.fileno())
    return True


@contextlib.contextmanager
def _guard(path: Path, wait_s: float = GUARD_WAIT_S):
    """Hold the exclusive `flock` on the lock's guard file for the enclosed decisions."""
    guard = path.with_name(path.name + GUARD_SUFFIX)
    fd = os.open(guard, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunLockedError(
                        f"could not take the guard {guard} of run lock {path} within "
                        f"{wait_s:.0f} s: another process holds it (it is only ever held for "
                        f"milliseconds; a process stuck on it must be stopped)",
                        _UNKNOWN_HOLDER,
                    ) from None
                time.sleep(0.01)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.warning(
                    "the filesystem of %s has no flock (%s): breaking a stale run lock is "
                    "not race-free there",
                    guard,
                    exc.strerror,
                )
                break
        yield
    finally:
        os.close(fd)  # closing drops the flock


def acquire(
    run_dir: str | Path,
    *,
    command: str = "",
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> RunLock:
    """Take the run folder's lock or raise `RunLockedError` naming the live holder."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    pid = os.getpid()
    holder = LockHolder(
        host=socket.gethostname(),
        pid=pid,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        token=uuid.uuid4().hex,
        proc_start=_proc_start(pid),
        command=command,
    )
    with _guard(path):
        if _create(path, holder):
            return RunLock(path, holder, heartbeat_s)
        current = read_holder(path)
        if current is not None and current.host == holder.host and current.pid == pid:
            # This very process took it before (e.g. a flow re-entered): a re-entrant lock
            # would hide a bug, so say so rather than share it.
            raise RunLockedError(
                f"run folder {folder} is already locked by this process ({current.describe()})",
                current,
            )
        reason = stale_reason(path, current, stale_after_s)
        if reason is None and current is None:
            raise RunLockedError(
                f"run folder {folder} is being locked by another process right now (its lock "
                f"file {path} is not written yet); try again in a few seconds",
                _UNKNOWN_HOLDER,
            )
        if reason is None:
            raise RunLockedError(
                f"run folder {folder} is in use by another run ({current.describe()}"
                + (f", command {current.command!r}" if current.command else "")
                + f"). Wait for it to finish, stop it, or use another run name. Lock file: "
                f"{path} (it is treated as stale when that process is gone, or, from another "
                f"host, when it is not renewed for {stale_after_s:.0f} s)",
                current,
            )
        log.warning(
            "taking over the stale run lock %s: %s (%s)",
            path,
            reason,
            current.describe() if current else "no holder recorded",
        )
        path.unlink(missing_ok=True)
        if _create(path, holder):
            return RunLock(path, holder, heartbeat_s)
    # Only a process that does not take the guard (an older fdd, or a filesystem without
    # flock) can have created it between our unlink and create.
    taken = read_holder(path)
    raise RunLockedError(
        f"run folder {folder} was taken by another process while its stale lock was being "
        f"broken ({taken.describe() if taken else 'holder not yet written'}). Lock file: {path}",
        taken or holder,
    )


def check(run_dir: str | Path, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
    """Raise `RunLockedError` if a live holder has the run folder (takes nothing)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return
    current = read_holder(path)
    if current is not None and stale_reason(path, current, stale_after_s) is None:
        raise RunLockedError(
            f"run folder {Path(run_dir)} is in use by another run ({current.describe()}"
            + (f", command {current.command!r}" if current.command else "")
            + f"). Lock file: {path}",
            current,
        )
