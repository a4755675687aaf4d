"""fdd_core.sandbox: normal programs, `ans` conversion, and one hostile program per guarantee.

Hostile tests that need an isolation level the machine does not give (network namespace,
read-only file system) skip with the reason; `Sandbox.isolation` says what is in force.
Every test checks afterwards that nothing the programs started is still alive.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from fdd_core import sandbox_worker
from fdd_core.config import SandboxConfig
from fdd_core.sandbox import MAX_PROGRAM_CHARS, ExecutionResult, Sandbox, run_programs

TIMEOUT = 1.5
CFG = SandboxConfig(timeout_s=TIMEOUT, cpu_s=5, max_output_bytes=4096, max_workers=2)


def _descendants(pid: int | None = None) -> set[int]:
    """Every living descendant of `pid` (default: this test process), from /proc."""
    found, todo = set(), [pid or os.getpid()]
    while todo:
        for path in glob.glob(f"/proc/{todo.pop()}/task/*/children"):
            try:
                kids = {int(x) for x in Path(path).read_text().split()}
            except OSError:
                continue
            found |= kids
            todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _worker_pids() -> set[int]:
    """The sandbox worker (zygote) processes among our descendants (not their `unshare`)."""
    return {
        p
        for p in _descendants()
        if "sandbox_worker.py" in _cmdline(p)
        and os.path.basename(_cmdline(p).split(" ")[0]) != "unshare"
    }


@pytest.fixture(scope="module")
def sandbox():
    before = _descendants()  # other modules' long-lived helpers are not ours to judge
    sb = Sandbox(CFG)
    sb.run("ans = 0")  # start the workers
    yield sb
    sb.close()
    assert _descendants() - before == set(), "closing the sandbox left processes behind"


@pytest.fixture(scope="module")
def solo():
    """One worker, so that consecutive programs surely run in the same worker."""
    sb = Sandbox(CFG.model_copy(update={"max_workers": 1}))
    sb.run("ans = 0")
    yield sb
    sb.close()


@pytest.fixture()
def no_strays(sandbox, solo):
    """After the test, only the workers themselves may be alive below this process."""
    before = _descendants()
    yield
    after = _descendants()
    assert after <= before, f"processes left behind: {[_cmdline(p) for p in after - before]}"


# --------------------------------------------------------------------------- normal programs


def test_correct_programs_in_parallel_give_their_own_answers_in_order(sandbox, no_strays):
    programs = [f"x = {i}\ny = x * x\nans = y + 0.5" for i in range(200)]
    results = sandbox.run_many(programs)
    assert [r.status for r in results] == ["ok"] * 200
    assert [r.answer for r in results] == [i * i + 0.5 for i in range(200)]


def test_failures_stay_at_their_own_position(sandbox, no_strays):
    programs = [("1/0" if i % 3 == 0 else f"ans = {i}") for i in range(60)]
    results = sandbox.run_many(programs)
    for i, res in enumerate(results):
        if i % 3 == 0:
            assert res.status == "error" and "ZeroDivisionError" in res.stderr, (i, res)
        else:
            assert res.status == "ok" and res.answer == i, (i, res)


def test_concurrent_callers_never_get_each_others_results(sandbox, no_strays):
    got: dict[int, list[ExecutionResult]] = {}

    def caller(k: int) -> None:
        got[k] = sandbox.run_many([f"ans = {k} * 1000 + {i}" for i in range(40)])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert [r.answer for r in got[k]] == [k * 1000 + i for i in range(40)]


def test_imports_of_math_and_fractions_work(sandbox):
    results = sandbox.run_many(
        [
            "import math\nans = math.sqrt(2) ** 2",
            "from fractions import Fraction\nans = Fraction(3, 4) + Fraction(1, 4) * 2",
            "import statistics, decimal\nans = statistics.mean([1, 2, 3]) + decimal.Decimal('0.5')",
        ]
    )
    assert [r.status for r in results] == ["ok"] * 3, results
    assert results[0].answer == pytest.approx(2.0)
    assert results[1].answer == 1.25
    assert results[2].answer == 2.5


def test_run_programs_runs_and_stops_its_workers():
    before = _descendants()
    results = run_programs(["ans = 6 * 7", "ans = 'x'"], SandboxConfig(max_workers=1))
    assert [(r.status, r.answer) for r in results] == [("ok", 42.0), ("bad_answer", None)]
    assert _descendants() <= before


def test_sandbox_is_reusable_after_close():
    sb = Sandbox(SandboxConfig(max_workers=1))
    assert sb.run("ans = 1").answer == 1.0
    sb.close()
    assert sb.run("ans = 2").answer == 2.0
    sb.close()
    assert sb.run_many([]) == []
    sb.close()


def test_result_is_a_frozen_value():
    res = ExecutionResult(answer=1.0, status="ok")
    assert res.ok and not ExecutionResult(None, "error").ok
    with pytest.raises(AttributeError):
        res.answer = 2.0  # type: ignore[misc]


def test_isolation_is_complete_where_the_os_allows_it(sandbox):
    iso = sandbox.isolation
    probe = ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc", "true"]
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("full isolation expected only as root with unshare")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("unshare is present but refuses namespaces here")
    assert iso.network_isolated and iso.pid_namespace and iso.readonly_fs and iso.private_tmp
    assert iso.privilege == "nobody" and not iso.read_all
    assert sandbox.run("import os\nans = os.getuid()").answer == 65534


# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize(
    "program, expected",
    [
        ("ans = 18", 18.0),
        ("ans = -2.5", -2.5),
        ("from fractions import Fraction\nans = Fraction(1, 8)", 0.125),
        ("from decimal import Decimal\nans = Decimal('1234.50')", 1234.5),
        ("import numpy as np\nans = np.int64(7)", 7.0),
        ("import numpy as np\nans = np.float32(0.5)", 0.5),
    ],
)
def test_numbers_become_floats(sandbox, program, expected):
    res = sandbox.run(program)
    assert (res.status, res.answer) == ("ok", expected), res


@pytest.mark.parametrize(
    "program, named",
    [
        ("ans = True", "bool"),
        ("ans = '18'", "str"),
        ("ans = [1, 2]", "list"),
        ("ans = {'a': 1}", "dict"),
        ("ans = 1 + 2j", "complex"),
        ("ans = float('nan')", "nan"),
        ("ans = float('inf')", "inf"),
        ("ans = None", "NoneType"),
        ("ans = 10 ** 400", "int"),
        ("import numpy as np\nans = np.bool_(True)", "bool"),
    ],
)
def test_anything_else_is_a_bad_answer_naming_it(sandbox, program, named):
    res = sandbox.run(program)
    assert res.status == "bad_answer" and res.answer is None, res
    assert named in res.stderr


def test_missing_ans_is_no_answer(sandbox):
    res = sandbox.run("x = 5\ny = x + 1")
    assert (res.status, res.answer) == ("no_answer", None)
    assert "ans" in res.stderr


def test_exception_gives_the_last_traceback_lines(sandbox):
    res = sandbox.run("def f(x):\n    return x / 0\n\nvalue = 3\nans = f(value)")
    assert res.status == "error" and res.answer is None
    assert "ZeroDivisionError" in res.stderr and "return x / 0" in res.stderr
    assert "sandbox_worker" not in res.stderr  # no sandbox internals in the traceback


def test_syntax_error_and_bad_input_are_errors_not_exceptions(sandbox):
    assert "SyntaxError" in sandbox.run("ans = (1 +").stderr
    assert sandbox.run("ans = 1\0").status == "error"  # NUL byte: compile refuses
    assert sandbox.run(None).status == "error"  # type: ignore[arg-type]
    assert sandbox.run("#" * (MAX_PROGRAM_CHARS + 1)).status == "error"


def test_judge_answer_unit():
    judge = sandbox_worker.judge_answer
    assert judge(3) == ("ok", 3.0, "")
    assert judge(Fraction(1, 3))[1] == pytest.approx(1 / 3)
    assert judge(Decimal("2.5"))[:2] == ("ok", 2.5)
    for bad in (
        False,
        "3",
        [3],
        (3,),
        {3: 3},
        3j,
        float("nan"),
        float("-inf"),
        None,
        Decimal("NaN"),
        10**400,
        object(),
    ):
        status, answer, message = judge(bad)
        assert (status, answer) == ("bad_answer", None), bad
        assert "ans" in message


def test_forged_or_broken_verdicts_are_refused():
    parse = sandbox_worker._parse_verdict
    assert parse(b"ok\n2.5\n") == ("ok", 2.5, "")
    assert parse(b"ok\nnan\n") is None
    assert parse(b"ok\nnot-a-number\n") is None
    assert parse(b"great\n1\n") is None
    assert parse(b"") is None
    assert parse(b"\xff\xfe") is None


def test_a_program_writing_garbage_to_the_verdict_pipe_gets_an_error(sandbox):
    res = sandbox.run("import os\nos.write(3, b'ok\\ninf\\n')\nos._exit(0)")
    assert res.status == "error"


# --------------------------------------------------------------------------- hostile programs


def test_infinite_loop_is_killed_at_the_wall_clock_limit(sandbox, no_strays):
    res = sandbox.run("while True:\n    pass")
    assert res.status == "timeout" and res.answer is None
    assert TIMEOUT <= res.duration_s < TIMEOUT + 3


def test_sleep_past_the_timeout_is_killed(sandbox, no_strays):
    start = time.monotonic()
    res = sandbox.run("import time\ntime.sleep(60)\nans = 1")
    assert res.status == "timeout"
    assert time.monotonic() - start < TIMEOUT + 5


def test_cpu_time_limit_kills_a_busy_program():
    with Sandbox(SandboxConfig(timeout_s=30, cpu_s=1, max_workers=1)) as sb:
        res = sb.run("while True:\n    pass")
    assert res.status == "timeout" and "CPU" in res.stderr, res
    assert res.duration_s < 25  # 1 s of CPU; the wall clock depends on the machine's load


def test_memory_bomb_gives_memory(sandbox, no_strays):
    at_once = sandbox.run("x = bytearray(10 ** 11)\nans = 1")
    assert at_once.status == "memory", at_once
    growing = sandbox.run("blocks = []\nwhile True:\n    blocks.append(bytes(10 ** 7))")
    assert growing.status == "memory", growing
    assert sandbox.run("ans = 1").ok  # and the worker is fine


def test_fork_bomb_is_bounded_and_killed_without_a_trace(sandbox, no_strays):
    if not sandbox.isolation.pid_namespace:
        pytest.skip("fork bombs are contained only with a pid namespace (see module docs)")
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            try:\n"
        "                os.setsid()  # try to escape the process-group kill\n"
        "            except OSError:\n"
        "                pass\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n"
    )
    start = time.monotonic()
    res = sandbox.run(bomb)
    assert res.status in ("timeout", "error"), res
    assert time.monotonic() - start < TIMEOUT + 10
    assert sandbox.run("ans = 3").answer == 3.0


def test_background_processes_do_not_outlive_their_program(sandbox, no_strays):
    program = "import subprocess\nsubprocess.Popen(['sleep', '60'])\n"
    if sandbox.isolation.pid_namespace:  # leaving the process group is caught there too
        program += "subprocess.Popen(['sh', '-c', 'setsid sleep 60 &'])\n"
    res = sandbox.run(program + "ans = 1")
    assert res.ok, res


def test_a_forked_copy_of_the_program_cannot_answer_for_it(sandbox, no_strays):
    program = (
        "import os, time\npid = os.fork()\nif pid == 0:\n    ans = 2\nelse:\n"
        "    time.sleep(0.2)\n    ans = 1"
    )
    for _ in range(3):
        res = sandbox.run(program)
        assert (res.status, res.answer) == ("ok", 1.0), res


def test_deep_recursion_is_an_error_and_a_crash_is_survived(sandbox, no_strays):
    res = sandbox.run("def f(n):\n    return f(n + 1)\n\nans = f(0)")
    assert res.status == "error" and "RecursionError" in res.stderr
    # Recursion in C that no recursion limit guards (hashing a deeply nested tuple)
    # overflows the C stack: the child dies of SIGSEGV.
    crash = sandbox.run(
        "import gc\ngc.disable()\nnested = ()\n"
        "for _ in range(10 ** 6):\n    nested = (nested,)\nans = hash(nested)"
    )
    assert crash.status == "error" and "SIGSEGV" in crash.stderr, crash
    assert sandbox.run("ans = 4").answer == 4.0


@pytest.fixture()
def open_canary():
    """A file anybody could change by permissions alone, outside /tmp (visible to programs)."""
    folder = Path(tempfile.mkdtemp(prefix="fdd-sandbox-canary-", dir="/var/tmp"))
    folder.chmod(0o777)
    canary = folder / "canary.txt"
    canary.write_text("intact")
    canary.chmod(0o666)
    yield canary
    shutil.rmtree(folder, ignore_errors=True)


ATTACK = """
import os, shutil
target = {target!r}
folder = os.path.dirname(target)
done = []
attempts = [
    ("remove", lambda: os.remove(target)),
    ("overwrite", lambda: open(target, "w").write("owned")),
    ("append", lambda: open(target, "a").write("owned")),
    ("rename", lambda: os.rename(target, target + ".moved")),
    ("chmod", lambda: os.chmod(target, 0o000)),
    ("sibling", lambda: open(os.path.join(folder, "planted.txt"), "w").write("x")),
    ("rmtree", lambda: shutil.rmtree(folder)),
]
for name, attempt in attempts:
    try:
        attempt()
        done.append(name)
    except OSError:
        pass
