"""Start and stop a real Prefect stack on this machine: PostgreSQL, `prefect server`, a worker.

Used by the server integration tests (through `tests/fixtures_prefect.py`), and usable by
hand to get a throwaway local stack:

    .venv/bin/python -m tests.prefect_stack      # prints the UI URL; Ctrl-C stops everything

Everything lives in one temporary folder and on free ports on 127.0.0.1: a PostgreSQL
cluster made with `initdb` (trust auth, bound to loopback only, fsync off: a throwaway),
`prefect server start` with `PREFECT_HOME` in that folder, and optional workers. Each
process starts in its own session; `stop()` terminates each process group (and any stray
descendants found through /proc), then kills what is still alive, and never raises.

What this does not do: it is not a production setup (no password, no TLS, fsync off), and
it needs PostgreSQL binaries (`scripts/install_system_deps.sh`). When the machine lacks
them, `StackUnavailable` says why, so tests can skip instead of failing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PG_USER = "fdd"
PG_DB = "prefect"
SERVER_START_TIMEOUT_S = 180.0


class StackUnavailable(RuntimeError):
    """This machine cannot run the stack (a missing program); the message says what to do."""


class StackError(RuntimeError):
    """A stack process failed to start; the message holds the tail of its log."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin() -> Path | None:
    """Folder holding initdb/postgres: the newest /usr/lib/postgresql/*/bin, or the PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _log_tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None  # field 22 of stat: start time in clock ticks


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live descendant of `pid` as (pid, start time) (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        child = int(Path(stat).parent.name)
        fields = _stat_fields(child)
        if fields:
            children.setdefault(int(fields[1]), []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                out.append((child, started))
            todo.append(child)
    return out


def _kill_if_same(pid: int, started: str, sig: int) -> None:
    """Signal `pid` only if it is still the process we saw (pids get reused)."""
    if _start_time(pid) == started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Proc:
    """A child process in its own session, with its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the process group and stray descendants; kill what outlives `timeout`."""
        strays = descendants(self.popen.pid)
        # Until the child is reaped its pid, and so its group id, cannot be reused.
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
        for pid, started in strays:  # e.g. flow runs a worker started in their own session
            _kill_if_same(pid, started, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        for pid, started in strays:
            _kill_if_same(pid, started, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def _spawn(name: str, cmd: list[str], log: Path, env: dict, **kwargs) -> Proc:
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            **kwargs,
        )
    return Proc(name, popen, log)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:port."""

    root: Path
    port: int
    proc: Proc | None = None

    @property
    def async_url(self) -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{PG_DB}"

    @staticmethod
    def _run_as() -> dict:
        """Postgres refuses to run as root: run it as the `postgres` system user then."""
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackUnavailable(
                "running as root and there is no 'postgres' user to run PostgreSQL as "
                "(install the Debian package: scripts/install_system_deps.sh)"
            ) from exc
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise StackUnavailable(
                "PostgreSQL binaries (initdb, postgres) not found; run "
                "scripts/install_system_deps.sh"
            )
        run_as = self._run_as()
        data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        if run_as:
            os.chown(self.root, run_as["user"], run_as["group"])
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C"}
        init = subprocess.run(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, env=env, cwd=self.root, timeout=120, check=False,
            **run_as,
        )  # fmt: skip
        if init.returncode != 0:
            raise StackError(f"initdb failed ({init.returncode}):\n{init.stderr[-3000:]}")
        log = self.root / "postgres.log"
        log.touch()
        if run_as:
            os.chown(log, run_as["user"], run_as["group"])
        self.proc = _spawn(
            "postgres",
            [str(pg_bin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            log, env, cwd=self.root, **run_as,
        )  # fmt: skip
        self._wait_ready(pg_bin, env, timeout)
        made = subprocess.run(
            [str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER,
             PG_DB],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise StackError(f"createdb failed: {made.stderr[-2000:]}")

    def _wait_ready(self, pg_bin: Path, env: dict, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                raise StackError(f"postgres exited:\n{_log_tail(self.proc.log)}")
            ready = subprocess.run(
                [str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                 PG_USER, "-d", "postgres", "-q"],
                env=env, check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.3)
        raise StackError(f"postgres not ready after {timeout:.0f}s:\n{_log_tail(self.proc.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, exit cleanly.
            self.proc.stop(signal.SIGINT, timeout=20)
            self.proc = None


# --------------------------------------------------------------------------- the stack


@dataclass
class PrefectStack:
    """A running Prefect server on PostgreSQL, plus whatever workers were started."""

    root: Path
    port: int
    postgres: Postgres
    server: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    owns_root: bool = False  # root is a temporary folder made here: removed with the stack

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def home(self) -> Path:
        return self.root / "prefect-home"

    def client_env(self, extra: dict | None = None) -> dict[str, str]:
        """Environment for processes that talk to this server (workers, CLI calls)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(self.root / "results"),
            PREFECT_LOGGING_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra or {})
        return env

    def settings(self):
        """Context manager pointing this process's Prefect client at the stack."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def start_server(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        env = self.client_env(
            {"PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.async_url,
             "PREFECT_LOGGING_LEVEL": "WARNING",
             # The UI asks the browser to call this URL; its default is port 4200.
             "PREFECT_SERVER_UI_API_URL": self.api_url}
        )  # fmt: skip
        env.pop("PREFECT_API_URL")  # the server is not its own client
        self.server = _spawn(
            "prefect-server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--analytics-off"],
            self.root / "server.log", env, cwd=self.root,
        )  # fmt: skip
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise StackError(f"prefect server exited:\n{_log_tail(self.server.log)}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise StackError(
            f"prefect server not healthy after {timeout:.0f}s:\n{_log_tail(self.server.log)}"
        )

    def start_worker(self, pool: str, *, name: str = "fdd-test-worker", limit: int = 1) -> Proc:
        """A process worker polling `pool` (runs flow runs as subprocesses of itself)."""
        proc = _spawn(
            f"worker-{pool}",
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
             "process", "--name", name, "--limit", str(limit)],
            self.root / f"worker-{pool}.log", self.client_env(), cwd=REPO,
        )  # fmt: skip
        self.workers.append(proc)
        return proc

    def start_process(self, name: str, cmd: list[str], env: dict | None = None) -> Proc:
        """Any helper process (e.g. a teacher server), stopped with the stack."""
        proc = _spawn(name, cmd, self.root / f"{name}.log", env or self.client_env(), cwd=REPO)
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        """Tails of every log, for assertion messages."""
        parts = []
        for proc in [self.server, *self.workers, self.postgres.proc]:
            if proc is not None:
                parts.append(f"--- {proc.name} ({proc.log})\n{_log_tail(proc.log, 40)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop workers, then the server, then PostgreSQL; never raises."""
        for proc in [*self.workers, self.server]:
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()
        self.workers.clear()
        self.server = None
        with contextlib.suppress(Exception):
            self.postgres.stop()


def start_stack(root: Path | None = None) -> PrefectStack:
    """Start PostgreSQL and a Prefect server on it; on any failure stop what started."""
    owns_root = root is None
    root = Path(root or tempfile.mkdtemp(prefix="fdd-prefect-stack-"))
    # PostgreSQL runs as another user when we are root: its folder must be reachable, and
    # pytest's tmp folders are private to their owner. /tmp itself is world-traversable.
    pg_root = Path(tempfile.mkdtemp(prefix="fdd-pg-"))
    stack = PrefectStack(
        root=root,
        port=free_port(),
        postgres=Postgres(pg_root, free_port()),
        owns_root=owns_root,
    )
    try:
        stack.postgres.start()
        stack.start_server()
    except BaseException:
        stack.stop()
        remove_stack_files(stack)
        raise
    return stack


def remove_stack_files(stack: PrefectStack) -> None:
    """Delete the database folder (and the stack folder when it was made here)."""
    shutil.rmtree(stack.postgres.root, ignore_errors=True)
    if stack.owns_root:
        shutil.rmtree(stack.root, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM (and SIGINT, which a shell may have set to "ignore" for background jobs)
    # must reach the `finally` below, or the server and database would outlive us.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    s = start_stack()
    print(f"Prefect UI: {s.url}  API: {s.api_url}  files: {s.root}", flush=True)
    try:
        while s.server.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()
        remove_stack_files(s)
