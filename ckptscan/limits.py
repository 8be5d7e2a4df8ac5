"""Per-file resource limits: a wall-clock ``--timeout`` and the memory bounds readers obey.

Time: :func:`file_timeout` arms ``SIGALRM`` (``signal.setitimer``) around the work on one
file and raises :class:`~ckptscan.errors.FileTimeoutError` when it fires, so a bulk run
reports the file and goes on. Python delivers the signal between bytecodes: a single
call into the HDF5 C library finishes before the timeout is raised (no such call in
ckptscan reads more than one bounded block). Outside the main thread, or where
``setitimer`` does not exist (Windows), the context manager does nothing.

Memory: every reader refuses, before allocating, any structure whose declared size
exceeds the constants below, and reads tensor values block by block
(:meth:`ckptscan.formats.base.Checkpoint.iter_blocks`). A ``MemoryError`` that still
happens is reported as :class:`~ckptscan.errors.LimitExceededError` for that file.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from .errors import FileTimeoutError

#: Default ``--timeout`` (seconds per file) of the read-only commands; 0 disables it.
DEFAULT_TIMEOUT = 300.0

#: Declared-but-unstored dataset bytes refused above this (a "shape bomb": a huge shape
#: over no or tiny storage; Keras always writes every byte of every weight).
MAX_UNBACKED_BYTES = 256 << 20
#: A filtered (compressed) dataset may expand at most this much over its stored bytes
#: once it declares more than :data:`MAX_UNBACKED_BYTES`.
MAX_DATASET_EXPANSION = 1000
#: Largest JSON document read (``config.json``, ``metadata.json``, sharded index).
MAX_JSON_BYTES = 64 << 20
#: Deepest JSON nesting accepted (Python's parser would otherwise hit RecursionError).
MAX_JSON_DEPTH = 200
#: Largest attribute read (elements times item size; vlen strings counted per element).
MAX_ATTR_BYTES = 64 << 20
#: Most elements in one list attribute (``layer_names``, ``weight_names``).
MAX_ATTR_ELEMS = 1 << 20
#: Deepest group nesting walked in an HDF5 file.
MAX_GROUP_DEPTH = 64
#: A compressed zip member may expand at most this much (Keras' own ``_reject_zip_bomb``)
#: once it is larger than :data:`MAX_SMALL_MEMBER`.
MAX_ZIP_EXPANSION = 100
MAX_SMALL_MEMBER = 256 << 20
#: Largest compressed member inflated to a temporary file.
MAX_INFLATED = 64 << 30


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


#: Seconds past ``--timeout`` after which the watchdog stops a process stuck in C code.
HARD_GRACE = 5.0


def _start_watchdog(seconds: float, path: object) -> int | None:
    """Fork a process that kills this one if it is still running after the deadline."""
    import os
    import sys

    if not hasattr(os, "fork"):
        return None
    line = f"ckptscan: error: {path}: timed out after {seconds:g} s (--timeout); stuck in the HDF5 library, stopped\n"
    parent = os.getpid()
    try:
        sys.stderr.flush()
    except Exception:  # pragma: no cover
        pass
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: no Python cleanup, no inherited handlers, only sleep and maybe kill
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(seconds + HARD_GRACE)
        if os.getppid() == parent:
            os.write(2, line.encode("utf-8", "replace"))
            os.kill(parent, signal.SIGKILL)
    finally:
        os._exit(0)


def _stop_watchdog(pid: int | None) -> None:
    import os

    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # pragma: no cover
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover
        pass


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def file_timeout(seconds: float | None, path: object, hard: bool = True) -> Iterator[None]:
    """Raise :class:`FileTimeoutError` for ``path`` if the block runs over ``seconds``.

    ``None`` or ``<= 0`` disables the limit. Nested use keeps the outer deadline: an
    inner limit never extends it, and the outer timer is re-armed with what is left.

    ``hard``: a corrupt file can send the HDF5 C library into a loop that never returns
    to Python, so no signal handler runs. A watchdog process then stops the process
    :data:`HARD_GRACE` seconds after the deadline, printing the usual error line first
    (exit status 137, SIGKILL). Crash-isolating runners (``scan --jobs``) report that
    file as unreadable and go on.

    >>> with file_timeout(30, "model.keras"):
    ...     pass
    """
    if not seconds or seconds <= 0 or not hasattr(signal, "setitimer") or not _main_thread():
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

    signal.signal(signal.SIGALRM, _on_alarm)
    _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = start + seconds, path, seconds
    watchdog = _start_watchdog(seconds, path) if hard else None
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _stop_watchdog(watchdog)
        finally:
            _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = saved
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_left:
                left = outer_left - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
