"""The hard stop: a watcher process that kills a process stuck in one C call past its deadline."""

from __future__ import annotations

import os
import signal
import time

# --- the hard stop -----------------------------------------------------------------------
#
# A corrupt file can send libhdf5 round in circles inside one C call that holds the GIL:
# neither SIGALRM nor check_deadline() runs again. Only another process can stop it. Each
# process has one *watcher*, told over a pipe what it is working on:
#
#   b"A <kill_at> <seconds> <path>\n"   armed: stop me at time.monotonic() == kill_at
#   b"D\n"                              disarmed
#
# (CLOCK_MONOTONIC is system-wide, so the watcher compares it with its own clock.)
#
# * Under the CLI the watcher is the *supervisor* (:func:`supervise`): ``main()`` forks
#   once at start; the parent only waits. When a deadline passes it SIGKILLs the child,
#   prints the one error line and exits 2; otherwise it relays the child's exit status.
# * Elsewhere (the Python API, ``scan --jobs`` pool workers, in-process ``main(argv)``)
#   the first hard :func:`file_timeout` forks one long-lived *watchdog* for the process;
#   every later file only writes to its pipe. The watchdog exits when the pipe closes
#   (the process exited) and is reaped at exit. In a pool worker run under the supervisor
#   it records the stuck file (``CKPTSCAN_STUCK_FILE``) before stopping the worker, so the
#   pool's one-at-a-time retry of that file reports the timeout at once instead of hanging
#   again; the other files' results are kept.

#: Seconds past ``--timeout`` after which the watcher stops a process stuck in C code
#: (the default; :func:`hard_grace` gives the one in force).
HARD_GRACE = 5.0
#: The environment variable that changes :data:`HARD_GRACE` (seconds, > 0).
HARD_GRACE_ENV = "CKPTSCAN_HARD_GRACE"
#: After Ctrl-C, seconds the supervisor waits for a child stuck in a file before stopping it.
INTERRUPT_GRACE = 2.0
#: The environment variable naming the list of files that hung a pool worker.
STUCK_ENV = "CKPTSCAN_STUCK_FILE"
#: Set to ``0`` to run the CLI without a supervisor process (debugging).
SUPERVISOR_ENV = "CKPTSCAN_SUPERVISOR"


def hard_grace(strict: bool = False) -> float:
    """Seconds past ``--timeout`` before the hard stop: ``CKPTSCAN_HARD_GRACE`` when set,
    else :data:`HARD_GRACE`. A shorter grace stops a stuck file sooner (it burns a core
    until then); a longer one gives a slow but legitimate C call (a large compressed chunk
    on a loaded machine) more time to return and time out softly. A value that is not a
    positive number of seconds raises ``ValueError`` when ``strict`` (the CLI refuses it at
    start, exit 4), and otherwise falls back to the default, so it never fails a file."""
    text = os.environ.get(HARD_GRACE_ENV, "").strip()
    if not text:
        return HARD_GRACE
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if 0 < value < float("inf"):
        return value
    if strict:
        raise ValueError(f"{text!r} is not a positive number of seconds (default {HARD_GRACE:g})")
    return HARD_GRACE


def hard_reason(seconds: float) -> str:
    """The reason reported for a file stopped by the hard limit."""
    return f"timed out after {seconds:g} s (--timeout); stuck in the HDF5 library, stopped"


class _Channel:
    """This process's pipe to its watcher."""

    fd: int | None = None
    """Write end of the pipe (None: no watcher yet)."""
    owner: int | None = None
    """The pid that owns ``fd`` (a forked child must not use its parent's)."""
    watchdog: int | None = None
    """pid of our own watchdog process; None when the supervisor watches us."""
    armed: tuple[float, float, str] | None = None
    """(kill_at, seconds, path) last sent."""


_CH = _Channel()


def _forget_after_fork() -> None:
    """In a forked child: the parent's pipe and watchdog are not ours."""
    import os

    if _CH.fd is not None:
        try:
            os.close(_CH.fd)
        except OSError:  # pragma: no cover
            pass
    _CH.fd = _CH.owner = _CH.watchdog = None
    _CH.armed = None


def _register_fork_hook() -> None:
    import os

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_after_fork)


_register_fork_hook()


def _encode(kill_at: float, seconds: float, path: str) -> bytes:
    name = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    msg = f"A {kill_at!r} {seconds!r} {name}\n".encode("utf-8", "surrogateescape")
    if len(msg) > 4000:  # one atomic pipe write (PIPE_BUF); the name is only for the message
        msg = msg[:3990] + b"...\n"
    return msg


