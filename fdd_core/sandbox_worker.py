"""The sandbox's worker process (a "zygote"): warmed up once, it forks one child per program.

`fdd_core.sandbox.Sandbox` starts it as ``python -I -B sandbox_worker.py CONFIG_JSON``, when
it can inside ``unshare --pid --mount --net --fork --kill-child --mount-proc``. It imports
only the standard library and runs as a plain script (``-I``: no user site, no PYTHON*
variables, no current folder on sys.path). Read fdd_core/sandbox.py for what the sandbox
protects against and what it does not; this file is the mechanism.

Protocol (fd 0 requests, fd 1 replies): frames of a 4-byte big-endian length and a
`marshal`led value (both ends are this project's code; nothing a program writes is ever
unmarshalled). The configuration comes as hex of a marshalled dict in argv[1]. The worker
first sends ``{"ready": True, "isolation": {...}}``; a request is a list of
``(id, code)`` pairs (several programs per frame: one read, one decode for the lot), run one
after another, each answered as soon as it ends with ``(id, status, answer, stderr,
duration_s)``. EOF on fd 0 ends it.

One program: the worker compiles it (no code of the program runs there), makes a fresh
scratch folder and two pipes (output, verdict), and forks. The child (`_child`) starts a
new session, points fds 0/1/2/3 at /dev/null, the output pipe and the verdict pipe and
closes every other fd, sets rlimits, enters the scratch folder, drops privileges, runs the
code in fresh globals and writes its verdict to fd 3 as three lines of text: status,
repr(answer), message (checked by the worker: the child is untrusted). The worker waits on
a pidfd until the wall-clock deadline, kills whatever is left (the whole pid namespace but
itself when it is that namespace's init, else the child's process group), reaps, and
removes the scratch folder. As namespace init it can tell for free whether anything is
left: every process the program started that outlived it has become the worker's own
child, so "no child left to wait for" after reaping the program means nothing is left,
and the kill (a scan of every process on the machine) is only needed when something is.
Each worker runs one program at a time: that is what makes "kill everything else in my
namespace" a correct cleanup.

Speed: a child costs about as much as the pages it touches (each first write to a page
shared with the worker is a copy-on-write fault, a few microseconds). So everything a child
needs is prepared once in the worker (`ChildPlan`: limits, ctypes calls, the environment),
the program is compiled before the fork (compiling in the child cost ~200 faults), and the
child does little more than system calls and the program itself: ~210 minor faults for a
short program, ~110 of them the fork and exit of any process with this worker's imports.
The worker pays too: a fork copies the page table of its ~8 MB of anonymous memory and
write-protects it, so each page it writes afterwards faults again (~160 per program).
python -m bench.profile_sandbox shows where the CPU goes.
"""

from __future__ import annotations

import builtins
import ctypes
import decimal
import linecache
import marshal
import math
import mmap
import numbers
import os
import resource
import select
import signal
import stat
import sys
import time
import traceback

# Modules a Program-of-Thought rationale typically imports: importing them here once makes
# `import math` in a child free (the child is a fork of this process). Every module kept
# here makes each fork a little dearer (more pages to map), so the list stays short.
PRELOAD = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "numbers",
    "itertools",
    "functools",
    "collections",
    "operator",
    "re",
    "string",
    "datetime",
    "random",
    "heapq",
    "bisect",
    "copy",
    "reprlib",
)

STATUSES = ("ok", "error", "timeout", "memory", "no_answer", "bad_answer")
MAX_FRAME = 64 * 1024 * 1024  # a request or reply larger than this is a protocol error
MAX_VERDICT = 64 * 1024  # bytes of verdict read from a child; more is dropped
NOBODY = 65534
CHILD_SETUP_FAILED = 70  # exit code of a child that died before running the program

# Linux constants (not exposed by the os module)
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_MOUNT_SETATTR = 442  # same number on x86-64 and arm64 (generic syscall table)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 0x1, 0x2, 0x4, 0x1000, 0x4000


