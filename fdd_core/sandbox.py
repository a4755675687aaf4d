"""Run untrusted Program-of-Thought programs and read their answer (the variable `ans`).

`Sandbox.run_many(programs)` returns one `ExecutionResult` per program, in order, and never
raises for a bad program: failures are values (`status` error / timeout / memory /
no_answer / bad_answer, with the reason and the last lines of the traceback in `stderr`).

How it works. A plain subprocess per program costs a whole interpreter start (about 25-36
ms of CPU here). Instead the sandbox keeps one long-lived, pre-warmed worker process per
core (fdd_core/sandbox_worker.py, a "zygote"), started once, when it can inside
``unshare --pid --mount --net --fork --kill-child --mount-proc``. For each program the worker
compiles the source, then forks a child that starts a new session, closes every inherited
file descriptor, sets rlimits, enters a fresh scratch folder, drops privileges, runs the
code in fresh globals and writes a small verdict back over a pipe. The worker enforces the
wall clock and kills what is left. A worker that dies (or stops answering) is noticed,
killed and restarted; only the program it was running is marked `error`. The calling
thread drives all its workers from one poll loop: programs go several to a request frame
(`BATCH`, marshalled), each worker keeps up to `QUEUED` of them, so it never waits for the
caller, and the caller reads replies a few at a time. A program costs about 3 ms of CPU in
all on the 2-core development machine, over half of it the kernel forking, copying on write
and tearing down one Python process per program (bench/profile_sandbox.py; numbers in
docs/BENCHMARKS.md).

What it protects against (each has a hostile test in tests/test_sandbox.py):
- endless loops and sleeps: a wall-clock timeout, after which the program's process group
  (with a pid namespace: every process in it) is SIGKILLed; plus RLIMIT_CPU.
- memory bombs: RLIMIT_AS (`memory_mb`); MemoryError or a kill for memory gives `memory`.
- fork bombs: RLIMIT_NPROC (`MAX_PROCESSES`, counted per uid, enforced because the child
  runs as `nobody` when the sandbox runs as root; the kernel ignores it for root itself),
  and, with a pid namespace, every process the program started is killed and reaped
  (setsid() does not help it escape) before the worker takes the next program.
- files: the child runs in a scratch folder of its own, removed afterwards (a fresh one
  per program, not one reused after a wipe: on a reused folder a program could leave
  timestamps or extended attributes for the next to read), with RLIMIT_FSIZE
  (`FILE_SIZE_MB`) and RLIMIT_NOFILE. A file at a known absolute path is protected by
  something real, not by obscurity: with a mount namespace the whole file system is
  remounted read-only and nosuid (mount_setattr, recursively) *in that namespace only*;
  /tmp is a small private tmpfs holding the scratch folder (the host's /tmp, pytest's
  tmp_path included, is not even visible) and /run (Unix sockets) is hidden. The child
  cannot undo this: it has no CAP_SYS_ADMIN (it is `nobody`, or root of a user namespace
  with every capability dropped). As `nobody` it also lacks the permission to change the
  caller's files, a second, independent layer.
- secrets: the worker starts with a fixed minimal environment (PATH, LANG, thread counts),
  never the caller's, so OPENAI_API_KEY and the like are not there to read; with a pid
  namespace /proc shows only the sandbox's own processes. Folders closed to others on the
  way to the Python installation (say /root, for a pyenv in /root/.pyenv) are covered in
  the namespace by an empty tmpfs holding only the entries Python needs, so `nobody` can
  import modules and still sees nothing else there (no ~/.ssh).
- the network: a new network namespace holds only a loopback interface that is down, so
  no connection (to 127.0.0.1 either) is possible.
- the caller: a program cannot signal the worker (pid 1 of its namespace ignores signals
  from inside it, and `nobody` may not signal root) nor the test or flow process (not
  visible from the namespace); sys.exit / os._exit end only the child. Its output is
  captured through a pipe and capped at `max_output_bytes` (the tail is kept).

Isolation levels, detected once (`Sandbox.isolation` reports what a worker verified):
1. root with `unshare` (this project's machines): everything above.
2. not root, with unprivileged user namespaces: the same namespaces through
   ``unshare --user --map-root-user``; the child keeps its uid (root of that namespace
   only) and drops every capability; files are protected by the read-only view alone, and
   RLIMIT_NPROC counts the real user's processes.
3. no usable `unshare`: rlimits, new session, process-group kill, scratch folder, clean
   environment and capped output still hold (and, as root, the drop to `nobody`); but the
   network is reachable, files the child's uid may write can be changed by absolute path,
   and a program that calls setsid() in a forked child can outlive the process-group kill
   until its own CPU limit. A warning is logged.
``isolate_network=False`` leaves out only the network namespace.

What it does NOT protect against:
- it is not a security boundary against kernel exploits, CPU side channels or a hostile
  local user; every program shares the kernel with the caller.
- reading: the child may read what `nobody` may read (world-readable files: the project's
  code, the data sets). Where some folder on the way to Python stays closed and no mount
  namespace can open it, the child keeps CAP_DAC_READ_SEARCH to import modules and may
  read any file (`Isolation.read_all` says so). With no network, its only channels out
  are its answer and its captured output.
- the compiler: the worker compiles the source before forking (this runs none of the
  program's code); a compiler crash on a pathological source kills that worker, which is
  restarted, and the program is marked `error`.
- memory outside RLIMIT_AS (page cache, tmpfs files, capped at `SCRATCH_MB`) and the
  machine's global process table (bounded only by RLIMIT_NPROC); there is no cgroup.
- programs of the same worker share the warmed-up interpreter state by fork (copy on
  write): a program cannot change another's, but hash seeds are the same.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import marshal
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fdd_core.config import SandboxConfig

log = logging.getLogger(__name__)

Status = Literal["ok", "error", "timeout", "memory", "no_answer", "bad_answer"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "no_answer", "bad_answer")

FILE_SIZE_MB = 16  # RLIMIT_FSIZE: the largest file a program may write
SCRATCH_MB = 64  # size of a worker's private tmpfs holding the scratch folders
MAX_OPEN_FILES = 64  # RLIMIT_NOFILE
MAX_PROCESSES = 64  # RLIMIT_NPROC (per uid, so shared by the programs running at once)
MAX_PROGRAM_CHARS = 1_000_000
WORKER_START_S = 60.0  # a worker that is not ready by then is a hard error
WORKER_GRACE_S = 10.0  # beyond the program's timeout, before a silent worker is killed
# Programs are sent several to a frame, and a worker always has the next ones queued, so
# it never waits for the caller (and the caller wakes up once per few programs, not once
# per program). Queues stay short so that a slow program delays few others behind it.
BATCH = 8  # programs per request frame, at most
BATCH_BYTES = 256 * 1024  # ... and this many bytes of source (at least one program)
QUEUED = 2 * BATCH  # programs in flight per worker, at most
NAP_S = 0.004  # longest the caller lets replies pile up while every worker has a queue

_WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
_WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    # Numerical libraries must not start thread pools in a process that forks.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class ExecutionResult:
    """What running one program gave: its answer as a float, or why there is none."""

    answer: float | None
    status: Status
    stderr: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Isolation:
    """Which protections are in force (reported by a running worker, not assumed)."""

    launcher: str  # "unshare (root)", "unshare (user namespace)", or "none"
    network_isolated: bool
    pid_namespace: bool
    readonly_fs: bool
    private_tmp: bool
    privilege: str  # "nobody", "caps" (root of a user namespace, no capabilities), "none"
    read_all: bool  # the child kept CAP_DAC_READ_SEARCH (may read any file)


def _error(message: str, duration_s: float = 0.0) -> ExecutionResult:
    return ExecutionResult(answer=None, status="error", stderr=message, duration_s=duration_s)


# --------------------------------------------------------------------------- launching workers


@functools.lru_cache(maxsize=4)
def _launcher(isolate_network: bool) -> tuple[tuple[str, ...], str, str]:
    """(argv prefix, launcher name, child privilege) for the best isolation that works here."""
    root = os.geteuid() == 0
    exe = shutil.which("unshare") if sys.platform.startswith("linux") else None
    net = ("--net",) if isolate_network else ()
    full = ("--pid", "--mount", "--fork", "--kill-child", "--mount-proc", *net)
    userns = ("--user", "--map-root-user")
    candidates = []
    if exe:
        if root:
            candidates.append(((exe, *full), "unshare (root)", "nobody"))
        candidates.append(((exe, *userns, *full), "unshare (user namespace)", "caps"))
        if net:  # no pid/mount namespace allowed, but maybe a network one
            if root:
                candidates.append(((exe, *net), "unshare --net (root)", "nobody"))
            candidates.append(((exe, *userns, *net), "unshare --net (user namespace)", "caps"))
    for prefix, name, privilege in candidates:
        try:
            probe = subprocess.run(
                [*prefix, "/bin/true"], capture_output=True, timeout=20, env=_WORKER_ENV
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix, name, privilege
    log.warning(
        "sandbox: no usable `unshare`; programs run with rlimits, a scratch folder and a "
        "clean environment, but with the network and without a pid or mount namespace"
    )
    return (), "none", "nobody" if root else "none"


def _ns_ids() -> dict[str, int]:
    ids = {}
    for kind in ("pid", "mnt", "net"):
        try:
            ids[kind] = os.stat(f"/proc/self/ns/{kind}").st_ino
        except OSError:
            ids[kind] = -1
    return ids


class _WorkerDied(Exception):
    """The worker process exited or stopped answering."""


class _Worker:
    """The caller's handle on one worker process; replies come in request order."""

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=_WORKER_ENV,
                cwd="/",
                close_fds=True,
                # Out of the caller's process group: a Ctrl-C meant for the caller does not
                # kill workers mid-program (they exit when their stdin closes).
                start_new_session=True,
                bufsize=0,
            )
        self._wfd = self.proc.stdin.fileno()
        self._rfd = self.proc.stdout.fileno()
        os.set_blocking(self._wfd, False)  # the caller's poll loop never blocks on a write
        self.ready: dict | None = None

    def wait_ready(self) -> dict:
        self.ready = self._recv(time.monotonic() + WORKER_START_S)
        if not isinstance(self.ready, dict) or not self.ready.get("ready"):
            raise _WorkerDied(f"unexpected first message from the worker: {self.ready!r}")
        return self.ready

    @staticmethod
    def frame(batch: list[tuple[int, str]]) -> bytes:
        body = marshal.dumps(batch)
        return len(body).to_bytes(4, "big") + body

    def _recv(self, deadline: float):
        size = int.from_bytes(self._read_exact(4, deadline), "big")
        try:
            return marshal.loads(self._read_exact(size, deadline))
        except (ValueError, EOFError, TypeError) as exc:
            raise _WorkerDied(f"unreadable reply from the worker: {exc}") from exc

    def _read_exact(self, size: int, deadline: float) -> bytes:
        chunks, left = [], size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self._rfd], [], [], wait)[0]:
                raise _WorkerDied("the worker stopped answering within the timeout (killed)")
            chunk = os.read(self._rfd, min(left, 1 << 20))
            if not chunk:
                raise _WorkerDied(self._death_note())
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _death_note(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        note = f"the sandbox worker died (exit code {code})"
        try:
            tail = self.log_path.read_bytes()[-1000:].decode("utf-8", "replace").strip()
        except OSError:
            tail = ""
        return note + (f": {tail}" if tail else "")

    def stop(self, grace_s: float = 2.0) -> None:
        """Close stdin (the worker exits), then SIGKILL whatever is still there."""
        _stop_process(self.proc, grace_s)


def _stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        # With --kill-child, unshare's death SIGKILLs the worker, and the death of a pid
        # namespace's init kills every process left in that namespace.
        proc.kill()
        proc.wait()


def _shutdown(workers: list, tmp_dir: str, owner_pid: int) -> None:
    """Finalizer: stop every worker and remove the host-side scratch folders."""
    if os.getpid() != owner_pid:  # a forked copy of the caller owns none of them
        return
    for i, worker in enumerate(workers):
        if worker is not None:
            worker.stop(grace_s=1.0)
            workers[i] = None
    shutil.rmtree(tmp_dir, ignore_errors=True)


# --------------------------------------------------------------------------- the pool


class Sandbox:
    """A pool of warm worker processes; `run_many` spreads programs over them.

    Reusable (workers start on first use and stay warm until `close`), usable as a context
    manager, and safe to call from several threads at once (but do not `close` it while
    another thread is running programs). Linux only: it relies on fork, /proc, pidfds,
    prctl and, where available, namespaces.
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg if cfg is not None else SandboxConfig()
        self.n_workers = self.cfg.max_workers or _cpu_count()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._workers: list[_Worker | None] = []
        self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._isolation: Isolation | None = None
        self._owner_pid = -1
        self._tmp_dir = ""
        self._finalizer = None

    # -- public API

    def __enter__(self) -> Sandbox:
        self._ensure_started()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def isolation(self) -> Isolation:
        self._ensure_started()
        return self._isolation

    def run(self, program: str) -> ExecutionResult:
        """Run one program; a bad program gives a result with a non-ok status, never raises."""
        return self.run_many([program])[0]

    def run_many(self, programs: Sequence[str]) -> list[ExecutionResult]:
        """Run programs in parallel (one at a time per worker); results in input order."""
        programs = list(programs)
        if not programs:
            return []
        results: list[ExecutionResult | None] = [None] * len(programs)
        self._ensure_started()
        # One thread drives every worker it holds: wait for one free worker, take any other
        # free one (another thread's run_many may hold the rest).
        slots = [self._slots.get()]
        while len(slots) < min(self.n_workers, len(programs)):
            try:
                slots.append(self._slots.get_nowait())
            except queue.Empty:
                break
        try:
            _Run(self, programs, results).drive(slots)
        finally:
            for slot in slots:
                self._slots.put(slot)
        # A gap would mean a bug in the driving loop.
        missing = _error("sandbox internal error: no result")
        return [r if r is not None else missing for r in results]

    def close(self) -> None:
        """Stop the workers. The sandbox starts fresh ones if it is used again."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._workers = []
            self._slots = queue.SimpleQueue()
            self._owner_pid = -1

    # -- internals

    def _ensure_started(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            # First use, or we are a forked copy of the process that started the workers:
            # theirs are not ours to use (or to stop), start our own.
            self._tmp_dir = tempfile.mkdtemp(prefix="fdd-sandbox-")
            os.chmod(self._tmp_dir, 0o711)  # `nobody` must reach its scratch folder below
            self._workers = [None] * self.n_workers
            self._slots = queue.SimpleQueue()
            workers = [self._spawn(i) for i in range(self.n_workers)]
            try:
                for i, worker in enumerate(workers):
                    self._adopt(i, worker)
            except Exception:
                for worker in workers:
                    worker.stop(grace_s=0.5)
                shutil.rmtree(self._tmp_dir, ignore_errors=True)
                raise
            for i in range(self.n_workers):
                self._slots.put(i)
            self._finalizer = weakref.finalize(
                self, _shutdown, self._workers, self._tmp_dir, os.getpid()
            )
            self._owner_pid = os.getpid()

    def _spawn(self, index: int) -> _Worker:
        prefix, _name, privilege = _launcher(self.cfg.isolate_network)
        scratch = Path(self._tmp_dir) / f"worker-{index}"
        scratch.mkdir(mode=0o711, exist_ok=True)
        worker_cfg = {
            "timeout_s": self.cfg.timeout_s,
            "cpu_s": self.cfg.cpu_s,
            "memory_mb": self.cfg.memory_mb,
            "max_output_bytes": self.cfg.max_output_bytes,
            "file_mb": FILE_SIZE_MB,
            "scratch_mb": SCRATCH_MB,
            "max_open_files": MAX_OPEN_FILES,
            "max_processes": MAX_PROCESSES,
            "scratch_root": str(scratch),
            "privilege": privilege,
            "parent_ns": _ns_ids(),
            "env": {k: v for k, v in _WORKER_ENV.items() if k != "PYTHONDONTWRITEBYTECODE"},
        }
        config = marshal.dumps(worker_cfg).hex()
        argv = [*prefix, sys.executable, "-I", "-B", str(_WORKER_SCRIPT), config]
        return _Worker(argv, Path(self._tmp_dir) / f"worker-{index}.log")

    def _adopt(self, index: int, worker: _Worker) -> None:
        try:
            ready = worker.wait_ready()
        except _WorkerDied as exc:
            worker.stop(grace_s=0.5)
            raise RuntimeError(f"sandbox worker {index} failed to start: {exc}") from exc
        self._workers[index] = worker
        if self._isolation is None:
            _prefix, name, _privilege = _launcher(self.cfg.isolate_network)
            iso = ready["isolation"]
            self._isolation = Isolation(
                launcher=name,
                network_isolated=bool(iso["network_isolated"]),
                pid_namespace=bool(iso["pid_namespace"]),
                readonly_fs=bool(iso["readonly_fs"]),
                private_tmp=bool(iso["private_tmp"]),
                privilege=str(iso["privilege"]),
                read_all=bool(iso["read_all"]),
            )
            log.debug("sandbox isolation: %s", self._isolation)

    def _restart(self, slot: int) -> _Worker:
        """A fresh worker for the slot (raises when none starts)."""
        worker = self._spawn(slot)
        self._adopt(slot, worker)
        return worker

    def _retire(self, slot: int, worker: _Worker) -> None:
        worker.stop(grace_s=0.2)
        self._workers[slot] = None


class _Lane:
    """One worker as one `run_many` drives it: what was sent, what is still to write."""

    def __init__(self, slot: int, worker: _Worker):
        self.slot = slot
        self.worker = worker
        # (index, request id, program, byte count at which its frame is fully written)
        self.pending: collections.deque[tuple[int, int, str, int]] = collections.deque()
        self.out = bytearray()  # frames not written yet (the pipe was full)
        self.queued = 0  # bytes of frames so far
        self.sent = 0  # ... of which written
        self.inbuf = bytearray()
        self.deadline = 0.0


class _Run:
    """One `run_many` call: feeds its workers from one thread with a poll loop.

    Writes never block (the request pipes are non-blocking) and replies are read whenever
    they come, so neither side can wait on the other with both pipes full. A worker that
    dies or goes silent gets its program marked `error`; the ones queued behind it (never
    started) go back to the front of the queue, and the slot gets a fresh worker.
    """

    def __init__(self, sandbox: Sandbox, programs: list, results: list):
        self.sb = sandbox
        self.programs = programs
        self.results = results
        self.next = 0  # index of the next program not taken yet
        self.backlog: collections.deque[tuple[int, str]] = collections.deque()  # to resend
        self.patience = sandbox.cfg.timeout_s + WORKER_GRACE_S
        self._gone = "sandbox worker could not be (re)started"
        self.typical_s = 0.0  # running mean of a program's duration

    def _left(self) -> int:
        return len(self.programs) - self.next + len(self.backlog)

    def _take(self, count: int) -> list[tuple[int, str]]:
        """Up to `count` programs to send (at least one if any is left), bytes bounded;
        malformed ones are answered on the spot."""
        jobs: list[tuple[int, str]] = []
        size = 0
        while len(jobs) < count and size < BATCH_BYTES:
            if self.backlog:
                job = self.backlog.popleft()
            elif self.next < len(self.programs):
                i = self.next
                self.next += 1
                problem = _check_program(self.programs[i])
                if problem is not None:
                    self.results[i] = problem
                    continue
                job = (i, self.programs[i])
            else:
                break
            if jobs and size + len(job[1]) > BATCH_BYTES:
                self.backlog.appendleft(job)
                break
            jobs.append(job)
            size += len(job[1])
        return jobs

    def drive(self, slots: list[int]) -> None:
        lanes: list[_Lane] = []
        try:
            self._drive(slots, lanes)
        except BaseException:
            # Interrupted (say Ctrl-C): a worker with programs still queued would answer
            # them to the next run_many; stop it, its slot gets a fresh one when next used.
            for lane in lanes:
                if lane.pending or lane.out:
                    self.sb._retire(lane.slot, lane.worker)
            raise

    def _drive(self, slots: list[int], lanes: list[_Lane]) -> None:
        for slot in slots:
            lane = self._lane(slot, self.sb._workers[slot])
            if lane is not None:
                lanes.append(lane)
        if not lanes:
            self._fail_rest(self._gone)
            return
        poller = select.poll()
        while True:
            for lane in lanes:
                if len(lane.pending) <= QUEUED - BATCH:
                    self._send(lane, len(lanes))
            busy = [lane for lane in lanes if lane.pending]
            if not busy:
                return
            by_fd = {}
            for lane in busy:
                w = lane.worker
                poller.register(w._rfd, select.POLLIN)
                by_fd[w._rfd] = lane
                if lane.out:
                    poller.register(w._wfd, select.POLLOUT)
                    by_fd[w._wfd] = lane
            wait = min(lane.deadline for lane in busy) - time.monotonic()
            events = poller.poll(max(wait, 0.0) * 1000) if wait > 0 else []
            for fd in by_fd:
                poller.unregister(fd)
            dead: dict[int, str] = {}
            for fd, _ in events:
                lane = by_fd[fd]
                if lane.slot in dead:
                    continue
                try:
                    if fd == lane.worker._wfd:
                        self._write(lane)
                    else:
                        self._read(lane)
                except _WorkerDied as exc:
                    dead[lane.slot] = str(exc)
            now = time.monotonic()
            for lane in busy:
                if lane.slot not in dead and lane.pending and now >= lane.deadline:
                    dead[lane.slot] = "the worker stopped answering within the timeout (killed)"
            for lane in [lane for lane in lanes if lane.slot in dead]:
                lanes.remove(lane)
                replaced = self._fail(lane, dead[lane.slot])
                if replaced is not None:
                    lanes.append(replaced)
            if not lanes:  # no worker could be (re)started: every remaining program fails
                self._fail_rest(self._gone)
                return
            if all(len(lane.pending) >= BATCH and not lane.out for lane in lanes):
                # Every worker has programs queued for a while: let replies pile up, and
                # read them a few at a time, instead of waking up for each one.
                time.sleep(min(NAP_S, 2 * self.typical_s))

    def _lane(self, slot: int, worker: _Worker | None) -> _Lane | None:
        if worker is None:
            try:
                worker = self.sb._restart(slot)
            except Exception as exc:
                self._gone = f"sandbox worker could not be (re)started: {exc}"
                return None
        return _Lane(slot, worker)

    def _send(self, lane: _Lane, n_lanes: int) -> None:
        # Smaller batches near the end keep every worker busy until the last program.
        share = -(-self._left() // (2 * n_lanes))
        jobs = self._take(max(1, min(BATCH, share)))
        if not jobs:
            return
        batch = [(next(self.sb._ids), code) for _, code in jobs]
        frame = _Worker.frame(batch)
        if not lane.pending:
            lane.deadline = time.monotonic() + self.patience
        lane.queued += len(frame)
        lane.out += frame
        for (index, code), (req_id, _) in zip(jobs, batch, strict=True):
            lane.pending.append((index, req_id, code, lane.queued))
        try:
            self._write(lane)
        except _WorkerDied:
            pass  # noticed (and handled) when its reply pipe reports the death

    def _write(self, lane: _Lane) -> None:
        try:
            written = os.write(lane.worker._wfd, lane.out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise _WorkerDied(f"could not send the program to the worker: {exc}") from exc
        del lane.out[:written]
        lane.sent += written

    def _read(self, lane: _Lane) -> None:
        try:
            data = os.read(lane.worker._rfd, 65536)  # below malloc's mmap threshold
        except OSError as exc:
            raise _WorkerDied(f"could not read from the worker: {exc}") from exc
        if not data:
            raise _WorkerDied(lane.worker._death_note())
        buf = lane.inbuf
        buf += data
        start = 0
        try:
            while len(buf) - start >= 4:
                end = start + 4 + int.from_bytes(buf[start : start + 4], "big")
                if len(buf) < end:
                    break
                reply = marshal.loads(buf[start + 4 : end])
                start = end
                if not lane.pending:
                    raise _WorkerDied("the worker sent a reply nobody asked for")
                head = lane.pending.popleft()
                index, req_id = head[0], head[1]
                if not isinstance(reply, tuple) or len(reply) != 5 or reply[0] != req_id:
                    lane.pending.appendleft(head)
                    raise _WorkerDied(f"worker answered {reply!r:.100}, expected request {req_id}")
                self.results[index] = result = _to_result(reply)
                self.typical_s += (result.duration_s - self.typical_s) / 8
                lane.deadline = time.monotonic() + self.patience
        except (ValueError, EOFError, TypeError) as exc:
            raise _WorkerDied(f"unreadable reply from the worker: {exc}") from exc
        finally:
            del buf[:start]

    def _fail(self, lane: _Lane, message: str) -> _Lane | None:
        """The lane's worker is gone: judge its running program, requeue the rest, and
        return a lane with a fresh worker (None if none starts)."""
        if lane.pending:
            index, _, _, end = lane.pending.popleft()
            if end and end <= lane.sent:  # the worker had it: it may have been running
                self.results[index] = _error(f"{message}; the program was not judged")
            else:
                lane.pending.appendleft((index, 0, self.programs[index], 0))
        self.backlog.extendleft(reversed([(i, self.programs[i]) for i, *_ in lane.pending]))
        self.sb._retire(lane.slot, lane.worker)
        return self._lane(lane.slot, None)

    def _fail_rest(self, message: str) -> None:
        while True:
            jobs = self._take(BATCH)
            if not jobs:
                return
            for index, _ in jobs:
                self.results[index] = _error(message)


def _check_program(program) -> ExecutionResult | None:
    if not isinstance(program, str):
        return _error(f"a program must be a str, got {type(program).__name__}")
    if len(program) > MAX_PROGRAM_CHARS:
        return _error(f"program of {len(program)} characters exceeds {MAX_PROGRAM_CHARS}")
    return None


def _to_result(reply: tuple) -> ExecutionResult:
    _, status, answer, stderr, duration = reply
    if status not in STATUSES:
        return _error(f"sandbox worker sent an unknown status {status!r}")
    if status != "ok":
        answer = None
    elif not isinstance(answer, (int, float)):
        return _error(f"sandbox worker sent answer {answer!r} with status ok")
    return ExecutionResult(
        answer=float(answer) if answer is not None else None,
        status=status,
        stderr=str(stderr),
        duration_s=float(duration),
    )


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_programs(
    programs: Sequence[str], cfg: SandboxConfig | None = None
) -> list[ExecutionResult]:
    """Run programs in a sandbox started for the call (and stopped after it)."""
    with Sandbox(cfg) as sandbox:
        return sandbox.run_many(programs)
