"""The CLI supervisor: the parent process that watches the command's process (see :mod:`.watchdog`)."""

from __future__ import annotations

import signal
import time
from typing import Callable

from .watchdog import (
    _CH,
    INTERRUPT_GRACE,
    STUCK_ENV,
    SUPERVISOR_ENV,
    _decode,
    hard_reason,
)

# --- the CLI supervisor -------------------------------------------------------------------


def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux: the feature is simply absent
        return False


_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def supervise(command: str | None = None, on_hard_stop: Callable[[str], None] | None = None) -> None:
    """Fork the CLI into a supervisor (this call never returns there) and a worker child.

    Returns in the child, whose :func:`file_timeout` then reports to the supervisor. The
    supervisor waits for the child and exits with its status (a child killed by signal N
    is relayed as signal N, except a crash inside a file: SIGSEGV, SIGBUS, SIGILL, SIGFPE
    or SIGABRT while the child reads a file gives ``ckptscan: error: <file>: the reader
    crashed (SIGSEGV) on this file; stopped`` and exit 2, as for any unreadable file; for
    ``scan``, one more line says that no report was written). If the child stays in one
    file past ``--timeout`` plus :data:`HARD_GRACE` (stuck in C code), the supervisor
    SIGKILLs it, prints
    ``ckptscan: error: <file>: timed out after N s (--timeout); stuck in the HDF5 library,
    stopped`` and exits 2; for ``scan``, one more line says that no report was written.
    Ctrl-C reaches the child (same process group); a child stuck in a file that does not
    exit within :data:`INTERRUPT_GRACE` is stopped and the exit status is 130 (unless the
    program started with SIGINT ignored, as a script's background job does: then neither
    process reacts to it; SIGTERM, SIGHUP and SIGQUIT are forwarded to the child unless
    ignored at start in the same way). The
    supervisor is also the subreaper of the child's processes (Linux): none outlives it.

    ``on_hard_stop(path)`` runs in the supervisor after it stopped the child in ``path``
    (``fix`` drops the lock file the child held; the runtime knows nothing of it).

    Does nothing without ``fork``, when already supervised, or with ``CKPTSCAN_SUPERVISOR=0``.
    """
    import os
    import sys

    if not hasattr(os, "fork") or os.environ.get(SUPERVISOR_ENV) == "0" or _CH.fd is not None:
        return
    # created by the first pool worker that gets stuck (unguessable name), removed at the end
    stuck = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"ckptscan-{os.getpid()}-{os.urandom(8).hex()}.stuck")
    os.environ[STUCK_ENV] = stuck
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    r, w = os.pipe()
    subreaper = sys.platform.startswith("linux") and _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: run unsupervised (the watchdog then applies)
        os.close(r)
        os.close(w)
        return
    if pid == 0:
        os.close(r)
        _CH.fd, _CH.owner, _CH.watchdog, _CH.armed = w, os.getpid(), None, None
        if sys.platform.startswith("linux"):
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the supervisor died before prctl
                os._exit(1)
        return
    os.close(w)
    code = 1
    try:
        code = _supervise_loop(r, pid, command, on_hard_stop)
    finally:
        if subreaper:
            _reap_orphans()
        try:
            os.unlink(stuck)
        except OSError:  # nothing got stuck in a pool worker: never created
            pass
        _exit_like(code)