# --------------------------------------------------------------------------- framing


def read_frame(fd: int):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _read_exact(fd, size)
    return None if body is None else marshal.loads(body)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, obj) -> None:
    body = marshal.dumps(obj)
    _write_all(fd, len(body).to_bytes(4, "big") + body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------- isolation setup


class _Libc:
    """The few libc calls the os module lacks, resolved once (children reuse them)."""

    def __init__(self):
        lib = ctypes.CDLL(None, use_errno=True)
        self.prctl = lib.prctl
        self.prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]
        self.capset = lib.capset
        self.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.mount = lib.mount
        self.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self.syscall = lib.syscall

    def call(self, func, *args) -> None:
        if func(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{func.__name__}: {os.strerror(err)}")


LIBC = _Libc()


def _ns_id(kind: str) -> int:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return -1


def _mount_setattr_readonly(path: str) -> bool:
    """Make every mount under `path` read-only and nosuid, in this mount namespace only."""
    attr = (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID).to_bytes(8, sys.byteorder) + bytes(24)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rc = LIBC.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        path.encode(),
        ctypes.c_uint(AT_RECURSIVE),
        buf,
        ctypes.c_size_t(len(attr)),
    )
    return rc == 0


def _mount_tmpfs(target: str, options: str, flags: int = MS_NOSUID | MS_NODEV) -> bool:
    return LIBC.mount(b"tmpfs", target.encode(), b"tmpfs", flags, options.encode()) == 0


def _interfaces() -> set[str]:
    """Network interfaces of this process's network namespace."""
    try:
        with open("/proc/self/net/dev") as f:
            return {line.split(":")[0].strip() for line in f.readlines()[2:] if ":" in line}
    except OSError:
        return {"unknown"}


def _first_closed_dir(path: str) -> tuple[str, str] | None:
    """(closed folder, next entry under it) for the first folder on the way to `path` that
    others may not traverse (mode without o+x), or None when the whole way is open."""
    parts = os.path.realpath(path).split(os.sep)
    for i in range(1, len(parts)):
        folder = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return None  # a missing sys.path entry cannot block an import
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return folder, parts[i]
    return None


def _expose_python(paths: list[str]) -> bool:
    """Make `paths` reachable for `nobody` in this mount namespace, hiding everything else
    in the closed folders on the way (say /root, to reach /root/.pyenv): each closed folder
    is covered by an empty tmpfs (mode 0755) into which only the needed entries are
    bind-mounted back, from O_PATH descriptors opened before the cover went on."""
    for _ in range(16):  # one closed level per round (/root, then maybe /root/.pyenv/x)
        needed: dict[str, set[str]] = {}
        for path in paths:
            closed = _first_closed_dir(path)
            if closed:
                needed.setdefault(closed[0], set()).add(closed[1])
        if not needed:
            return True
        for folder, entries in needed.items():
            fds = {name: os.open(os.path.join(folder, name), os.O_PATH) for name in entries}
            try:
                if not _mount_tmpfs(folder, "size=64k,nr_inodes=64,mode=0755"):
                    return False
                for name, fd in fds.items():
                    target = os.path.join(folder, name)
                    os.mkdir(target, 0o755)
                    src = f"/proc/self/fd/{fd}".encode()
                    if LIBC.mount(src, target.encode(), None, MS_BIND | MS_REC, None) != 0:
                        return False
            finally:
                for fd in fds.values():
                    os.close(fd)
    return False