print("succeeded:", done)
ans = len(done)
"""


def test_files_outside_scratch_cannot_be_changed_by_absolute_path(sandbox, tmp_path, no_strays):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    if sandbox.isolation.privilege == "none" and not sandbox.isolation.readonly_fs:
        pytest.skip(
            "without a mount namespace or a uid of its own, a program may change "
            "the caller's files (see module docs)"
        )
    res = sandbox.run(ATTACK.format(target=str(canary)))
    assert res.ok and res.answer == 0, res
    assert canary.read_text() == "intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt"]


def test_world_writable_files_are_protected_by_the_read_only_view(sandbox, open_canary, no_strays):
    if not sandbox.isolation.readonly_fs:
        pytest.skip("needs a mount namespace (read-only view of the file system)")
    res = sandbox.run(ATTACK.format(target=str(open_canary)))
    assert res.ok and res.answer == 0, res
    assert open_canary.read_text() == "intact"
    assert sorted(p.name for p in open_canary.parent.iterdir()) == ["canary.txt"]


def test_writing_in_the_scratch_folder_works_and_is_removed_after(solo):
    first = solo.run(
        "import os\nopen('notes.txt', 'w').write('hello')\nos.mkdir('sub')\n"
        "open('sub/x', 'w').write('1')\nos.chmod('sub', 0)\n"
        "ans = len(open('notes.txt').read()) + len(os.listdir('.'))"
    )
    assert (first.status, first.answer) == ("ok", 7.0), first
    second = solo.run(
        "import os, tempfile\nans = len(os.listdir('.')) + len(os.listdir(tempfile.gettempdir()))"
    )
    assert (second.status, second.answer) == ("ok", 0.0), second


def test_file_size_and_open_file_limits(sandbox):
    big = sandbox.run("open('big.bin', 'wb').write(b'0' * (64 * 1024 * 1024))\nans = 1")
    assert big.status in ("error", "memory") and "File too large" in big.stderr, big
    many = sandbox.run("handles = [open(f'f{i}', 'w') for i in range(5000)]\nans = 1")
    assert many.status == "error" and "Too many open files" in many.stderr, many


def test_closed_folders_on_the_way_to_python_show_only_what_python_needs(sandbox):
    import sys

    paths = [p for p in [sys.prefix, sys.base_prefix, *sys.path] if p]
    closed: dict[str, set[str]] = {}
    for path in paths:
        found = sandbox_worker._first_closed_dir(path)
        if found:
            closed.setdefault(found[0], set()).add(found[1])
    if not closed or not sandbox.isolation.readonly_fs or sandbox.isolation.privilege != "nobody":
        pytest.skip("Python is reachable for everybody here (or no mount namespace to hide in)")
    for folder, needed in closed.items():
        res = sandbox.run(f"import os\nprint(sorted(os.listdir({folder!r})))\nraise SystemExit(1)")
        assert repr(sorted(needed)) in res.stderr, (folder, res)


def test_environment_secrets_are_not_visible(monkeypatch):
    secret = "sk-test-NOT-FOR-PROGRAMS-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("FDD_TEST_TOKEN", secret)
    program = (
        "import os, glob\n"
        f"secret = {secret!r}\n"
        "found = [k for k, v in os.environ.items() if secret in v or k == 'OPENAI_API_KEY']\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        if secret.encode() in open(path, 'rb').read():\n"
        "            found.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(found)\n"
        "ans = len(found)"
    )
    with Sandbox(SandboxConfig(max_workers=1)) as sb:  # started after the secret was set
        res = sb.run(program)
        env = sb.run("import os\nans = len(os.environ)")
    assert (res.status, res.answer) == ("ok", 0.0), res
    assert env.ok and env.answer < 12  # a short fixed list, nothing inherited


@pytest.fixture()
def tcp_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.5)
    yield server
    server.close()


CONNECT = (
    "import socket\n"
    "s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    "s.sendall(b'hello')\n"
    "ans = 1"
)


def test_network_connections_fail(sandbox, tcp_server, no_strays):
    if not sandbox.isolation.network_isolated:
        pytest.skip("no network namespace here (unshare --net unavailable)")
    res = sandbox.run(CONNECT.format(port=tcp_server.getsockname()[1]))
    assert res.status == "error" and "unreachable" in res.stderr.lower(), res
    with pytest.raises(socket.timeout):
        tcp_server.accept()


def test_network_test_can_fail_when_isolation_is_off(tcp_server):
    """The control: with isolate_network=False the same program does connect."""
    with Sandbox(SandboxConfig(max_workers=1, isolate_network=False)) as sb:
        res = sb.run(CONNECT.format(port=tcp_server.getsockname()[1]))
        conn, _ = tcp_server.accept()
        conn.close()
    assert (res.status, res.answer) == ("ok", 1.0), res


def test_output_floods_are_capped(sandbox, no_strays):
    flood = sandbox.run("while True:\n    print('x' * 1000)")
    assert flood.status == "timeout" and len(flood.stderr) <= CFG.max_output_bytes
    big = sandbox.run("import os\nos.write(1, b'z' * 10 ** 7)\nprint('y' * 10 ** 6)\nans = 2")
    assert (big.status, big.answer) == ("ok", 2.0), big
    shown = sandbox.run("print('hello from the program')\nraise ValueError('boom')")
    assert "hello from the program" in shown.stderr and "ValueError: boom" in shown.stderr


def test_exit_calls_end_only_the_program(sandbox, no_strays):
    workers = _worker_pids()
    results = sandbox.run_many(
        [
            "ans = 3\nimport sys\nsys.exit(0)",
            "ans = 3\nimport sys\nsys.exit(2)",
            "ans = 3\nimport os\nos._exit(0)",
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nans = 1",
            "import os, signal\nos.kill(1, signal.SIGKILL)\nans = 1",
            "import os, signal\nos.kill(-1, signal.SIGKILL)\nans = 1",
            "import os, signal\nos.killpg(0, signal.SIGKILL)\nans = 1",
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        ]
    )
    assert (results[0].status, results[0].answer) == ("ok", 3.0)
    assert [r.status for r in results[1:3]] == ["error", "error"]
    assert all(not r.ok or r.answer == 1.0 for r in results[3:]), results
    assert results[7].status == "error" and "SIGKILL" in results[7].stderr
    assert sandbox.run_many(["ans = 5"] * 4)[-1].answer == 5.0
    if sandbox.isolation.pid_namespace or sandbox.isolation.privilege == "nobody":
        assert _worker_pids() == workers  # no worker was even restarted


def test_a_dead_worker_is_replaced_and_only_its_program_fails():
    before = _descendants()
    others = _worker_pids()
    with Sandbox(CFG.model_copy(update={"max_workers": 1})) as sb:
        sb.run("ans = 0")
        [worker] = _worker_pids() - others
        killer = threading.Timer(0.4, os.kill, args=(worker, 9))
        killer.start()
        results = sb.run_many(["import time\ntime.sleep(1.2)\nans = 1", "ans = 2", "ans = 3"])
        killer.join()
        assert len(_worker_pids() - others) == 1 and worker not in _worker_pids()
    assert results[0].status == "error" and "worker died" in results[0].stderr, results[0]
    assert [(r.status, r.answer) for r in results[1:]] == [("ok", 2.0), ("ok", 3.0)]
    assert _descendants() <= before


def test_the_caller_is_unharmed_after_the_hostile_suite(sandbox):
    # This process is alive and can still run programs; its cwd and files are untouched.
    assert Path.cwd().exists()
    assert sandbox.run("ans = 1").ok
    assert not list(Path("/tmp").glob("planted*")) and not list(Path("/var/tmp").glob("planted*"))


def test_large_programs_and_large_replies_do_not_deadlock_the_pipeline():
    """Big requests and big replies at once: the caller must never block on a full pipe
    while the worker blocks on another (a watchdog turns a deadlock into a failure)."""
    padding = "# " + "x" * 100_000 + "\n"
    programs = [padding + f"print('y' * 300_000)\nraise ValueError({i})" for i in range(4)]
    programs += [f"ans = {i}" for i in range(4)]
    results: list = []
    with Sandbox(SandboxConfig(max_workers=1, max_output_bytes=200_000)) as sb:
        runner = threading.Thread(target=lambda: results.extend(sb.run_many(programs)))
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "run_many deadlocked"
    assert [r.status for r in results] == ["error"] * 4 + ["ok"] * 4
    assert all(len(r.stderr) > 100_000 for r in results[:4])


# --------------------------------------------------------------------------- many programs per
# worker: batched requests, one process each, nothing carried from one program to the next


def test_every_program_gets_its_own_random_seed(solo):
    results = solo.run_many(["import random\nans = random.getrandbits(48)"] * 6)
    assert all(r.ok for r in results), results
    assert len({r.answer for r in results}) == 6


def test_a_program_cannot_leave_state_for_the_next_one(solo):
    plant = (
        "import math, builtins, os, sys\nmath.leak = 42\nbuiltins.leak = 42\n"
        "os.environ['LEAK'] = '42'\nsys.modules['leak'] = math\nleak_global = 1\nans = 1"
    )
    look = (
        "import math, builtins, os, sys\n"
        "found = [hasattr(math, 'leak'), hasattr(builtins, 'leak'), 'LEAK' in os.environ,\n"
        "         'leak' in sys.modules, 'leak_global' in globals()]\n"
        "print(found)\nans = sum(found)"
    )
    first, second = solo.run_many([plant, look])
    assert first.ok, first
    assert (second.status, second.answer) == ("ok", 0.0), second


def test_each_program_runs_in_a_process_of_its_own(solo):
    results = solo.run_many(["import os\nans = os.getpid()"] * 20)
    assert all(r.ok for r in results), results
    assert len({r.answer for r in results}) == 20


def test_every_program_gets_every_limit(solo):
    from fdd_core.sandbox import FILE_SIZE_MB, MAX_OPEN_FILES, MAX_PROCESSES

    program = (
        "import resource as r\n"
        "ans = float(''.join(str(int(r.getrlimit(k)[1] == v)) for k, v in [\n"
        f"    (r.RLIMIT_CPU, {CFG.cpu_s + 1}), (r.RLIMIT_AS, {CFG.memory_mb * 2**20}),\n"
        f"    (r.RLIMIT_FSIZE, {FILE_SIZE_MB * 2**20}), (r.RLIMIT_NOFILE, {MAX_OPEN_FILES}),\n"
        f"    (r.RLIMIT_CORE, 0), (r.RLIMIT_NPROC, {MAX_PROCESSES})]))"
    )
    for res in solo.run_many([program] * 3):  # the first and later programs of a worker
        assert (res.status, res.answer) == ("ok", 111111.0), res


def test_a_slow_or_crashing_program_in_a_batch_harms_no_other(solo, no_strays):
    programs = [f"ans = {i}" for i in range(40)]
    programs[5] = "while True:\n    pass"  # runs into the wall clock
    programs[12] = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"
    programs[20] = "import os\nif os.fork() == 0:\n    os._exit(0)\nans = 20"  # leaves a zombie
    programs[30] = "import subprocess\nsubprocess.Popen(['sleep', '30'])\nans = 30"  # a stray
    results = solo.run_many(programs)
    assert results[5].status == "timeout", results[5]
    assert results[12].status == "error" and "SIGSEGV" in results[12].stderr, results[12]
    for i, res in enumerate(results):
        if i not in (5, 12):
            assert (res.status, res.answer) == ("ok", float(i)), (i, res)


def test_when_no_worker_can_be_restarted_every_program_fails_with_the_reason(monkeypatch):
    others = _worker_pids()
    with Sandbox(CFG.model_copy(update={"max_workers": 1})) as sb:
        sb.run("ans = 0")
        [worker] = _worker_pids() - others

        def refuse(index):
            raise RuntimeError("no more processes today")

        monkeypatch.setattr(sb, "_spawn", refuse)
        os.kill(worker, 9)
        results = sb.run_many(["import time\ntime.sleep(0.5)\nans = 1", "ans = 2", "ans = 3"])
        assert [r.status for r in results] == ["error"] * 3, results
        assert "worker died" in results[0].stderr or "could not" in results[0].stderr
        assert all("no more processes today" in r.stderr for r in results[1:]), results


def test_without_namespaces_the_fallback_still_isolates_what_it_promises(monkeypatch):
    """Level 3 (no usable `unshare`), forced here: limits, timeout with a process-group
    kill, a scratch folder per program and a clean environment still hold."""
    import fdd_core.sandbox as sandbox_module

    privilege = "nobody" if os.geteuid() == 0 else "none"
    monkeypatch.setattr(sandbox_module, "_launcher", lambda _net: ((), "none", privilege))
    before = _descendants()
    with Sandbox(CFG.model_copy(update={"max_workers": 1})) as sb:
        assert not sb.isolation.pid_namespace and not sb.isolation.readonly_fs
        results = sb.run_many(
            [
                "ans = 6 * 7",
                "while True:\n    pass",
                "import subprocess\nsubprocess.Popen(['sleep', '30'])\nans = 1",
                "import os\nopen('f', 'w').write('x')\nans = len(os.listdir('.'))",
                "import os\nans = len(os.listdir('.'))",
                "import resource as r\nans = r.getrlimit(r.RLIMIT_NOFILE)[1]",
                "x = bytearray(10 ** 11)\nans = 1",
            ]
        )
    assert [(r.status, r.answer) for r in results] == [
        ("ok", 42.0),
        ("timeout", None),
        ("ok", 1.0),
        ("ok", 1.0),
        ("ok", 0.0),
        ("ok", 64.0),
        ("memory", None),
    ], results
    assert _descendants() <= before  # the background `sleep` went with its process group


def test_worker_mounts_nothing_unless_pid_1_of_its_own_namespaces(tmp_path):
    """A worker started by hand with the host's namespace ids (or wrong ones) must not
    mount tmpfs over /tmp for the whole machine. Run in a throwaway mount namespace without
    a pid namespace, so even a regression mounts only there."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare to make a throwaway mount namespace")
    from fdd_core.sandbox import _ns_ids

    script = (
        "import json, sys\n"
        "from fdd_core import sandbox_worker\n"
        "cfg = json.loads(sys.argv[1])\n"
        "print(json.dumps(sandbox_worker.setup_isolation(cfg)))\n"
    )
    cfg = {"parent_ns": _ns_ids(), "privilege": "root", "scratch_mb": 8}
    repo = str(Path(sandbox_worker.__file__).resolve().parents[1])
    done = subprocess.run(
        [unshare, "--mount", sys.executable, "-c", script, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": repo},
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot unshare a mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["mount_namespace"] and not info["pid_namespace"], info
    assert not info["private_tmp"] and not info["readonly_fs"], info


def test_profile_sandbox_measures_cpu_and_faults_per_role():
    """bench/profile_sandbox's /proc part on a few programs: every role is counted, the
    total is their sum, and each program's process shows its own page faults."""
    from bench import profile_sandbox

    before = _descendants()
    split = profile_sandbox.measure(30, 1)
    assert split["programs"] == 30 and split["workers"] == 1 and split["programs_per_s"] > 0
    roles = split["us_per_program"]
    parts = ["caller", "worker user", "worker system", "child user", "child system"]
    assert roles["total"] == pytest.approx(sum(roles[k] for k in parts))
    assert split["minor_faults_per_program"]["child"] > 0  # a fresh process faults pages in
    assert _descendants() <= before
