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
    """Byte-sliced tables of the linear map v -> v * x^(8 * 2**k) mod P."""
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
    return _TABLES[k]


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


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC32C."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
