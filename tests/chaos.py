"""Helpers for the whole-run chaos tests: a teacher server that can die, `fdd run` processes.

Everything here is real: the scripted teacher is a real HTTP server process
(tests/servers/scripted_teacher.py), `fdd run` is a real `python -m fdd.cli` process with
its own Prefect home, and the run folders are compared file by file afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Teacher:
    """The scripted teacher on a fixed port; kill() and start() it again on the same port."""

    def __init__(
        self,
        log: Path,
        port: int | None = None,
        latency_s: float = 0.0,
        hang_file: Path | None = None,
    ) -> None:
        self.log = log
        self.port = port or free_port()
        self.latency_s = latency_s
        self.hang_file = hang_file  # while it exists, requests are never answered
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.servers.scripted_teacher",
                "--port",
                str(self.port),
                "--log",
                str(self.log),
                "--latency",
                str(self.latency_s),
                *(["--hang-file", str(self.hang_file)] if self.hang_file else []),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.poll() is not None else b""
                raise RuntimeError(f"scripted teacher did not start on {self.port}: {err!r}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def requests(self) -> list[str]:
        """Prompt hashes of every request logged so far, in order."""
        if not self.log.exists():
            return []
        return [json.loads(x)["prompt"] for x in self.log.read_text().splitlines() if x.strip()]

    def hung(self) -> int:
        """Requests that arrived while the hang file existed (never answered)."""
        path = self.log.with_name(self.log.name + ".hung")
        return len(path.read_text().splitlines()) if path.exists() else 0


_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE_DB: Path | None = None


def migrated_prefect_db() -> Path:
    """A Prefect database migrated to head by `prefect server database upgrade`, made once
    per test process: each fresh Prefect home of these tests starts from a copy of it, so
    every `fdd run` here does not repeat the migrations (about 5 s of each temporary
    server's start). The first start on an empty home is still tested: by the in-process
    tests (conftest's home) and tests/test_flows.py, test_runlock.py, test_lab_cmd.py."""
    global _TEMPLATE_DB
    with _TEMPLATE_LOCK:
        if _TEMPLATE_DB is None or not _TEMPLATE_DB.is_file():
            home = Path(tempfile.mkdtemp(prefix="fdd-test-prefect-template-"))
            env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
            env.pop("PREFECT_API_URL", None)
            env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
            done = subprocess.run(
                [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            db = home / "prefect.db"
            assert done.returncode == 0 and db.is_file(), done.stdout[-2000:] + done.stderr
            with sqlite3.connect(db) as con:  # one self-contained file (no -wal beside it)
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _TEMPLATE_DB = db
        return _TEMPLATE_DB


def fdd_env(prefect_home: Path) -> dict:
    """The environment of an `fdd run` process with its own Prefect home (a migrated copy of
    `migrated_prefect_db()` when the home is new; an existing home is left as it is)."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    if not (prefect_home / "prefect.db").exists():
        shutil.copyfile(migrated_prefect_db(), prefect_home / "prefect.db")
    env = dict(
        os.environ,
        PREFECT_HOME=str(prefect_home),
        PYTHONUNBUFFERED="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPO),
        # The temporary server of each `fdd run` starts slowly on a loaded machine.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    env.pop("PREFECT_API_URL", None)
    return env


def fdd_cmd(cfg_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fdd.cli", "run", str(cfg_path), "--skip-preflight", *extra]


def start_fdd(cfg_path: Path, env: dict, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """`fdd run` in its own session (so a test can signal its whole process group)."""
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (closed by the caller)
    return subprocess.Popen(
        fdd_cmd(cfg_path, *extra),
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"fdd run ended (rc={proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def versions(run_dir: Path) -> list[tuple[str, list[str]]]:
    """(version id, sorted example ids and row hashes) for each round of a finished run."""
    from fdd_core.store import read_examples

    record = json.loads((run_dir / "run.json").read_text())
    out = []
    for r in record["rounds"]:
        rows = read_examples(Path(r["dataset"]["path"]))
        out.append(
            (r["dataset"]["version_id"], sorted(e.model_dump_json() for e in rows)),
        )
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc; Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


class SmallFS:
    """A tmpfs of a given size mounted at `path` (needs root); resize() frees space."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            import pytest

            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True
        )

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)

    def __enter__(self) -> SmallFS:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
