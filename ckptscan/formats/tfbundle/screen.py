"""The screening pass over a local data shard: CRC32C and "all finite?" of many tensors
in one read, in shard order.

A clean checkpoint is the common case, and for a clean float tensor the scan needs two
facts only: its stored bytes match the CRC32C in the index, and it holds no NaN/±Inf.
:func:`screen` establishes both for a list of tensors in one pass over the shard, in
offset order, through one reused window of :data:`BLOCK` bytes: small neighbouring
tensors (BN vectors, biases) share a read, and no generator, decoder or counter runs
per block. "All finite?" of a float32/float64 block is one BLAS dot product of the
block with itself: a sum of squares is NaN or ±Inf whenever a value is, and when it is
not finite (a value is not, or large squares overflowed) ``np.isfinite(block).all()``
decides, so the answer is exact. :func:`_dot_is_exact` checks that property of the BLAS
numpy was built with once per process; where it does not hold (and for float16) the
test is ``np.isfinite(block).all()`` throughout.

What it does not do: count NaN/Inf or find their indices. A tensor that is not all
finite is left to the engine's full pass (:func:`ckptscan.stats.count_values`), which
re-reads it; that is the rare case, and it keeps this pass small. Memory: one window
per thread plus the values kept for the caller (the BN vectors, a few KB each).

Two threads where the process may use two CPUs (:func:`threads`): the caller screens
the first half of the shard (by bytes) and a worker the second, each with its own
window. Every call that moves data (``preadv``, the CRC32C, the dot product) is C code,
and a run of adjacent tensors costs one of each per window (the CRC32C of the run is
compared with the sum of its tensors' stored ones, :func:`.crc.concatenated`), so the
threads seldom wait for the GIL (the CRC32C runs without it where
:func:`.crc.releases_gil`). On the 179 MB ResNet101V2 checkpoint the pass took 0.55-0.6x
the time of one thread on two cores, and the whole scan 0.047-0.049 s against
0.058-0.070 s before (docs/benchmarks.md). An earlier two-thread variant with a CRC32C
and a test per tensor gained little.
"""

from __future__ import annotations

import bisect
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from ...errors import MalformedArchiveError
from ...runtime.executor import SCREEN_THREADS_ENV, cpus
from . import crc

#: Bytes per read, per thread (256 KiB to 4 MiB measured; 2 MiB, a core's L2 on the
#: benchmark machine, was the best warm by 1-3 %, docs/benchmarks.md).
BLOCK = 2 << 20
_DOT_OK: bool | None = None


class Item(NamedTuple):
    """One contiguous tensor of a data shard to screen (a named tuple: hundreds are made
    per scan, and a frozen dataclass took 3x as long to build)."""

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
    """True when ``dot(x, x)`` is not finite for any NaN/±Inf in ``x`` and finite for
    ordinary values, for both BLAS float types (checked with the bad value at several
    positions of a block, so that the BLAS kernel's unrolled and tail paths are both
    seen)."""
    global _DOT_OK
    if _DOT_OK is None:
        _DOT_OK = _check_dot()
    return _DOT_OK


@np.errstate(invalid="ignore", over="ignore")
def _check_dot() -> bool:
    ok = True
    for dt in (np.float32, np.float64):
        x = np.linspace(-3e3, 3e3, 1031).astype(dt)
        x[8] = np.finfo(dt).tiny / 4  # subnormal
        ok &= bool(np.isfinite(np.dot(x, x)))
        x[7] = np.finfo(dt).max  # finite, but its square overflows: not finite is allowed
        for bad in (np.nan, np.inf, -np.inf):
            for pos in (0, 5, 517, 1030):
                y = x.copy()
                y[pos] = bad
                ok &= not bool(np.isfinite(np.dot(y, y)))
    return ok


def _all_finite(x: np.ndarray, dot: bool) -> bool:
    """True when no value of ``x`` is NaN/±Inf (the caller ignores "invalid" and
    "overflow" warnings: they are how the dot test answers).

    The sum of squares ``dot(x, x)`` is NaN or ±Inf whenever a value of ``x`` is (every
    term is >= 0, so nothing cancels); it reads each value once, where a product with a
    vector of zeros read twice the bytes (2.4x the time per window). When it is not
    finite, either a value is not or the squares of large finite values overflowed, and
    ``np.isfinite`` decides.
    """
    if dot and x.dtype.itemsize >= 4 and x.size and math.isfinite(np.dot(x, x)):
        return True
    return bool(np.isfinite(x).all())


