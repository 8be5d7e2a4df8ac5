"""The per-file wall-clock ``--timeout`` (``SIGALRM``, plus the hard stop of :mod:`.watchdog`).

:func:`file_timeout` arms ``SIGALRM`` (``signal.setitimer``) around the work on one
file and raises :class:`~ckptscan.errors.FileTimeoutError` when it fires, so a bulk run
reports the file and goes on. Python delivers the signal between bytecodes: a single
call into the HDF5 C library finishes before the timeout is raised (no such call in
ckptscan reads more than one bounded block). Outside the main thread, or where
``setitimer`` does not exist (Windows), the context manager does nothing. A call that
never returns to Python (libhdf5 looping on a corrupt B-tree) is stopped from outside by
the process's watcher (:mod:`.supervisor` under the CLI, else :mod:`.watchdog`).

:func:`file_scope` is the scope of the work on one file: its timeout, then the memory
of a file that hit ``--max-memory`` given back (:func:`~.memory.memory_recover`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from ..errors import FileTimeoutError
from . import watchdog
from .memory import memory_recover


class _Deadline:
    """The deadline of the innermost :func:`file_timeout` (checked by every HDF5 read)."""

    at: float | None = None
    path: object = None
    seconds: float = 0.0


_DEADLINE = _Deadline()


def check_deadline() -> None:
    """Raise :class:`FileTimeoutError` if the current file's deadline has passed.

    Called from every read the HDF5 library makes through
    :class:`~ckptscan.formats.zipmember.FileWindow`: a corrupt B-tree that sends the C
    library round in circles re-reads the file, and each read then fails, so the
    library gives up even though a Python signal handler cannot interrupt it.
    """
    at = _DEADLINE.at
    if at is not None and time.monotonic() >= at:
        raise FileTimeoutError(_DEADLINE.path, f"timed out after {_DEADLINE.seconds:g} s (--timeout)")


def expired() -> FileTimeoutError | None:
    """The timeout error to report if the current deadline has passed, else None."""
    try:
        check_deadline()
    except FileTimeoutError as exc:
        return exc
    return None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def file_scope(seconds: float | None, path: object, hard: bool = True) -> Iterator[None]:
    """The work on one file: :func:`file_timeout`, then, the file closed, the memory of a
    file that hit ``--max-memory`` given back at once (:func:`~.memory.memory_recover`)
    rather than when the next file opens.

    >>> with file_scope(30, "model.keras"):
    ...     pass
    """
    try:
        with file_timeout(seconds, path, hard):
            yield
    finally:
        memory_recover()


@contextlib.contextmanager
def file_timeout(seconds: float | None, path: object, hard: bool = True) -> Iterator[None]:
    """Raise :class:`FileTimeoutError` for ``path`` if the block runs over ``seconds``.

    ``None`` or ``<= 0`` disables the limit. Nested use keeps the outer deadline: an
    inner limit never extends it, and the outer timer is re-armed with what is left.

    ``hard``: a corrupt file can send the HDF5 C library into a loop that never returns
    to Python, so no signal handler runs. The process's watcher (:mod:`.watchdog`) then
    stops it :func:`~.watchdog.hard_grace` seconds after the deadline (5 s unless
    ``CKPTSCAN_HARD_GRACE`` says otherwise): under the CLI
    the supervisor prints ``ckptscan: error: <file>: timed out after N s (--timeout);
    stuck in the HDF5 library, stopped`` and exits 2; elsewhere the process's watchdog
    prints that line and SIGKILLs the process (``scan --jobs`` workers: the pool reports
    that file with this reason and goes on). Arming costs one pipe write per file.
    A file already stopped this way in the current CLI run
    (:func:`~.watchdog.stuck_reason`) fails at once.

    >>> with file_timeout(30, "model.keras"):
    ...     pass
    """
    if not seconds or seconds <= 0:
        yield
        return
    stuck = watchdog.stuck_reason(path)
    if stuck is not None:
        raise FileTimeoutError(path, stuck)
    if not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.getsignal(signal.SIGALRM)
    if outer_handler is None:  # installed from C: cannot be restored, fall back to default
        outer_handler = signal.SIG_DFL
    if outer_left and outer_left < seconds:
        # the outer deadline comes first: let the outer handler fire, as it would have
        yield
        return
    start = time.monotonic()
    fired = []
    saved = (_DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds)

    def _on_alarm(signum, frame):
        if not fired:
            fired.append(True)
            raise FileTimeoutError(path, f"timed out after {seconds:g} s (--timeout)")

    hard_saved = watchdog._CH.armed
    try:
        # armed inside the try: a short timeout fires within setitimer itself, and the
        # finally must still restore the deadline, the handler and the watchdog
        signal.signal(signal.SIGALRM, _on_alarm)
        _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = start + seconds, path, seconds
        if hard:
            watchdog._arm((start + seconds + watchdog.hard_grace(), float(seconds), str(path)))
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if hard:
                watchdog._arm(hard_saved)
        finally:
            _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = saved
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_left:
                left = outer_left - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
