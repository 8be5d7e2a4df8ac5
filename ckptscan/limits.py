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


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def file_timeout(seconds: float | None, path: object) -> Iterator[None]:
    """Raise :class:`FileTimeoutError` for ``path`` if the block runs over ``seconds``.

    ``None`` or ``<= 0`` disables the limit. Nested use keeps the outer deadline: an
    inner limit never extends it, and the outer timer is re-armed with what is left.

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

    def _on_alarm(signum, frame):
        if not fired:
            fired.append(True)
            raise FileTimeoutError(path, f"timed out after {seconds:g} s (--timeout)")

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_left:
                left = outer_left - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
