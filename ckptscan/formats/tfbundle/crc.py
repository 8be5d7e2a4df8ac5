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


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC32C."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