def _decode(line: bytes) -> tuple[float, float, str] | None:
    if not line.startswith(b"A "):
        return None
    _, kill_at, seconds, name = line.split(b" ", 3)
    path = name.decode("utf-8", "surrogateescape").replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
    return float(kill_at), float(seconds), path


def _send(msg: bytes) -> bool:
    import os

    try:
        os.write(_CH.fd, msg)
        return True
    except OSError:  # the watcher is gone: no hard stop from now on, start a new one next time
        _drop_watchdog()
        return False


def _ensure_watcher() -> bool:
    """A watcher for this process: the supervisor's pipe, or our own watchdog (started now)."""
    import os

    if _CH.fd is not None and _CH.owner == os.getpid():
        return True
    _CH.fd = None
    return _start_watchdog()


def _arm(state: tuple[float, float, str] | None) -> None:
    if state is None:
        if _CH.fd is not None and _CH.armed is not None:
            _send(b"D\n")
        _CH.armed = None
        return
    if _ensure_watcher() and _send(_encode(*state)):
        _CH.armed = state


def _start_watchdog() -> bool:
    """Fork this process's watchdog (once); False where ``fork`` does not exist."""
    import os
    import sys

    if not hasattr(os, "fork"):
        return False
    import json  # noqa: F401 - imported before the fork: the watchdog uses it to record a stuck file
    import select  # noqa: F401

    r, w = os.pipe()
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    pid = os.fork()
    if pid == 0:  # the watchdog: no Python cleanup, only wait on the pipe and maybe kill
        try:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # hold none of the parent's files open (pipes it closes, sockets, checkpoints)
            # but the pipe and stderr
            if r > 2:
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.closerange(3, r)
                os.closerange(r + 1, 1 << 16)
            _watchdog_loop(r, parent)
        finally:
            os._exit(0)
    os.close(r)
    _CH.fd, _CH.owner, _CH.watchdog, _CH.armed = w, parent, pid, None
    _at_exit_once()
    return True


def _watchdog_loop(rfd: int, parent: int) -> None:
    """Sleep until the armed deadline; stop ``parent`` if it is still armed then."""
    import os
    import select

    armed = None
    buf = b""
    while True:
        wait = 1.0 if armed is None else max(0.0, min(1.0, armed[0] - time.monotonic()))
        ready, _, _ = select.select([rfd], [], [], wait)
        if ready:
            data = os.read(rfd, 65536)
            if not data:
                return  # the process closed the pipe: it exited
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                armed = _decode(line) if line.startswith(b"A ") else None
        if os.getppid() != parent:
            return
        if armed is not None and time.monotonic() >= armed[0]:
            _, seconds, path = armed
            if not _record_stuck(path, hard_reason(seconds)):
                line = f"ckptscan: error: {path}: {hard_reason(seconds)}\n"
                os.write(2, line.encode("utf-8", "replace"))
            os.kill(parent, signal.SIGKILL)
            return


def _drop_watchdog() -> None:
    """Close our watchdog's pipe (it then exits) and reap it."""
    import os

    fd, pid = _CH.fd, _CH.watchdog
    owner = _CH.owner
    _CH.fd = _CH.owner = _CH.watchdog = None
    _CH.armed = None
    if fd is not None and owner == os.getpid():
        try:
            os.close(fd)
        except OSError:  # pragma: no cover
            pass
    if pid is None or owner != os.getpid():
        return
    end = time.monotonic() + 1.0
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > end:
            break
        time.sleep(0.002)
    if not done:  # pragma: no cover - the watchdog always sees the pipe close
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_AT_EXIT = []


def _at_exit_once() -> None:
    if not _AT_EXIT:
        import atexit

        atexit.register(_drop_watchdog)
        _AT_EXIT.append(True)


# --- files that hung a pool worker --------------------------------------------------------


def _record_stuck(path: str, reason: str) -> bool:
    """Append ``path`` to the supervisor's stuck list; False when there is none."""
    import json
    import os

    target = os.environ.get(STUCK_ENV)
    if not target:
        return False
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return False
    try:
        os.write(fd, (json.dumps([path, reason]) + "\n").encode("utf-8", "surrogateescape"))
    except OSError:  # pragma: no cover
        return False
    finally:
        os.close(fd)
    return True


def stuck_reason(path: object) -> str | None:
    """Why ``path`` was stopped earlier in this CLI run (it hung a worker), else None."""
    import json
    import os

    target = os.environ.get(STUCK_ENV)
    if not target:
        return None
    try:
        if os.path.getsize(target) == 0:
            return None
        with open(target, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    p, reason = json.loads(line)
                except ValueError:
                    continue
                if p == str(path):
                    return reason
    except OSError:
        return None
    return None
