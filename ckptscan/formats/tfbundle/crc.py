"""CRC32C (Castagnoli) as TensorFlow uses it: plain and *masked*.

TensorFlow stores CRC32C values "masked" (``core/lib/hash/crc32c.h``): rotate right by
15 bits and add a constant, so that a CRC computed over bytes that themselves contain
CRCs does not degenerate. The polynomial is Castagnoli's, not zlib's CRC-32 (a
well-known mistake of the unfinished pure-Python readers).

The CRC itself comes from ``google-crc32c`` (Google's C library with wheels for every
platform and its own pure-Python fallback), never a hand-written table. It is the
``tf`` extra (``pip install 'ckptscan[tf]'``), not a fourth runtime dependency: only
TensorFlow-format checkpoints need it, and the design card keeps the core at h5py,
numpy and typer. Without it, opening a TensorFlow checkpoint fails with one line
(:class:`~ckptscan.errors.UnsupportedFormatError`) that says what to install.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ...errors import UnsupportedFormatError
from ..gf2 import times

_MASK_DELTA = 0xA282EAD8
_impl = None


def _lib(where: str):
    global _impl
    if _impl is None:
        try:
            import google_crc32c
        except ImportError as exc:
            raise UnsupportedFormatError(
                where, "TensorFlow checkpoint: reading it needs the 'tf' extra (pip install 'ckptscan[tf]')"
            ) from exc
        _impl = google_crc32c
    return _impl


def require(where: str) -> None:
    """Raise the one-line error now if the CRC32C library is missing."""
    _lib(where)


def crc32c(data, where: str = "", value: int = 0) -> int:
    """CRC32C of ``data`` (bytes-like), continuing from ``value``.

    The C extension parses its argument as ``y#``: ``bytes`` and C-contiguous numpy
    arrays (no buffer-release hook) are read in place; a ``memoryview`` or ``bytearray``
    is refused with TypeError and copied once. Pass the numpy read buffer itself
    (:meth:`TFCheckpoint.iter_blocks` does), not a memoryview of it: that copy was a
    sixth of the scan of a 179 MB checkpoint.
    """
    lib = _impl if _impl is not None else _lib(where)
    try:
        return lib.extend(value, data)
    except TypeError:
        return lib.extend(value, bytes(data))


# --- combining: the CRC32C of a concatenation from the CRC32C of its parts ---------------
#
# A CRC is linear over GF(2): crc(A + B) = crc(A) * x^(8 len(B)) mod P  XOR  crc(B) for the
# finished (pre- and post-conditioned) values the index stores, the identity zlib's
# ``crc32_combine`` rests on. So the CRC32C of a run of adjacent tensors follows from
# their stored CRC32Cs and lengths, without reading a byte: the screening pass checksums
# a whole run with one call per window and compares it to this. Polynomials are in
# CRC32C's reflected bit order (bit 31 is x^0).

_POLY = 0x82F63B78
_DIGITS: list[np.ndarray] = []
"""[j]: (16, 4, 256) uint32: for each digit d, the byte-sliced tables of the linear map
v -> v * x^(8 * d * 16**j) mod P (shifting a CRC past d * 16**j zero bytes)."""
_DIGITS_LOCK = threading.Lock()
_STEPS: list[int] = [1 << (31 - 8)]  # [j]: x^(8 * 16**j) mod P (x^8: one byte)
_ONE = 1 << 31  # x^0


def _digits(j: int) -> np.ndarray:
    """The tables of hex digit ``j`` of a shift (:data:`_DIGITS`).

    Built once per process, under a lock: both screening threads may ask for them at
    once, and two threads appending to the list together once left a table twice in it
    (every later run's sum was then wrong, and each tensor was checksummed again).
    """
    if j < len(_DIGITS):
        return _DIGITS[j]
    with _DIGITS_LOCK:
        _grow_digits(j)
    return _DIGITS[j]


def _images(c: int) -> list[int]:
    """v -> v * c mod P as a map for :func:`..gf2.times`: [b] is the image of bit b,
    x^(31 - b) * c (bit 31 is x^0)."""
    col = [0] * 32
    col[31] = c
    for b in range(30, -1, -1):
        p = col[b + 1]
        col[b] = (p >> 1) ^ _POLY if p & 1 else p >> 1
    return col


#: Hex digits of a shift whose tables are built at the first use: shifts below 2**28
#: bytes (a run of up to 256 MB); longer runs add digits as they need them.
_FIRST_DIGITS = 7


def _grow_digits(j: int) -> None:
    have = len(_DIGITS)
    want = max(j + 1, _FIRST_DIGITS)
    if have >= want:
        return
    consts: list[int] = []  # x^(8 * d * 16**i) for each new digit i, d = 0..15
    for i in range(have, want):
        step = _images(_STEPS[i])
        powers = [_ONE]
        for _ in range(15):
            powers.append(times(step, powers[-1]))
        consts += powers
        if len(_STEPS) == i + 1:
            _STEPS.append(times(step, powers[15]))  # x^(8 * 16**(i + 1)): the next digit's step
    n = 4 * len(consts)  # one table per (constant, byte)
    cols = np.empty((32, len(consts)), dtype=np.uint32)  # [b, constant]: as _images, for all at once
    cols[31] = consts
    for b in range(30, -1, -1):
        cols[b] = (cols[b + 1] >> 1) ^ (np.uint32(_POLY) * (cols[b + 1] & 1))
    images = cols.reshape(4, 8, len(consts)).transpose(1, 2, 0).reshape(8, n)  # [bit of the byte, (constant, byte)]
    t = np.zeros((256, n), dtype=np.uint32)  # [x, table]: XOR of the images of x's set bits (rows: contiguous)
    for bit in range(8):  # the rows whose highest set bit is this one: a lower row XOR its image
        t[1 << bit: 2 << bit] = t[: 1 << bit] ^ images[bit]
    _DIGITS.extend(list(np.ascontiguousarray(t.T).reshape(want - have, 16, 4, 256)))


def concatenated(crcs, lengths) -> int:
    """CRC32C of the concatenation of parts with (unmasked) CRC32Cs ``crcs`` and byte
    ``lengths``, in order, computed from those alone: XOR over i of crc_i shifted by the
    bytes that follow part i. Vectorised over the parts (numpy), one step per hex digit
    of the longest shift: 7 steps for a run of up to 256 MB. Every part goes through
    every step (digit 0's tables are the identity), so a step is a few whole-array
    operations whatever the shifts: 0.24 ms for 545 tensors, where one step per bit of
    the shift took 1.25 ms."""
    v = np.asarray(crcs, dtype=np.uint32).copy()
    if not v.size:
        return 0
    after = np.cumsum(np.asarray(lengths, dtype=np.int64)[::-1])[::-1]
    after = np.concatenate([after[1:], [0]]).astype(np.int64)
    for j in range((int(after.max()).bit_length() + 3) // 4):
        d = (after >> (4 * j)) & 15
        t = _digits(j)
        v = t[d, 0, v & 0xFF] ^ t[d, 1, (v >> 8) & 0xFF] ^ t[d, 2, (v >> 16) & 0xFF] ^ t[d, 3, v >> 24]
    return int(np.bitwise_xor.reduce(v))


# --- the same C library, called without the GIL ------------------------------------------
#
# google-crc32c's extension holds the GIL while it checksums (``_crc32c.c``: no
# ``Py_BEGIN_ALLOW_THREADS``), so two threads screening a shard wait for each other on
# every CRC32C call. ctypes releases the GIL around a foreign call: the pass calls the
# very library that extension wraps (``crc32c_extend`` of Google's libcrc32c, which the
# wheels ship beside it) through ctypes where it can be found, after checking that it
# gives the extension's results; anywhere else it uses the extension. The same bytes,
# the same checksums; on two threads the pass took ~6 % less time (docs/benchmarks.md).

_RELEASED: list = []  # [the ctypes function or None], looked up once


def _library_paths(pkg_dir: str) -> list[str]:
    found = []
    try:  # Linux: the copy the extension loaded
        with open("/proc/self/maps") as fh:
            found += sorted({line.split(None, 5)[5].strip() for line in fh
                             if line.count(" ") >= 5 and "libcrc32c" in line})
    except OSError:
        pass
    import glob

    for pattern in (pkg_dir + ".libs/libcrc32c*", os.path.join(pkg_dir, ".dylibs", "libcrc32c*"),
                    os.path.join(pkg_dir, "extra-dll", "crc32c*.dll")):
        found += sorted(glob.glob(pattern))
    return found


def _released():
    """``crc32c_extend(uint32, void*, size_t)`` through ctypes, or None."""
    if not _RELEASED:
        fn = None
        lib = _impl if _impl is not None else _lib("")
        try:
            import ctypes

            import google_crc32c

            probe = np.arange(4099, dtype=np.uint32).view(np.uint8)
            for path in _library_paths(os.path.dirname(google_crc32c.__file__)):
                try:
                    f = ctypes.CDLL(path).crc32c_extend
                except (OSError, AttributeError):
                    continue
                f.restype = ctypes.c_uint32
                f.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
                if f(7, probe.ctypes.data, probe.nbytes) == lib.extend(7, probe.tobytes()):
                    fn = f
                    break
        except (ImportError, OSError, ValueError):
            fn = None
        _RELEASED.append(fn)
    return _RELEASED[0]


def releases_gil() -> bool:
    """True when :func:`crc32c_array` runs without holding the GIL."""
    return _released() is not None


def crc32c_array(arr: np.ndarray, where: str = "", value: int = 0) -> int:
    """:func:`crc32c` of a C-contiguous numpy array, without holding the GIL where the
    library can be called that way (:func:`releases_gil`)."""
    fn = _RELEASED[0] if _RELEASED else _released()
    if fn is not None and arr.flags.c_contiguous:
        return fn(value, arr.__array_interface__["data"][0], arr.nbytes)
    return crc32c(np.ascontiguousarray(arr), where, value)


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC32C."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
