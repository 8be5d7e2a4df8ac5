"""The hard stop of ``--timeout``: one watcher per process, the CLI supervisor, signals.

``tests/data/hdf5_hang_legacy.h5`` is a fuzzer-mutated tf-keras ``mixed16.h5`` (input 8767
of a 3-minute seed-1 run) on which libhdf5 loops forever inside one C call holding the GIL,
without allocating (RSS stays ~60 MB): neither SIGALRM nor the Python-level deadline checks
can stop it, only another process. The CLI runs here keep the default memory cap.
(``tests/data/hdf5_btree_loop.keras``, the first such find, also allocates ~450 MB/s: the
memory cap ends it first, see ``tests/runtime/test_memory.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

from ckptscan.runtime import timeout as rt_timeout, watchdog

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"),
                                reason="the hard stop needs fork (and /proc to observe it)")

HANG = ROOT / "tests" / "data" / "hdf5_hang_legacy.h5"
GOOD = FIXTURES / "k3" / "seed.keras"
TIMEOUT = 2
#: The hard stop's grace in these tests (``CKPTSCAN_HARD_GRACE``): the hang file spins a core
#: until it is stopped, so each test costs TIMEOUT + GRACE of CPU. One test keeps the default.
GRACE = 1.0
#: --timeout + the grace + start-up, with room for a loaded CI machine.
LIMIT = TIMEOUT + GRACE + 12


def _stopped(path) -> str:
    return f"ckptscan: error: {path}: timed out after {TIMEOUT} s (--timeout); stuck in the HDF5 library, stopped\n"


def _cli(*args, env=None, timeout=60):
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "ckptscan", *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return out, time.monotonic() - t0


def _marked(grace: float | None = GRACE) -> tuple[dict, str]:
    """An environment that marks the processes of one run, with the hard stop's grace
    (None: the default, :data:`watchdog.HARD_GRACE`)."""
    mark = uuid.uuid4().hex
    env = {"CKPTSCAN_TEST_MARK": mark}
    if grace is not None:
        env[watchdog.HARD_GRACE_ENV] = f"{grace:g}"
    return env, mark


def _processes_with(mark: str) -> list[str]:
    """Processes whose environment carries ``mark`` (the CLI and all it started)."""
    found = []
    needle = f"CKPTSCAN_TEST_MARK={mark}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    with open(f"/proc/{name}/stat", "rb") as st:
                        found.append(st.read().decode(errors="replace"))
        except OSError:
            continue
    return found


def _py(code: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=str(ROOT))


# --- the watchdog of a process without supervisor (Python API, pool workers) ------------------

def test_one_long_lived_watchdog_per_process_reaped_at_exit():
    out = _py("""
        import os, time
        from ckptscan.runtime import timeout as rt_timeout, watchdog
        pids = set()
        for i in range(50):
            with rt_timeout.file_timeout(30, f"f{i}.keras"):
                pids.add(watchdog._CH.watchdog)
        (wd,) = pids
        me = str(os.getpid())
        kids = []
        for n in os.listdir("/proc"):
            if n.isdigit():
                try:
                    st = open(f"/proc/{n}/stat").read()
                except OSError:
                    continue
                rest = st[st.rindex(")") + 2:].split()
                if rest[1] == me:
                    kids.append((int(n), rest[0]))
        print(wd, kids)
    """)
    assert out.returncode == 0, out.stderr
    wd, kids = out.stdout.split(" ", 1)
    wd = int(wd)
    assert eval(kids) in ([(wd, "S")], [(wd, "R")])  # one child, alive (not a zombie)
    with pytest.raises(ProcessLookupError):  # reaped when the process exited
        os.kill(wd, 0)


def test_watchdog_stops_a_process_stuck_in_c_code():
    """SIGALRM blocked + a sleep in C: only the watchdog can end it (one line, SIGKILL)."""
    t0 = time.monotonic()
    out = _py("""
        import signal, time
        from ckptscan.runtime import timeout as rt_timeout, watchdog
        watchdog.HARD_GRACE = 0.5
        with rt_timeout.file_timeout(1, "warm.keras"):
            pass  # the watchdog now exists and is disarmed: nothing may fire later
        time.sleep(2)  # past that file's hard deadline (1 + 0.5 s)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        with rt_timeout.file_timeout(0.5, "stuck.keras"):
            time.sleep(30)
    """)
    elapsed = time.monotonic() - t0
    assert out.returncode == -signal.SIGKILL
    assert out.stderr == "ckptscan: error: stuck.keras: timed out after 0.5 s (--timeout); stuck in the HDF5 library, stopped\n"
    assert elapsed < 2 + 1 + 10


def test_nested_limits_rearm_the_outer_hard_deadline():
    from ckptscan.errors import FileTimeoutError

    with pytest.raises(FileTimeoutError):
        with rt_timeout.file_timeout(0.3, "outer"):
            outer = watchdog._CH.armed
            assert outer[2] == "outer" and outer[1] == 0.3
            with rt_timeout.file_timeout(0.1, "inner"):
                assert watchdog._CH.armed[2] == "inner"
            assert watchdog._CH.armed == outer
            time.sleep(1)
    assert watchdog._CH.armed is None


def test_hard_false_arms_nothing():
    with rt_timeout.file_timeout(5, "a", hard=False):
        assert watchdog._CH.armed is None


def test_a_file_that_hung_a_worker_fails_at_once(tmp_path, monkeypatch):
    from ckptscan.errors import FileTimeoutError

    stuck = tmp_path / "stuck"
    stuck.write_text(json.dumps(["x.keras", watchdog.hard_reason(3)]) + "\n")
    monkeypatch.setenv(watchdog.STUCK_ENV, str(stuck))
    with pytest.raises(FileTimeoutError) as info:
        with rt_timeout.file_timeout(3, "x.keras"):
            pytest.fail("the body must not run")
    assert str(info.value) == "x.keras: timed out after 3 s (--timeout); stuck in the HDF5 library, stopped"
    with rt_timeout.file_timeout(3, "y.keras"):
        pass
    with rt_timeout.file_timeout(0, "x.keras"):  # no limit asked: nothing to report
        pass


# --- the CLI supervisor ------------------------------------------------------------------------

def test_fixture_really_hangs_without_the_hard_stop():
    """Control: with the hard stop off, SIGALRM alone does not end the run."""
    code = f"""
        from ckptscan.runtime.timeout import file_timeout
        from ckptscan.formats import open_checkpoint
        with file_timeout(1, "x", hard=False), open_checkpoint({str(HANG)!r}) as c:
            c.variables
    """
    with pytest.raises(subprocess.TimeoutExpired):
        _py(code, timeout=5)  # start-up + the 1 s alarm + 3 s in which it would have ended


@pytest.mark.parametrize(("command", "grace"), [("inspect", None), ("scan", GRACE)], ids=["inspect", "scan"])
def test_cli_stuck_in_hdf5_exits_2_with_one_line(command, grace, monkeypatch):
    """Stopped at --timeout + the grace: the default 5 s (inspect) or CKPTSCAN_HARD_GRACE (scan)."""
    monkeypatch.delenv(watchdog.HARD_GRACE_ENV, raising=False)  # the default means the default
    env, mark = _marked(grace)
    out, elapsed = _cli(command, "--timeout", TIMEOUT, HANG, env=env)
    assert out.returncode == 2, out.stderr
    errors = [ln + "\n" for ln in out.stderr.splitlines() if ln.startswith("ckptscan: error:")]
    assert errors == [_stopped(HANG)]
    assert out.stderr.startswith(_stopped(HANG))
    if command == "scan":
        assert out.stderr == _stopped(HANG) + (
            "ckptscan: scan stopped: no report written; scan with --jobs 2 to report this file and the others\n")
    else:
        assert out.stderr == _stopped(HANG)
    assert "Traceback" not in out.stderr and out.stdout == ""
    in_force = watchdog.HARD_GRACE if grace is None else grace
    assert TIMEOUT + in_force - 0.5 < elapsed < TIMEOUT + in_force + 12
    assert _processes_with(mark) == []


def test_cli_jobs_reports_the_stuck_file_and_scans_the_others(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copyfile(HANG, folder / "a_hang.h5")
    for i in range(3):
        shutil.copyfile(GOOD, folder / f"good_{i}.keras")
    env, mark = _marked()
    out, elapsed = _cli("scan", "--jobs", "2", "--timeout", TIMEOUT, "--format", "json", folder, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    errors = [ln + "\n" for ln in out.stderr.splitlines() if ln.startswith("ckptscan: error:")]
    assert errors == [_stopped(folder / "a_hang.h5")]
    doc = json.loads(out.stdout)
    status = {Path(f["path"]).name: (f["status"], f["reason"]) for f in doc["files"]}
    assert status == {"a_hang.h5": ("error", watchdog.hard_reason(TIMEOUT)),
                      **{f"good_{i}.keras": ("scanned", "") for i in range(3)}}
    assert elapsed < LIMIT + 30  # the retry of the stuck file does not hang a second time
    assert _processes_with(mark) == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["write", "dry-run"])
def test_cli_fix_stuck_in_hdf5_exits_2_and_writes_nothing(tmp_path, dry_run):
    """fix reads and plans under --timeout: a file that hangs libhdf5 ends like inspect/scan,
    unchanged, with no lock file or journal left behind."""
    target = tmp_path / "hang.h5"
    shutil.copyfile(HANG, target)
    before = target.read_bytes()
    env, mark = _marked()
    out, elapsed = _cli("fix", "--timeout", TIMEOUT, *(["--dry-run"] if dry_run else []), target, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr == _stopped(target)
    assert out.stdout == ""
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hang.h5"]
    assert TIMEOUT + GRACE - 0.5 < elapsed < LIMIT
    assert _processes_with(mark) == []


def test_cli_fix_jobs_reports_the_stuck_file_and_fixes_the_others(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copyfile(HANG, folder / "a_hang.h5")
    broken = FIXTURES / "k3" / "seed_broken.keras"
    for i in range(2):
        shutil.copyfile(broken, folder / f"b_{i}.keras")
    hang_bytes = (folder / "a_hang.h5").read_bytes()
    env, mark = _marked()
    out, elapsed = _cli("fix", "--jobs", "2", "--timeout", TIMEOUT, "--json", folder, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    doc = json.loads(out.stdout)
    status = {Path(f["path"]).name: (f["status"], f["reason"]) for f in doc["files"]}
    assert status["a_hang.h5"] == ("failed", watchdog.hard_reason(TIMEOUT))
    assert {k: v[0] for k, v in status.items() if k != "a_hang.h5"} == {"b_0.keras": "fixed", "b_1.keras": "fixed"}
    assert (folder / "a_hang.h5").read_bytes() == hang_bytes
    assert sorted(p.name for p in folder.iterdir()) == ["a_hang.h5", "b_0.keras", "b_1.keras"]
    assert elapsed < LIMIT + 30
    assert _processes_with(mark) == []


def test_cli_healthy_run_leaves_no_process_and_relays_the_status(tmp_path):
    env, mark = _marked()
    out, _ = _cli("scan", "--timeout", "30", GOOD, env=env)
    assert out.returncode == 0, out.stderr
    assert _processes_with(mark) == []
    usage, _ = _cli("scan", "--no-such-option", env=env)
    assert usage.returncode == 4
    assert _processes_with(mark) == []


def test_in_process_main_and_api_do_not_fork_a_supervisor():
    out = _py(f"""
        import os, ckptscan
        from ckptscan.cli import main
        me = os.getpid()
        rc = main(["inspect", "--timeout", "30", {str(GOOD)!r}])
        report = ckptscan.scan({str(GOOD)!r}, timeout=30)
        print("PID-SAME", os.getpid() == me, rc, report.files[0].status)
    """)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PID-SAME")]
    assert lines == ["PID-SAME True 0 scanned"]


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _wait_until_blocked_on_fifo(pid: int, timeout: float = 60) -> None:
    """Until a process under ``pid`` waits in the kernel for the FIFO's writer (its
    ``open()`` is under way: a signal now interrupts that call, not the start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kid in _descendants(pid):
            try:
                if Path(f"/proc/{kid}/wchan").read_text().strip() == "wait_for_partner":
                    return
            except OSError:
                pass
        time.sleep(0.05)
    pytest.fail(f"no process under {pid} blocked opening the FIFO within {timeout} s")