def _supervise_loop(rfd: int, child: int, command: str | None,
                    on_hard_stop: Callable[[str], None] | None = None) -> int | tuple[str, int]:
    """Watch ``child``; returns its exit code, or ("signal", N) when a signal killed it."""
    import os
    import select

    interrupted: list[float] = []
    forward = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None),
                           getattr(signal, "SIGQUIT", None)) if s is not None]

    def on_interrupt(signum, frame):
        interrupted.append(time.monotonic())

    def on_forward(signum, frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    # a signal this process was started ignoring stays ignored, as it is in the child, which
    # inherited that (a script's background job ignores SIGINT, ``nohup`` SIGHUP): Ctrl-C
    # meant for the script's foreground command must not stop the child after the grace
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_interrupt)
    for s in forward:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, on_forward)
    armed = None
    buf = b""
    eof = False
    while True:
        if not eof:
            wait = 0.5 if armed is None else max(0.0, min(0.5, armed[0] - time.monotonic()))
            try:
                ready, _, _ = select.select([rfd], [], [], wait)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
            if ready:
                data = os.read(rfd, 65536)
                if data:
                    armed, buf = _take(data, armed, buf)
                else:
                    eof = True
        done, status = os.waitpid(child, 0 if eof else os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                if not eof:  # what the child wrote before it died says which file it was in
                    armed, buf = _drain(rfd, armed, buf)
                if sig in _CRASHES and armed is not None:
                    return _report_crash(sig, armed[2], command, on_hard_stop)
                return ("signal", sig)
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
        now = time.monotonic()
        if armed is not None and now >= armed[0]:
            _kill_and_reap(child)
            _, seconds, path = armed
            return _stopped_in(path, hard_reason(seconds), command, on_hard_stop)
        if interrupted and armed is not None and now - interrupted[0] >= INTERRUPT_GRACE:
            _kill_and_reap(child)
            os.write(2, b"ckptscan: interrupted\n")
            return 130


#: Signals that mean the child crashed (in C code: libhdf5, numpy) rather than was stopped.
_CRASHES = frozenset(getattr(signal, n) for n in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT") if hasattr(signal, n))


def _take(data: bytes, armed, buf: bytes):
    """``data`` read from the child's pipe, added to ``buf``: the last whole arm/disarm
    line wins. Returns (armed, what is left of an unfinished line)."""
    *lines, buf = (buf + data).split(b"\n")
    for line in lines:
        armed = _decode(line) if line.startswith(b"A ") else None
    return armed, buf


def _drain(rfd: int, armed, buf: bytes):
    """Read what a child that has exited left in the pipe (:func:`_take`). Never blocks (a
    process the child started may still hold the pipe open)."""
    import os
    import select

    while True:
        try:
            ready, _, _ = select.select([rfd], [], [], 0)
            data = os.read(rfd, 65536) if ready else b""
        except OSError:  # pragma: no cover
            break
        if not data:
            break
        armed, buf = _take(data, armed, buf)
    return armed, buf


def _report_crash(sig: int, path: str, command: str | None, on_hard_stop: Callable[[str], None] | None) -> int:
    """The child died of ``sig`` while it read ``path``: reported like an unreadable file
    (a crash is a file the reader did not survive: libhdf5 on some malformed inputs, or
    when an allocation fails under ``--max-memory``)."""
    try:
        name = signal.Signals(sig).name
    except ValueError:  # pragma: no cover - every crash signal has a name
        name = f"signal {sig}"
    return _stopped_in(path, f"the reader crashed ({name}) on this file; stopped", command, on_hard_stop)


def _stopped_in(path: str, reason: str, command: str | None, on_hard_stop: Callable[[str], None] | None) -> int:
    """The child was stopped (or died) in ``path``: ``on_hard_stop(path)`` (``fix`` drops
    the lock file the child held; the journal decides the rest), one error line naming the
    file, for ``scan`` one more saying that no report was written; exit status 2."""
    import os

    if on_hard_stop is not None:
        try:
            on_hard_stop(path)
        except Exception:  # pragma: no cover - the error line matters more
            pass
    lines = f"ckptscan: error: {path}: {reason}\n"
    if command == "scan":
        lines += "ckptscan: scan stopped: no report written; scan with --jobs 2 to report this file and the others\n"
    os.write(2, lines.encode("utf-8", "replace"))
    return 2


def _kill_and_reap(pid: int) -> None:
    import os

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover
        pass


def _children() -> list[int]:
    """pids whose parent is this process (Linux /proc)."""
    import os

    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            out.append(int(name))
    return out


def _reap_orphans(grace: float = 2.0) -> None:
    """As subreaper: wait (up to ``grace`` s) for processes the child left, then kill them."""
    import os

    end = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > end:
            break
        time.sleep(0.01)
    for pid in _children():  # pragma: no cover - orphans exit when their pipes close
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _exit_like(code: int | tuple[str, int]) -> None:
    """Leave the supervisor with ``code``, or die of the same signal as the child."""
    import os

    if isinstance(code, tuple):
        sig = code[1]
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            time.sleep(0.1)
        except (OSError, ValueError):  # pragma: no cover
            pass
        os._exit(128 + sig)
    os._exit(code)
