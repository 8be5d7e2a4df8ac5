"""The screening pass over a local data shard: CRC32C and "all finite?" of many tensors
at once, on two threads.

A clean checkpoint is the common case, and for a clean float tensor the scan needs two
facts only: its stored bytes match the CRC32C in the index, and it holds no NaN/±Inf.
:func:`screen` establishes both for a list of tensors in one pass over the shard, in
offset order, split by bytes between the calling thread and one worker thread. Every
costly step of a block runs without the GIL, so the two threads overlap on two cores:

* the read is ``os.pread`` into a fresh ``bytes`` object (the interpreter releases the
  GIL around the system call);
* the CRC32C is ``google_crc32c.extend`` on that ``bytes`` object: the C extension
  releases the GIL for ``bytes`` of 1 MiB or more (:data:`BLOCK` is 1 MiB), and only
  for ``bytes`` (a numpy buffer it reads holding the GIL, ``_crc32c.c``);
* "all finite?" of a float32/float64 block is one BLAS dot product with a zero vector
  (numpy releases the GIL around BLAS): every product ``x * 0`` is ``0`` for finite
  ``x`` and NaN for NaN and ±Inf, so the sum is NaN exactly when a value is not finite,
  and it cannot overflow. :func:`_dot_is_exact` checks that property of the BLAS
  numpy was built with once per process; where it does not hold (or for float16) the
  test is ``np.isfinite(block).all()``, exact everywhere.

What it does not do: count NaN/Inf or find their indices. A tensor that is not all
finite is left to the engine's full pass (:func:`ckptscan.stats.count_values`), which
re-reads it; that is the rare case, and it keeps this pass small. Memory: one block per
thread plus the values kept for the caller (the BN vectors, a few KB each).
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import MalformedArchiveError
from . import crc

#: Bytes per read: google-crc32c's GIL threshold for ``bytes``.
BLOCK = 1 << 20
#: Threads of the pass (the caller's and one more): more gained nothing on a 2-core
#: machine and would compete with ``--jobs`` worker processes on any machine.
THREADS = 2
#: Below this many bytes in all the second thread costs more than it saves.
MIN_PARALLEL_BYTES = 8 << 20
#: Bytes of tensors per unit of work the threads take from their shared queue.
CHUNK = 4 << 20
_DOT_OK: bool | None = None
_ZEROS: dict[str, np.ndarray] = {}


@dataclass(frozen=True)
class Item:
    """One contiguous tensor of a data shard to screen."""

    path: str
    """The variable's path (the key of the result)."""
    fd: int
    offset: int
    nbytes: int
    dtype: np.dtype
    """The stored dtype (float16/32/64)."""
    crc32c: int | None
    """Masked CRC32C from the index (None: not checked)."""
    keep: bool = False
    """Return the values instead of testing them (the caller counts them itself; meant
    for small tensors, which are held in memory): ``finite`` is None for it."""


@dataclass
class Screened:
    """What :func:`screen` found."""

    finite: dict[str, bool | None] = field(default_factory=dict)
    """Path → all values finite (None for an item with ``keep``: not tested)."""
    crc_ok: dict[str, bool] = field(default_factory=dict)
    """Path → the stored bytes match the index's CRC32C (True when the index has none)."""
    values: dict[str, np.ndarray] = field(default_factory=dict)
    """Path → the flat stored values of every item with ``keep`` (a new, writable array)."""
    done: int = 0
    """Bytes of the items without ``keep`` screened so far, by every thread (the caller
    accounts for the kept ones when it counts them)."""


def _dot_is_exact() -> bool:
    """True when ``dot(x, 0)`` is NaN for any NaN/±Inf in ``x`` and 0 otherwise, for both
    BLAS float types (checked on values at several positions of a block, so that the
    BLAS kernel's unrolled and tail paths are both seen)."""
    global _DOT_OK
    if _DOT_OK is None:
        _DOT_OK = _check_dot()
    return _DOT_OK


@np.errstate(invalid="ignore", over="ignore")
def _check_dot() -> bool:
    ok = True
    for dt in (np.float32, np.float64):
        z = np.zeros(1031, dtype=dt)
        x = np.linspace(-3e3, 3e3, 1031).astype(dt)
        x[7] = np.finfo(dt).max
        x[8] = np.finfo(dt).tiny / 4  # subnormal
        ok &= bool(np.dot(x, z) == 0)
        for bad in (np.nan, np.inf, -np.inf):
            for pos in (0, 5, 517, 1030):
                y = x.copy()
                y[pos] = bad
                ok &= bool(np.isnan(np.dot(y, z)))
    return ok