def _segments(items: list[Item]) -> list[list[int]]:
    """``items`` (in shard order) grouped into runs of adjacent tensors of one dtype in one
    shard, each tensor starting where the one before it ends, either all with a
    checksum in the index or all without."""
    segs: list[list[int]] = []
    prev = None
    for i, it in enumerate(items):
        if (prev is not None and it.fd == prev.fd and it.offset == prev.offset + prev.nbytes
                and it.dtype == prev.dtype and (it.crc32c is None) == (prev.crc32c is None)):
            segs[-1].append(i)
        else:
            segs.append([i])
        prev = it
    return segs


def _run(where: str, items: list[Item], out: Screened, dot: bool,
         progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> None:
    """Screen ``items`` (in offset order) through a window of :data:`BLOCK` bytes.

    The window is one buffer, filled by ``os.preadv`` (no allocation per read: reading
    into a new ``bytes`` object per block cost up to 4x the time in page faults whenever
    the allocator returned fresh memory). The items are taken as runs of adjacent
    tensors (:func:`_segments`; in a Keras checkpoint nearly every float tensor of the
    shard is one run). A run is checked piece by piece as the window moves over it, each
    piece with one CRC32C call and one finiteness test whatever the number of tensors
    in it; the window is refreshed at the current position whenever it does not hold the
    next whole element, so no element ever straddles two windows, and in the last shard
    it never reads past the furthest tensor end.

    The run's CRC32C is compared with the one its tensors' stored CRC32Cs add up to
    (:func:`.crc.concatenated`); only when they differ is each tensor of the run
    checksummed alone, to name the ones that do not match. Likewise a piece found not
    all finite is tested again tensor by tensor. Few calls matter most with two
    threads: each one is a hand-over of the GIL.
    """
    buf = np.empty(BLOCK, dtype=np.uint8)
    win = buf[:0]
    win_fd = win_off = -1
    last_fd = items[-1].fd if items else -1
    run_end = max((it.offset + it.nbytes for it in items if it.fd == last_fd), default=0)
    finite: list[bool | None] = [None if it.keep else True for it in items]
    crc_ok = [True] * len(items)
    done = 0
    with np.errstate(invalid="ignore", over="ignore"):
        for seg in _segments(items):
            first = items[seg[0]]
            dtype, step, fd = first.dtype, first.dtype.itemsize, first.fd
            start = first.offset
            end = items[seg[-1]].offset + items[seg[-1]].nbytes
            check = first.crc32c is not None
            kept = [i for i in seg if items[i].keep]
            pieces: dict[int, list[np.ndarray]] = {i: [] for i in kept}
            k = 0  # next kept tensor not yet wholly copied
            kept_bytes = 0
            running = 0
            pos = start
            while pos < end:
                if win_fd != fd or pos < win_off or pos + step > win_off + len(win):
                    if stop is not None and stop.is_set():
                        return
                    n = BLOCK if fd != last_fd else max(step, min(BLOCK, run_end - pos))
                    got = os.preadv(fd, [buf[:n]], pos)
                    win, win_fd, win_off = buf[:got], fd, pos
                lo = pos - win_off
                hi = lo + (min(len(win), end - win_off) - lo) // step * step
                if hi <= lo:
                    raise MalformedArchiveError(where, f"{items[_at(items, seg, pos)].path}: data shard ends early (truncated)")
                piece = win[lo:hi]
                nxt = win_off + hi
                if check:
                    running = crc.crc32c_array(piece, where, running)
                if not _all_finite(piece.view(dtype), dot):
                    _attribute(items, seg, pos, nxt, piece, dtype, finite, dot)
                while k < len(kept) and items[kept[k]].offset < nxt:
                    it = items[kept[k]]
                    a, z = max(it.offset, pos), min(it.offset + it.nbytes, nxt)
                    pieces[kept[k]].append(piece[a - pos: z - pos].view(dtype).copy())
                    kept_bytes += z - a
                    if it.offset + it.nbytes > nxt:
                        break
                    k += 1
                pos = nxt
                out.done = done + (pos - start) - kept_bytes
                if progress is not None:
                    progress(out.done)
            if check and running != crc.concatenated([crc.unmask(items[i].crc32c) for i in seg],
                                                     [items[i].nbytes for i in seg]):
                _each_checksum(where, items, seg, crc_ok)
            for i in kept:
                ps = pieces[i]
                out.values[items[i].path] = ps[0] if len(ps) == 1 else np.concatenate(ps) if ps else np.empty(0, dtype)
            done += (end - start) - kept_bytes
    for it, f, ok in zip(items, finite, crc_ok):
        out.finite[it.path] = f
        out.crc_ok[it.path] = ok
    out.done = done


def _first_at(items: list[Item], seg: list[int], pos: int) -> int:
    """The position in ``seg`` (adjacent tensors, in offset order) of the tensor that
    holds byte ``pos`` (bisection: a run may hold many thousands)."""
    return max(0, bisect.bisect_right(_Offsets(items, seg), pos) - 1)


class _Offsets:
    """``items[seg[j]].offset`` as a sequence, without building the list."""

    def __init__(self, items: list[Item], seg: list[int]):
        self.items, self.seg = items, seg

    def __len__(self) -> int:
        return len(self.seg)

    def __getitem__(self, j: int) -> int:
        return self.items[self.seg[j]].offset


def _at(items: list[Item], seg: list[int], pos: int) -> int:
    """The index of the tensor of ``seg`` that holds byte ``pos``."""
    return seg[_first_at(items, seg, pos)]


def _attribute(items: list[Item], seg: list[int], pos: int, nxt: int, piece: np.ndarray, dtype: np.dtype,
               finite: list[bool | None], dot: bool) -> None:
    """The piece ``[pos, nxt)`` of a run holds a NaN/±Inf: test each tensor's part of it
    (only the tensors the piece overlaps: a run where every window holds a NaN, as in a
    diverged model, costs a few tests per window, not one per tensor of the run)."""
    for j in range(_first_at(items, seg, pos), len(seg)):
        i = seg[j]
        it = items[i]
        if it.offset >= nxt:
            break
        a, z = max(it.offset, pos), min(it.offset + it.nbytes, nxt)
        if a < z and finite[i] and not _all_finite(piece[a - pos: z - pos].view(dtype), dot):
            finite[i] = False


def _each_checksum(where: str, items: list[Item], seg: list[int], crc_ok: list[bool]) -> None:
    """A run's checksum did not add up: checksum each of its tensors alone (the rare
    path; read again through a buffer of its own, at most :data:`BLOCK` bytes, and
    checksummed without the GIL like the run, :func:`.crc.crc32c_array`)."""
    tmp = np.empty(BLOCK, dtype=np.uint8)
    for i in seg:
        it = items[i]
        running, pos, end = 0, it.offset, it.offset + it.nbytes
        while pos < end:
            got = os.preadv(it.fd, [tmp[: min(BLOCK, end - pos)]], pos)
            if got <= 0:
                raise MalformedArchiveError(where, f"{it.path}: data shard ends early (truncated)")
            running = crc.crc32c_array(tmp[:got], where, running)
            pos += got
        crc_ok[i] = crc.mask(running) == it.crc32c


def threads() -> int:
    """Threads for one screening pass: 2 where this process may run on two CPUs or more,
    else 1 (``CKPTSCAN_SCREEN_THREADS`` overrides: 1 or 2)."""
    env = os.environ.get(SCREEN_THREADS_ENV, "").strip()
    if env in ("1", "2"):
        return int(env)
    return 2 if cpus() >= 2 else 1


def _halves(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """``items`` (in shard order) cut at a tensor boundary near the middle byte."""
    half = sum(it.nbytes for it in items) / 2
    acc = 0
    for i, it in enumerate(items):
        if acc + it.nbytes / 2 >= half:
            return items[:i], items[i:]
        acc += it.nbytes
    return items, []


def screen(where: str, items: list[Item], progress: Callable[[int], None] | None = None,
           nthreads: int | None = None) -> Screened:
    """CRC32C and finiteness of every item, read once in shard order (see the module
    docstring). Raises :class:`~ckptscan.errors.MalformedArchiveError` when a shard ends
    before a tensor does. ``progress(bytes)`` as the pass moves on (the bytes of the items
    without ``keep`` screened so far), always from the calling thread.

    With ``nthreads`` 2 (default: :func:`threads`), the second half of the shard (by
    bytes) is screened by a worker thread while the caller screens the first (module
    docstring). A failure in either half is raised here, after both have stopped.
    """
    crc.require(where)
    crc.releases_gil()  # looked up once, before any thread asks
    out = Screened()
    ordered = sorted(items, key=lambda it: (it.fd, it.offset))
    dot = _dot_is_exact()
    first, second = _halves(ordered) if (nthreads or threads()) > 1 and len(ordered) > 1 else (ordered, [])
    if not second or not first:
        _run(where, ordered, out, dot, progress)
        return out
    other = Screened()
    stop = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            _run(where, second, other, dot, None, stop)
        except BaseException as exc:  # re-raised by the caller
            failed.append(exc)

    worker = threading.Thread(target=work, name="ckptscan-screen", daemon=True)
    worker.start()
    try:
        tick = (lambda n: progress(n + other.done)) if progress is not None else None
        _run(where, first, out, dot, tick, stop)
    except BaseException:  # a bad shard, or --timeout: the worker stops at its next read
        stop.set()
        raise
    finally:
        try:
            worker.join()
        except BaseException:  # --timeout while waiting for it
            stop.set()
            raise
    if failed:
        raise failed[0]
    for name in ("finite", "crc_ok", "values"):
        getattr(out, name).update(getattr(other, name))
    out.done += other.done
    if progress is not None and other.done:
        progress(out.done)
    return out


# --- the same pass in C, started ahead of the naming (optional) ---------------------------
#
# ``_screen.c`` is the loop of :func:`_run` without the GIL: pread into a window, the
# CRC32C of each tensor's part (the libcrc32c function :func:`.crc.crc32c_array` calls,
# passed by address: no checksum code of its own) and a test of every value's exponent
# bits. Loaded with ctypes (which drops the GIL for the whole call), it lets a worker
# screen the shard from the back while the caller still decodes the object graph and
# names the variables, pure Python that holds the GIL: the Python loop above needs the
# GIL back after every call, and three threaded designs built on it lost what they
# gained (docs/benchmarks.md, issue 14). Built where a C compiler is found (setup.py);
# ``CKPTSCAN_NATIVE=0`` turns it off; without it, the Python pass does the same work
# after the naming. Any error in it (a short read, an I/O error) discards its results
# and the Python pass runs instead, which names the error the way it always has.

NATIVE_ENV = "CKPTSCAN_NATIVE"
#: Target bytes of one piece (the unit the two sides claim): small enough that the
#: two sides finish within a piece of each other, large enough to be few.
PIECE = 4 << 20
#: A 1-D tensor up to this size is copied out while it is screened (BN vectors and
#: biases: the BN rules read them whole), up to :data:`KEEP_TOTAL` bytes in all.
KEEP_ONE, KEEP_TOTAL = 1 << 16, 32 << 20
#: Bytes the caller screens per call (between calls it reports progress and a
#: ``--timeout`` or Ctrl-C can stop it).
CALL_BYTES = 32 << 20
_NATIVE: list = []


def native():
    """``(ctypes function, CRC32C function address)`` of the C loop, or None where it was
    not built, ``CKPTSCAN_NATIVE=0``, or the CRC32C library cannot be called without the
    GIL."""
    if not _NATIVE:
        _NATIVE.append(_load_native())
    return _NATIVE[0]


def _load_native():
    # the exponent test reads the stored (little-endian) words as native ones
    if os.environ.get(NATIVE_ENV, "").strip() == "0" or sys.byteorder != "little":
        return None
    import ctypes
    import importlib.util

    try:
        spec = importlib.util.find_spec(__package__ + "._screen")
        if spec is None or not spec.origin or not spec.origin.endswith((".so", ".dylib")):
            return None
        fn = ctypes.CDLL(spec.origin).ckptscan_screen
    except (ImportError, OSError, AttributeError):
        return None
    crc_fn = crc._released()
    if crc_fn is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn.restype = ctypes.c_int
    fn.argtypes = [p, p, i64, p, i32, p, p, p, p, p, p, p, ctypes.c_size_t, p, i64, p, p, i64, p]
    return fn, ctypes.cast(crc_fn, ctypes.c_void_p).value


class Ahead:
    """One screening pass over float tensors of local shards, in C: a worker starts it
    from the back of the shard as soon as the index is read (:meth:`start`); the caller
    joins from the front when it has named the variables (:meth:`finish`).

    ``tensors``: ``(fd, offset, nbytes, dtype, one_dimensional)`` of every contiguous
    float16/32/64 tensor of the index. Results are looked up by ``(fd, offset)``.
    Memory: two windows of :data:`BLOCK` bytes, the 1-D tensors kept (at most
    :data:`KEEP_TOTAL` bytes) and a few arrays of one number per tensor.
    """

    def __init__(self, tensors: list[tuple[int, int, int, np.dtype, bool]]):
        fn = native()
        if fn is None:
            raise RuntimeError("the C screening loop is not available")
        self._fn, self._crc = fn
        ts = sorted(t for t in tensors if t[2] > 0)
        n = len(ts)
        self.index = {(t[0], t[1]): i for i, t in enumerate(ts)}
        self.dtypes = [t[3] for t in ts]
        self.offset = np.array([t[1] for t in ts], dtype=np.int64)
        self.nbytes = np.array([t[2] for t in ts], dtype=np.int64)
        self.isz = np.array([t[3].itemsize for t in ts], dtype=np.int32)
        keep_at = np.full(n, -1, dtype=np.int64)
        kept = 0
        first: list[int] = []
        fds: list[int] = []
        size = 0
        for i, (fd, off, nb, dt, one_d) in enumerate(ts):
            if one_d and nb <= KEEP_ONE and kept + nb <= KEEP_TOTAL:
                keep_at[i] = kept
                kept = (kept + nb + 7) & ~7  # each kept tensor 8-byte aligned
            prev = ts[i - 1] if i else None
            # a piece: adjacent tensors of one item size, each a whole number of items (so
            # that no value straddles two windows), about PIECE bytes
            if (prev is None or fd != prev[0] or off != prev[1] + prev[2] or dt.itemsize != prev[3].itemsize
                    or prev[2] % dt.itemsize or size >= PIECE):
                first.append(i)
                fds.append(fd)
                size = 0
            size += nb
        first.append(n)
        self.keep_at = keep_at
        self.keep = np.empty(max(kept, 1), dtype=np.uint8)
        self.first = np.array(first, dtype=np.int64)
        self.fds = np.array(fds, dtype=np.int32)
        self.n_pieces = len(fds)
        self.claimed = np.zeros(max(self.n_pieces, 1), dtype=np.uint8)
        self.crc = np.zeros(max(n, 1), dtype=np.uint32)
        self.finite = np.zeros(max(n, 1), dtype=np.uint8)
        self.stop = np.zeros(1, dtype=np.int32)
        self.done = np.zeros(1, dtype=np.int64)
        self._codes: list[int] = []
        self._worker: threading.Thread | None = None

    def _call(self, direction: int, buf: np.ndarray, nxt: np.ndarray, max_bytes: int) -> int:
        a = lambda x: x.ctypes.data  # noqa: E731
        return self._fn(a(self.fds), a(self.first), self.n_pieces, a(self.claimed), direction,
                        a(self.offset), a(self.nbytes), a(self.isz), a(self.keep_at), a(self.keep),
                        a(self.crc), a(self.finite), self._crc, a(buf), buf.nbytes, a(self.stop), a(self.done),
                        max_bytes, a(nxt))

    def start(self) -> None:
        """Start the worker (from the back of the shard, in one call)."""
        def work() -> None:
            code = self._call(-1, np.empty(BLOCK, dtype=np.uint8), np.array([self.n_pieces - 1], dtype=np.int64), 0)
            self._codes.append(code)
            if code < 0:
                self.stop[0] = 1  # the caller's side stops too: all is screened again in Python

        self._worker = threading.Thread(target=work, name="ckptscan-screen-ahead", daemon=True)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the worker (within one window) and wait for it."""
        self.stop[0] = 1
        if self._worker is not None:
            self._worker.join()

    def finish(self, progress: Callable[[int], None] | None = None) -> bool:
        """Screen from the front until the worker's part is met, then wait for it. True
        when every piece was screened; False after an error or a stop (the results are
        then not to be used)."""
        buf = np.empty(BLOCK, dtype=np.uint8)
        nxt = np.zeros(1, dtype=np.int64)
        try:
            while True:
                code = self._call(1, buf, nxt, CALL_BYTES)
                if progress is not None:
                    progress(int(self.done[0]))
                if code != 0 or self.stop[0]:
                    break
        except BaseException:  # --timeout or Ctrl-C between calls: stop the worker too
            self.cancel()
            raise
        if code == 1 and self._worker is not None:
            self._worker.join()  # finishing its last piece
        else:
            self.cancel()  # an error on either side: nothing of this pass is used
        return code == 1 and not self.stop[0] and self._codes == [1]

    def result(self, items: list[Item]) -> Screened | None:
        """What :func:`screen` returns for ``items``, from the finished pass (None when an
        item was not part of it). A kept tensor's values are a view of this pass's buffer
        of kept tensors, each in its own bytes."""
        out = Screened()
        done = 0
        for it in items:
            i = self.index.get((it.fd, it.offset))
            if i is None or int(self.nbytes[i]) != it.nbytes or self.dtypes[i] != it.dtype:
                return None
            out.crc_ok[it.path] = it.crc32c is None or crc.mask(int(self.crc[i])) == it.crc32c
            if it.keep:
                out.finite[it.path] = None
                at = int(self.keep_at[i])
                if at >= 0:
                    out.values[it.path] = self.keep[at: at + it.nbytes].view(it.dtype)
            else:
                out.finite[it.path] = bool(self.finite[i])
                done += it.nbytes
        out.done = done
        return out
