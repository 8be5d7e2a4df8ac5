"""The screening pass over a local data shard: CRC32C and "all finite?" of many tensors
in one read, in shard order.

A clean checkpoint is the common case, and for a clean float tensor the scan needs two
facts only: its stored bytes match the CRC32C in the index, and it holds no NaN/±Inf.
:func:`screen` establishes both for a list of tensors in one pass over the shard, in
offset order, through one reused window of :data:`BLOCK` bytes: small neighbouring
tensors (BN vectors, biases) share a read, and no generator, decoder or counter runs
per block. "All finite?" of a float32/float64 block is one BLAS dot product with a zero
vector: every product ``x * 0`` is ``0`` for finite ``x`` and NaN for NaN and ±Inf, so
the sum is NaN exactly when a value is not finite, and it cannot overflow.
:func:`_dot_is_exact` checks that property of the BLAS numpy was built with once per
process; where it does not hold (and for float16) the test is
``np.isfinite(block).all()``, exact everywhere.

What it does not do: count NaN/Inf or find their indices. A tensor that is not all
finite is left to the engine's full pass (:func:`ckptscan.stats.count_values`), which
re-reads it; that is the rare case, and it keeps this pass small. Memory: one window
plus the values kept for the caller (the BN vectors, a few KB each).

One thread: the same pass on two threads (each with its own window, taking runs of
tensors from a shared queue) was measured on the 179 MB ResNet101V2 checkpoint at
0.058-0.063 s against 0.063-0.064 s, for 15 ms more CPU, and slower with the page cache
cold (docs/benchmarks.md): not worth a thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import MalformedArchiveError
from . import crc

#: Bytes per read (128 KiB to 1 MiB measured within noise of each other, cold and warm;
#: 1 MiB was the best warm, docs/benchmarks.md).
BLOCK = 1 << 20
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
    """Return the values instead of testing them (the caller counts them itself; they are
    held in memory: the engine keeps only BN vectors, at most ``MAX_BN_VECTOR`` values):
    ``finite`` is None for it."""


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
    """Bytes of the items without ``keep`` screened so far (the caller accounts for the
    kept ones when it counts them)."""


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
    """``n`` zeros of ``dtype`` (``n`` is at most a window's worth)."""
    z = _ZEROS.get(dtype.str)
    if z is None:
        z = _ZEROS[dtype.str] = np.zeros(BLOCK // dtype.itemsize, dtype=dtype)
    return z[:n]


def _all_finite(x: np.ndarray, dot: bool) -> bool:
    """True when no value of ``x`` is NaN/±Inf (the caller ignores "invalid" warnings:
    ``inf * 0`` is how the dot test answers)."""
    if dot and x.dtype.itemsize >= 4 and x.size:
        s = np.dot(x, _zeros(x.dtype, x.size))
        return bool(s == s)
    return bool(np.isfinite(x).all())


def _run(where: str, items: list[Item], out: Screened, dot: bool,
         progress: Callable[[int], None] | None = None) -> None:
    """Screen ``items`` (in offset order) through a window of :data:`BLOCK` bytes.

    The window is one buffer, filled by ``os.preadv`` (no allocation per read: reading
    into a new ``bytes`` object per block cost up to 4x the time in page faults whenever
    the allocator returned fresh memory). A tensor is checked piece by piece as the
    window moves over it; the window is refreshed at the current position whenever it
    does not hold the next whole element, so no element ever straddles two windows, and
    in the last shard it never reads past the furthest tensor end.
    """
    buf = np.empty(BLOCK, dtype=np.uint8)
    win = buf[:0]
    win_fd = win_off = -1
    last_fd = items[-1].fd if items else -1
    run_end = max((it.offset + it.nbytes for it in items if it.fd == last_fd), default=0)
    with np.errstate(invalid="ignore"):
        for it in items:
            running = 0
            finite = None if it.keep else True
            kept = []
            step = it.dtype.itemsize
            pos, end = it.offset, it.offset + it.nbytes
            while pos < end:
                if win_fd != it.fd or pos < win_off or pos + step > win_off + len(win):
                    n = BLOCK if it.fd != last_fd else max(step, min(BLOCK, run_end - pos))
                    got = os.preadv(it.fd, [buf[:n]], pos)
                    win, win_fd, win_off = buf[:got], it.fd, pos
                lo = pos - win_off
                hi = lo + (min(len(win), end - win_off) - lo) // step * step
                if hi <= lo:
                    raise MalformedArchiveError(where, f"{it.path}: data shard ends early (truncated)")
                running = crc.crc32c(win[lo:hi], where, running)
                values = win[lo:hi].view(it.dtype)
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
                out.done += it.nbytes
                if progress is not None:
                    progress(out.done)


def screen(where: str, items: list[Item], progress: Callable[[int], None] | None = None) -> Screened:
    """CRC32C and finiteness of every item, read once in shard order (see the module
    docstring). Raises :class:`~ckptscan.errors.MalformedArchiveError` when a shard ends
    before a tensor does. ``progress(bytes)`` after each tensor without ``keep``."""
    crc.require(where)
    out = Screened()
    _run(where, sorted(items, key=lambda it: (it.fd, it.offset)), out, _dot_is_exact(), progress)
    return out