#: Runs ``python -m ckptscan ARGS`` with SIGINT set to ``sys.argv[1]`` (``DFL``: as a shell at
#: a terminal starts a command; ``IGN``: as a script's background job). What the test process
#: itself has is not enough: started with SIGINT ignored (a background job), it passes that on.
_WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, getattr(signal, 'SIG_' + sys.argv[1])); "
                "os.execv(sys.executable, [sys.executable, '-m', 'ckptscan', *sys.argv[2:]])")


def _started(args, sigint: str = "DFL") -> tuple[subprocess.Popen, str]:
    env, mark = _marked()
    p = subprocess.Popen([sys.executable, "-c", _WITH_SIGINT, sigint, *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True, text=True, env={**os.environ, **env})
    return p, mark


def _signalled(args, sig, target: str, delay: float | None, ready=None):
    p, mark = _started(args)
    if ready is not None:
        ready(p.pid)
    else:
        time.sleep(delay)
    t0 = time.monotonic()
    if target == "group":  # what Ctrl-C does: the whole foreground process group
        os.killpg(p.pid, sig)
    else:
        os.kill(p.pid, sig)
    out, err = p.communicate(timeout=30)
    return p.returncode, err, time.monotonic() - t0, mark


def _wait_until_stuck(pid: int, timeout: float = 60) -> None:
    """Until a process under ``pid`` has the hang file open and has spent a second of CPU
    since (libhdf5 loops right after opening it; start-up alone is a fraction of that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kid in _descendants(pid):
            try:
                fds = os.listdir(f"/proc/{kid}/fd")
                if any(os.readlink(f"/proc/{kid}/fd/{fd}") == str(HANG) for fd in fds):
                    ticks = os.sysconf("SC_CLK_TCK")
                    start = int(Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()[11])
                    while time.monotonic() < deadline:
                        now = int(Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()[11])
                        if now - start >= ticks:
                            return
                        time.sleep(0.05)
            except OSError:
                continue
        time.sleep(0.05)
    pytest.fail(f"no process under {pid} stuck in {HANG.name} within {timeout} s")


def test_ctrl_c_while_stuck_in_hdf5_exits_130():
    rc, err, after, mark = _signalled(["inspect", "--timeout", "60", HANG], signal.SIGINT, "group", None,
                                      ready=_wait_until_stuck)
    assert rc == 130
    assert err == "ckptscan: interrupted\n"
    assert after < watchdog.INTERRUPT_GRACE + 3
    assert _processes_with(mark) == []


def test_ctrl_c_in_python_code_is_the_childs_own_130(tmp_path):
    fifo = tmp_path / "blocked.keras"
    os.mkfifo(fifo)  # open() blocks in the kernel; SIGINT interrupts it
    rc, err, after, mark = _signalled(["inspect", "--timeout", "60", fifo], signal.SIGINT, "group", None,
                                      ready=_wait_until_blocked_on_fifo)  # not a fixed delay: a loaded
    # machine may still be starting the child after seconds, and Ctrl-C then lands elsewhere
    assert rc == 130
    assert "Traceback" not in err and "interrupted" not in err  # no second report by the supervisor
    assert after < watchdog.INTERRUPT_GRACE
    assert _processes_with(mark) == []


def test_ctrl_c_is_ignored_when_started_ignoring_it(tmp_path):
    """A CLI started with SIGINT ignored (a script's background job) ignores Ctrl-C in both
    processes: the supervisor does not stop the child after its grace (the child, which
    inherited the disposition, would never have exited by itself)."""
    fifo = tmp_path / "blocked.keras"
    os.mkfifo(fifo)
    p, mark = _started(["inspect", "--timeout", "60", fifo], sigint="IGN")
    try:
        _wait_until_blocked_on_fifo(p.pid)
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(watchdog.INTERRUPT_GRACE + 1.5)  # the supervisor looks at least every 0.5 s
        assert p.poll() is None
        # now the child reads the file and ends as for any bad input (non-blocking: a child
        # that was stopped after all leaves no reader, ENXIO, rather than a hung test)
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"not a checkpoint")
        finally:
            os.close(w)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 2
    assert "interrupted" not in err and "Traceback" not in err
    assert err.startswith("ckptscan: error: ")
    assert _processes_with(mark) == []


def test_sigterm_to_the_supervisor_reaches_the_child():
    rc, err, after, mark = _signalled(["inspect", "--timeout", "60", HANG], signal.SIGTERM, "pid", None,
                                      ready=_wait_until_stuck)
    assert rc == -signal.SIGTERM
    assert after < 3
    time.sleep(0.2)
    assert _processes_with(mark) == []


# --- CKPTSCAN_HARD_GRACE ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "grace"), [(None, watchdog.HARD_GRACE), ("", watchdog.HARD_GRACE),
                                             ("0.25", 0.25), (" 12 ", 12.0), ("0", watchdog.HARD_GRACE),
                                             ("-1", watchdog.HARD_GRACE), ("nan", watchdog.HARD_GRACE),
                                             ("inf", watchdog.HARD_GRACE), ("5s", watchdog.HARD_GRACE)])
def test_hard_grace_from_the_environment(monkeypatch, text, grace):
    """A positive number of seconds is taken; anything else falls back to the default (the
    API never fails a file for it; the CLI refuses it, below)."""
    if text is None:
        monkeypatch.delenv(watchdog.HARD_GRACE_ENV, raising=False)
    else:
        monkeypatch.setenv(watchdog.HARD_GRACE_ENV, text)
    assert watchdog.hard_grace() == grace


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "5s"])
def test_cli_refuses_a_malformed_hard_grace(monkeypatch, capsys, text):
    from ckptscan.cli import main

    monkeypatch.setenv(watchdog.HARD_GRACE_ENV, text)
    assert main(["scan", str(GOOD)]) == 4
    err = " ".join(capsys.readouterr().err.translate(str.maketrans("│╭╮╰╯─", "      ")).split())  # Typer's box
    assert f"CKPTSCAN_HARD_GRACE: {text!r} is not a positive number of seconds (default 5)" in err