def _zeros(dtype: np.dtype, n: int) -> np.ndarray:
    z = _ZEROS.get(dtype.str)
    if z is None or z.size < n:
        z = _ZEROS[dtype.str] = np.zeros(BLOCK // dtype.itemsize, dtype=dtype)
    return z[:n]


def _all_finite(x: np.ndarray, dot: bool) -> bool:
    """True when no value of ``x`` is NaN/±Inf (the caller ignores "invalid" warnings:
    ``inf * 0`` is how the dot test answers)."""
    if dot and x.dtype.itemsize >= 4 and x.size:
        s = np.dot(x, _zeros(x.dtype, x.size))
        return bool(s == s)
    return bool(np.isfinite(x).all())


def _run(where: str, items: list[Item], out: Screened, stop: threading.Event, dot: bool,
         progress: Callable[[int], None] | None = None) -> None:
    """Screen ``items`` (in offset order) through a window of :data:`BLOCK` bytes.

    The window is one ``os.pread`` of a whole :data:`BLOCK` (every read the same size,
    so the allocator hands back the same memory and no page is faulted in anew; reading
    each tensor's own length cost 4x the time in page faults). A tensor is checked piece
    by piece as the window moves over it; a piece that is a whole window is passed to
    the CRC32C as the ``bytes`` object (the GIL is released), a partial one as a numpy
    view of it (no copy). The window is refreshed at the current position whenever it
    does not hold the next whole element, so no element ever straddles two windows.
    """
    win = b""
    win_fd = win_off = -1
    last = items[-1] if items else None
    run_end = last.offset + last.nbytes if last else 0
    with np.errstate(invalid="ignore"):
        for it in items:
            if stop.is_set():
                return
            running = 0
            finite = None if it.keep else True
            kept = []
            step = it.dtype.itemsize
            pos, end = it.offset, it.offset + it.nbytes
            while pos < end:
                if win_fd != it.fd or pos < win_off or pos + step > win_off + len(win):
                    if stop.is_set():
                        return
                    # a whole BLOCK, except at the end of the run: never past its last tensor
                    n = BLOCK if it.fd != last.fd else max(step, min(BLOCK, run_end - pos))
                    win, win_fd, win_off = os.pread(it.fd, n, pos), it.fd, pos
                lo = pos - win_off
                hi = lo + (min(len(win), end - win_off) - lo) // step * step
                if hi <= lo:
                    raise MalformedArchiveError(where, f"{it.path}: data shard ends early (truncated)")
                whole = lo == 0 and hi == len(win)
                running = crc.crc32c(win if whole else np.frombuffer(win, np.uint8, hi - lo, lo), where, running)
                values = np.frombuffer(win, it.dtype, (hi - lo) // step, lo)
                if it.keep:
                    kept.append(values.copy())
                elif finite:
                    finite = _all_finite(values, dot)
                pos = win_off + hi
            if it.keep:
                out.values[it.path] = kept[0] if len(kept) == 1 else np.concatenate(kept)
            out.finite[it.path] = finite
            out.crc_ok[it.path] = it.crc32c is None or crc.mask(running) == it.crc32c
            if not it.keep:
                out.done += it.nbytes  # one thread's += races another's: a progress figure only
                if progress is not None:
                    progress(out.done)


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    """``items`` in offset order, cut into runs of at least ``size`` bytes (a tensor is
    never split: its CRC32C runs over it in order)."""
    runs: list[list[Item]] = []
    run: list[Item] = []
    held = 0
    for it in sorted(items, key=lambda it: (it.fd, it.offset)):
        run.append(it)
        held += it.nbytes
        if held >= size:
            runs.append(run)
            run, held = [], 0
    return runs + [run] if run else runs


class Pass:
    """A screening pass over ``items``, started at once on a worker thread.

    The items are cut into runs of :data:`CHUNK` bytes in shard order; the worker takes
    them one by one from the front of a shared queue, and so does the caller's thread
    in :meth:`finish`, so neither waits on a fixed half the other has not finished.
    :meth:`cancel` stops the worker after its current block; the owner must call
    :meth:`finish` or :meth:`cancel` before it closes the files the items' descriptors
    belong to.

    Starting the pass before the object graph is decoded, so that the worker reads
    while the caller names the variables, was measured (ResNet101V2, 179 MB): 6 ms of
    a 65 ms scan, with any switch interval; not worth a reader that reads before it is
    asked to (docs/benchmarks.md).
    """

    def __init__(self, where: str, items: list[Item], threads: int = THREADS):
        crc.require(where)
        self.where = where
        self.out = Screened()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._dot = _dot_is_exact()
        self._queue = collections.deque(_chunks(items, CHUNK))
        total = sum(it.nbytes for it in items)
        self._workers = [threading.Thread(target=self._work, name="ckptscan-screen", daemon=True)
                         for _ in range(threads - 1 if total >= MIN_PARALLEL_BYTES else 0)]
        for w in self._workers:
            w.start()

    def _take(self, progress: Callable[[int], None] | None = None) -> None:
        while not self._stop.is_set():
            try:
                run = self._queue.popleft()  # atomic: each run goes to one thread
            except IndexError:
                return
            _run(self.where, run, self.out, self._stop, self._dot, progress)

    def _work(self) -> None:
        try:
            self._take()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by finish()
            self._errors.append(exc)
            self._stop.set()

    def finish(self, progress: Callable[[int], None] | None = None) -> Screened:
        """Take part in the pass until it is done; the result. Raises what a worker met
        (:class:`~ckptscan.errors.MalformedArchiveError` for a shard cut short); an
        exception in this thread (a timeout, Ctrl-C) stops the worker and propagates."""
        try:
            self._take(progress)
        except BaseException:
            self.cancel()
            raise
        for w in self._workers:
            w.join()
        if self._errors:
            raise self._errors[0]
        return self.out

    def cancel(self) -> None:
        """Stop the worker after its current block and wait for it."""
        self._stop.set()
        for w in self._workers:
            w.join()


def screen(where: str, items: list[Item], threads: int = THREADS,
           progress: Callable[[int], None] | None = None) -> Screened:
    """CRC32C and finiteness of every item, read once (see the module docstring).

    Raises :class:`~ckptscan.errors.MalformedArchiveError` when a shard ends before a
    tensor does (from whichever thread met it). An exception in the calling thread
    (a timeout, Ctrl-C) stops the worker after its current block. ``progress(bytes)``
    is called from the calling thread only.
    """
    return Pass(where, items, threads).finish(progress)