def setup_isolation(cfg: dict) -> dict:
    """Finish the namespace set-up (only when really inside new namespaces) and report it."""
    parent = cfg["parent_ns"]
    info = {
        "pid_namespace": os.getpid() == 1 and _ns_id("pid") != parent["pid"],
        "mount_namespace": _ns_id("mnt") not in (parent["mnt"], -1),
        "network_isolated": _ns_id("net") not in (parent["net"], -1) and _interfaces() <= {"lo"},
        "readonly_fs": False,
        "private_tmp": False,
        "privilege": cfg["privilege"],
        "read_all": False,
    }
    python_paths = [p for p in [sys.prefix, sys.base_prefix, *sys.path] if p]
    # Mount changes are made only inside a mount namespace of our own: done in the host
    # namespace, a recursive read-only would freeze the whole machine, and a tmpfs on /tmp
    # would hide every other process's files. The namespace ids come from the caller, so
    # also insist on being pid 1 of a new pid namespace (every launcher that unshares the
    # mount namespace unshares the pid namespace too): a wrong id passed by hand mounts
    # nothing.
    if info["mount_namespace"] and info["pid_namespace"]:
        if cfg["privilege"] == "nobody":
            _expose_python(python_paths)
        info["readonly_fs"] = _mount_setattr_readonly("/")
        # A private tmpfs on /tmp holds the scratch folder and hides the host's /tmp;
        # mode 0555: only the worker (root in its namespace) creates folders there.
        # A Python (say a virtual environment) that lives under /tmp would vanish under the
        # new tmpfs: keep descriptors to it, then bind it back, read-only, at the same path.
        keep: list[str] = []
        for path in sorted({os.path.realpath(p) for p in python_paths if os.path.isdir(p)}):
            if path.startswith("/tmp/") and not any(path.startswith(k + "/") for k in keep):
                keep.append(path)
        fds = {path: os.open(path, os.O_PATH) for path in keep}
        try:
            if _mount_tmpfs("/tmp", f"size={cfg['scratch_mb']}m,nr_inodes=4096,mode=0555"):
                info["private_tmp"] = True
                for path, fd in fds.items():
                    os.makedirs(path, 0o755, exist_ok=True)
                    src = f"/proc/self/fd/{fd}".encode()
                    if LIBC.mount(src, path.encode(), None, MS_BIND | MS_REC, None) == 0:
                        _mount_setattr_readonly(path)
        finally:
            for fd in fds.values():
                os.close(fd)
        # /run holds Unix sockets (D-Bus, databases) that a namespace does not cut off.
        if os.path.isdir("/run"):
            _mount_tmpfs("/run", "size=16k,mode=0555", MS_NOSUID | MS_NODEV | MS_RDONLY)
    if cfg["privilege"] == "nobody":
        # Dropped to `nobody`, the child still has to import modules from this Python. When
        # some folder on the way is still closed to others (no mount namespace to open it
        # in), keep only CAP_DAC_READ_SEARCH: read and list anything, write nothing.
        info["read_all"] = any(_first_closed_dir(p) for p in python_paths)
    return info


