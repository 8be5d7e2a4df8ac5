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
# CRC32C's reflected bit order (bit 31 is x^0); ``_times_x`` multiplies by x.

_POLY = 0x82F63B78
_TABLES: list[np.ndarray] = []  # [k]: (4, 256) uint32 tables of "times x^(8 * 2**k)"
_TABLES_LOCK = threading.Lock()
_POWERS: list[int] = [1 << (31 - 8)]  # [k]: x^(8 * 2**k) mod P (x^8: one byte)


def _times_x(v: int) -> int:
    return (v >> 1) ^ _POLY if v & 1 else v >> 1


def _mulmod(a: int, b: int) -> int:
    """a * b mod P (reflected)."""
    p = 0
    m = 1 << 31
    while m:
        if a & m:
            p ^= b
        m >>= 1
        b = _times_x(b)
    return p


def _table(k: int) -> np.ndarray:
    """Byte-sliced tables of the linear map v -> v * x^(8 * 2**k) mod P.

    Built once per process, under a lock: both screening threads may ask for them at
    once, and two threads appending to the list together once left a table twice in it
    (every later run's sum was then wrong, and each tensor was checksummed again).
    """
    if k < len(_TABLES):
        return _TABLES[k]
    with _TABLES_LOCK:
        _grow_tables(k)
    return _TABLES[k]


def _grow_tables(k: int) -> None:
    while len(_TABLES) <= k:
        j = len(_TABLES)
        while len(_POWERS) <= j:
            _POWERS.append(_mulmod(_POWERS[-1], _POWERS[-1]))
        c = _POWERS[j]
        basis = [0] * 32  # basis[i] = x^(31 - i) * c: the image of bit i
        basis[31] = c
        for i in range(30, -1, -1):
            basis[i] = _times_x(basis[i + 1])
        bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
        t = np.empty((4, 256), dtype=np.uint32)
        for byte in range(4):
            images = np.array(basis[8 * byte: 8 * byte + 8], dtype=np.uint32)
            t[byte] = np.bitwise_xor.reduce(np.where(bits == 1, images, np.uint32(0)), axis=1)
        _TABLES.append(t)


def concatenated(crcs, lengths) -> int:
    """CRC32C of the concatenation of parts with (unmasked) CRC32Cs ``crcs`` and byte
    ``lengths``, in order, computed from those alone: XOR over i of crc_i shifted by the
    bytes that follow part i. Vectorised over the parts (numpy, one step per bit of the
    longest shift), so a run of hundreds of tensors costs well under a millisecond."""
    v = np.asarray(crcs, dtype=np.uint32).copy()
    if not v.size:
        return 0
    after = np.cumsum(np.asarray(lengths, dtype=np.int64)[::-1])[::-1]
    after = np.concatenate([after[1:], [0]]).astype(np.int64)
    for k in range(int(after.max()).bit_length()):
        sel = ((after >> k) & 1).astype(bool)
        if not sel.any():
            continue
        t = _table(k)
        w = v[sel]
        v[sel] = t[0][w & 0xFF] ^ t[1][(w >> 8) & 0xFF] ^ t[2][(w >> 16) & 0xFF] ^ t[3][w >> 24]
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