class ChildPlan:
    """Everything a child needs, computed once in the worker so that children stay cheap."""

    def __init__(self, cfg: dict, isolation: dict):
        self.privilege = cfg["privilege"]
        self.read_all = isolation["read_all"]
        # In a pid namespace the children die with the worker anyway.
        self.pdeathsig = not isolation["pid_namespace"]
        # In a private tmpfs only this worker's child can see the scratch folder, one at a
        # time: a fixed path lets HOME and TMPDIR be set once, here, for every child.
        self.fixed_scratch = "/tmp/scratch" if isolation["private_tmp"] else None
        self.scratch_root = cfg["scratch_root"]
        self.no_new_privs = not isolation["readonly_fs"]
        self.devnull = os.open(os.devnull, os.O_RDWR)
        # Limits that bind the worker no more than it needs are set on it, once: every
        # child inherits them. RLIMIT_CPU (CPU time adds up over a process's life) and
        # RLIMIT_AS stay the child's own, and so does RLIMIT_NPROC unless the worker is
        # the real root (which it ignores; a namespace's root would be held to it).
        inherited = {resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_CORE}
        if self.privilege == "nobody" and os.geteuid() == 0:
            inherited.add(resource.RLIMIT_NPROC)
        self.limits = []
        for which, limit in _clamped_limits(cfg):
            if which in inherited:
                resource.setrlimit(which, limit)
            else:
                self.limits.append((which, limit))
        # The worker's own fd 0 is /dev/null already (see main): children keep it.
        self.stdin_ok = os.path.samestat(os.fstat(0), os.fstat(self.devnull))
        low = (1 << CAP_DAC_READ_SEARCH) if self.read_all else 0
        header = LINUX_CAPABILITY_VERSION_3.to_bytes(4, sys.byteorder) + bytes(4)  # version, pid 0
        self.cap_header = ctypes.create_string_buffer(header, 8)
        # effective and permitted sets; inheritable and the upper 32 capabilities empty
        data = 2 * low.to_bytes(4, sys.byteorder) + bytes(16)
        self.cap_data = ctypes.create_string_buffer(data, 24)
        os.environ.clear()
        os.environ.update(cfg["env"])
        if self.fixed_scratch:
            os.environ.update(HOME=self.fixed_scratch, TMPDIR=self.fixed_scratch)

    def new_scratch(self) -> str:
        path = self.fixed_scratch or os.path.join(self.scratch_root, "p-" + os.urandom(6).hex())
        os.mkdir(path, 0o700)
        if self.privilege == "nobody":
            os.chown(path, NOBODY, NOBODY)
        return path

    def drop_privileges(self) -> None:
        if self.no_new_privs:  # no setuid binary may lift us (nosuid mounts do the same)
            LIBC.call(LIBC.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if self.privilege == "nobody":
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            if self.read_all:
                LIBC.call(LIBC.prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            if self.read_all:
                LIBC.call(LIBC.capset, self.cap_header, self.cap_data)
        elif self.privilege == "caps":  # root of a user namespace: keep the uid, no capability
            LIBC.call(LIBC.capset, self.cap_header, self.cap_data)


def _clamped_limits(cfg: dict) -> list[tuple[int, tuple[int, int]]]:
    mb = 1024 * 1024
    cpu = int(cfg["cpu_s"])
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL a second later
        (resource.RLIMIT_FSIZE, cfg["file_mb"] * mb, cfg["file_mb"] * mb),
        (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
    ]
    limits = []
    for which, soft, hard in wanted:
        old_hard = resource.getrlimit(which)[1]
        if old_hard != resource.RLIM_INFINITY:  # never ask for more than we have
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        limits.append((which, (soft, hard)))
    return limits


# --------------------------------------------------------------------------- child side


def _child(program, source, scratch: str, out_w: int, verdict_w: int, plan: ChildPlan) -> None:
    """Runs in the forked child; never returns (the caller `os._exit`s on any escape)."""
    os.setsid()  # own session and process group: the group is what a timeout kills
    if plan.pdeathsig:  # without a pid namespace: die with the worker, whatever kills it
        LIBC.call(LIBC.prctl, PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if not plan.stdin_ok:
        os.dup2(plan.devnull, 0)
    os.dup2(out_w, 1)  # sys.stdout/sys.stderr already wrap fds 1 and 2 (empty buffers)
    os.dup2(out_w, 2)
    os.dup2(verdict_w, 3)
    os.closerange(4, 0x7FFFFFFF)  # the protocol pipes above all: no forged replies
    for which, limit in plan.limits:
        resource.setrlimit(which, limit)
    os.chdir(scratch)
    plan.drop_privileges()
    if not plan.fixed_scratch:
        os.environ.update(HOME=scratch, TMPDIR=scratch)
    # `random` reseeds itself from the OS in every forked child (os.register_at_fork), so
    # each program gets a fresh seed, as a fresh interpreter would, at no cost here.
    me = os.getpid()
    status, answer, detail = execute(program, source)
    if os.getpid() != me:  # a copy the program forked: only the program's own verdict counts
        os._exit(0)
    if status != "ok":  # output is reported only for failures: flushing costs page copies
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
    _write_all(3, f"{status}\n{answer!r}\n{detail}".encode("utf-8", "backslashreplace"))
    os._exit(0)


def execute(program, source: str = "") -> tuple[str, float | None, str]:
    """Run a compiled program in fresh globals and judge its `ans`: (status, answer, message)."""
    # Address space given back on MemoryError so there is room to report it. An anonymous
    # mmap touches no page (bytearray(n) would zero-fill 256 of them).
    reserve = mmap.mmap(-1, 1 << 20)
    scope: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(program, scope)
    except MemoryError:
        reserve.close()
        scope.clear()
        return "memory", None, "MemoryError: the program ran out of memory"
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return "error", None, f"the program called sys.exit({_short_repr(exc.code)})"
    except BaseException as exc:
        _quotable(source)
        return "error", None, _format_error(exc)
    if "ans" not in scope:
        return "no_answer", None, "the program did not set a variable `ans`"
    try:
        return judge_answer(scope["ans"])
    except MemoryError:
        reserve.close()
        scope.clear()
        return "memory", None, "MemoryError while reading `ans`"
    except BaseException as exc:
        _quotable(source)
        return "bad_answer", None, f"`ans` could not be read: {_format_error(exc)}"


def compile_program(code: str):
    """Compile in the worker, before the fork: compiling runs none of the program's code (a
    str source needs no codec), and a child that only executes touches far fewer pages."""
    return compile(code, "<program>", "exec", dont_inherit=True)


def _quotable(source: str) -> None:
    """Put the source in linecache so that a traceback can quote it (only on failure, in
    the child: the worker then allocates nothing for it)."""
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")


def judge_answer(value) -> tuple[str, float | None, str]:
    """A finite real number becomes a float; anything else is a `bad_answer` naming it."""
    kind = type(value)
    if kind is int or kind is float:  # the common case, without the ABC machinery
        try:
            number = float(value)
        except OverflowError as exc:
            return "bad_answer", None, f"`ans` ({kind.__name__}) is not a float: {exc}"
        if math.isfinite(number):
            return "ok", number, ""
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    if isinstance(value, bool) or name in ("numpy.bool_", "numpy.bool"):
        return "bad_answer", None, f"`ans` is a bool ({value!r}), expected a number"
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError) as exc:
            return "bad_answer", None, f"`ans` ({name}) is not a float: {exc}"
        if not math.isfinite(number):
            return "bad_answer", None, f"`ans` is not finite ({number!r}, {name})"
        return "ok", number, ""
    return "bad_answer", None, f"`ans` is a {name} ({_short_repr(value)}), expected a number"


def _short_repr(value) -> str:
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict = 40, 40, 6, 4
    try:
        return short.repr(value)
    except BaseException:
        return "unprintable"


def _format_error(exc: BaseException) -> str:
    """The last lines of the traceback, program frames only (no sandbox internals)."""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<program>"]
        lines = traceback.format_list(frames[-4:])
        lines += traceback.format_exception_only(type(exc), exc)
        return "".join(lines).rstrip()[-4000:]
    except BaseException:
        return f"{type(exc).__name__} (unprintable)"


# --------------------------------------------------------------------------- worker side


class Worker:
    """Forks, supervises and cleans up after one program at a time."""

    def __init__(self, cfg: dict, isolation: dict):
        self.cfg = cfg
        self.plan = ChildPlan(cfg, isolation)
        # Only the init of a pid namespace of our own may signal "everyone but me"
        # (kill(-1)); anywhere else that would kill every process of this user.
        self.ns_init = bool(isolation["pid_namespace"]) and os.getpid() == 1
        self.cap = int(cfg["max_output_bytes"])
        self.timeout_s = float(cfg["timeout_s"])
        self.strays = False  # set if some process could not be killed (never seen)

    def run(self, code: str) -> tuple[str, float | None, str, float]:
        """(status, answer, stderr, duration_s) of one program."""
        start = time.monotonic()
        try:
            program = compile_program(code)
        except Exception as exc:  # SyntaxError, ValueError (NUL byte), RecursionError, ...
            return "error", None, _format_error(exc)[: self.cap], time.monotonic() - start
        scratch = self.plan.new_scratch()
        out_r, out_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into the worker's loop
            try:
                _child(program, code, scratch, out_w, verdict_w, self.plan)
            finally:
                os._exit(CHILD_SETUP_FAILED)
        os.close(out_w)
        os.close(verdict_w)
        try:
            exited = False
            try:
                exited, output, verdict, left = self._supervise(pid, out_r, verdict_r, start)
                duration = time.monotonic() - start
            finally:  # whatever happened, nothing the program started outlives it
                status, rusage = self._end(pid, exited)
            # Every writer is dead now: these reads end at EOF (or the limit), never block.
            if out_r in left:
                output += self._drain(out_r, 2 * self.cap)
            if verdict_r in left:
                verdict += self._drain(verdict_r, MAX_VERDICT - len(verdict))
        finally:
            os.close(out_r)
            os.close(verdict_r)
            _remove_tree(scratch)
        return self._reply(exited, status, rusage, bytes(output), bytes(verdict), duration)

    def _supervise(self, pid: int, out_r: int, verdict_r: int, start: float):
        """Collect output and verdict until the child exits or the deadline passes:
        (exited, output, verdict, the pipes not read to EOF yet)."""
        deadline = start + self.timeout_s
        output, verdict = bytearray(), bytearray()
        left = {out_r, verdict_r}
        pidfd = _pidfd_open(pid)
        poller = select.poll()
        for fd in (out_r, verdict_r) if pidfd is None else (out_r, verdict_r, pidfd):
            poller.register(fd, select.POLLIN)
        exited = False
        try:
            while not exited:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return False, output, verdict, left
                # Without a pidfd (Linux < 5.3) poll in short slices and ask waitid.
                wait_ms = wait * 1000 if pidfd is not None else min(wait * 1000, 2.0)
                for fd, _ in poller.poll(max(wait_ms, 0.001)):
                    if fd == pidfd:
                        exited = True  # the pipes' last bytes are read by the caller
                        continue
                    data = os.read(fd, 65536)  # poll said readable: data, or b"" at EOF
                    if not data:
                        poller.unregister(fd)
                        left.discard(fd)
                    elif fd == out_r:
                        output += data
                        if len(output) > 2 * self.cap:  # keep the tail, bounded
                            del output[: len(output) - self.cap]
                    elif len(verdict) < MAX_VERDICT:
                        verdict += data
                if pidfd is None and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    exited = True
            return True, output, verdict, left
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _end(self, pid: int, exited: bool):
        """Reap the program's process and make sure nothing it started is left."""
        if not self.ns_init:
            self._kill_rest(pid)  # the group id stays ours until pid is reaped
            _, status, rusage = os.wait4(pid, 0)
            self._reap_all(pid)
            return status, rusage
        if not exited:
            self._kill_rest(pid)
        _, status, rusage = os.wait4(pid, 0)
        # Whatever the program started and left behind was reparented to us (the
        # namespace's init) when its process died: no child of ours, nothing left.
        self._reap_all(pid, kill_first=False)
        return status, rusage

    def _kill_rest(self, pid: int) -> None:
        """SIGKILL the program's process group (or the whole namespace but us)."""
        try:
            if self.ns_init:
                os.kill(-1, signal.SIGKILL)
            else:
                os.killpg(pid, signal.SIGKILL)  # pid not reaped yet: the group id is ours
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_all(self, pid: int, kill_first: bool = True) -> None:
        """Reap every remaining child; as namespace init that is every leftover process.
        With `kill_first` False, kill only if some child is still alive."""
        if not kill_first:
            try:
                while True:
                    reaped, _ = os.waitpid(-1, os.WNOHANG)
                    if reaped == 0:
                        break  # some child is still running: kill and reap below
            except ChildProcessError:
                return  # no child at all: nothing the program started is left
            self._kill_rest(pid)
        give_up = time.monotonic() + 5.0
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] != 0:
                    pass
            except ChildProcessError:
                return
            if time.monotonic() > give_up:
                self.strays = True  # from now on, never trust a pipe to reach EOF
                return
            self._kill_rest(pid)  # a process forked mid-kill is caught on the next round
            time.sleep(0.001)

    def _drain(self, fd: int, limit: int) -> bytes:
        """What is left in a pipe whose writers are dead (or stray: never block)."""
        if self.strays or not self.ns_init:  # a stray may still hold the pipe open
            os.set_blocking(fd, False)
        chunks, size = [], 0
        while size < limit:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks)

    def _reply(self, exited, status, rusage, output: bytes, verdict: bytes, duration) -> dict:
        output = output[-self.cap :]
        parsed = _parse_verdict(verdict) if exited else None
        if parsed is not None:
            state, answer, detail = parsed
        else:
            answer = None
            state, detail = _status_from_exit(status, rusage, not exited, self.cfg, output)
        text = detail[: self.cap // 2]
        if state != "ok" and output.strip():
            text += f"\n--- program output (last {len(output)} bytes) ---\n"
            text += output.decode("utf-8", "backslashreplace")
            text = text[: self.cap]
        return state, answer, text, duration


def _parse_verdict(data: bytes):
    """The child's verdict, checked (the child is untrusted): None when unusable."""
    try:
        state, answer_text, detail = data.decode("utf-8", "replace").split("\n", 2)
    except ValueError:
        return None
    if state not in STATUSES:
        return None
    if state != "ok":
        return state, None, detail
    try:
        answer = float(answer_text)
    except ValueError:
        return None
    return (state, answer, detail) if math.isfinite(answer) else None


def _status_from_exit(status: int, rusage, timed_out: bool, cfg: dict, output: bytes):
    """Status and message for a child that left no verdict (or was killed)."""
    if timed_out:
        return "timeout", f"killed: wall-clock limit of {cfg['timeout_s']:g} s reached"
    code = os.waitstatus_to_exitcode(status)
    used = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
    if code < 0:
        name = _signal_name(-code)
        if -code == signal.SIGXCPU or (-code == signal.SIGKILL and used >= cfg["cpu_s"] - 0.05):
            return "timeout", f"killed by {name}: CPU-time limit of {cfg['cpu_s']} s reached"
        if b"MemoryError" in output or b"Cannot allocate memory" in output:
            return "memory", (
                f"killed by {name} after running out of memory (limit {cfg['memory_mb']} MB)"
            )
        hint = " (e.g. unbounded recursion, or memory)" if -code == signal.SIGSEGV else ""
        return "error", f"program crashed: killed by {name}{hint}"
    if code == CHILD_SETUP_FAILED:
        return "error", f"the sandbox could not set up the child (exit code {code})"
    return "error", f"program exited with code {code} before its answer was read (os._exit?)"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # before Linux 5.3: poll with short sleeps instead


def _remove_tree(path: str) -> None:
    try:
        os.rmdir(path)  # the common case: the program wrote no files
        return
    except OSError:
        pass
    import shutil

    def fix_and_retry(func, target, _exc):
        # A program may leave a folder it made unreadable (chmod 0): open it up and retry.
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix_and_retry)
    if os.path.lexists(path):  # a fixed scratch path must be free for the next program
        os.rename(path, f"{path}-stale-{os.urandom(4).hex()}")


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    cfg = marshal.loads(bytes.fromhex(argv[1]))
    requests, replies = os.dup(0), os.dup(1)
    # Nothing the worker prints by accident may land in the protocol stream.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    isolation = setup_isolation(cfg)
    worker = Worker(cfg, isolation)
    import gc

    gc.collect()
    gc.freeze()  # keep the warmed-up heap out of the children's garbage collections
    write_frame(replies, {"ready": True, "isolation": isolation})
    while True:
        batch = read_frame(requests)
        if batch is None:
            return 0
        for req_id, code in batch:
            try:
                reply = (req_id, *worker.run(code))
            except Exception as exc:  # a worker bug must not take the pool down with it
                reply = (req_id, "error", None, f"sandbox worker error: {exc!r}", 0.0)
            write_frame(replies, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
