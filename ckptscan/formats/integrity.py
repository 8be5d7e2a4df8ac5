"""Whether a local file's bytes are all there: truncation found from the bytes alone.

>>> from ckptscan.formats.integrity import integrity_problem
>>> integrity_problem("epoch_07.weights.h5")                          # doctest: +SKIP
'truncated: HDF5 end-of-file address 400864 > file size 200000'

Truncation is found from the bytes that must be there, without opening anything with
HDF5: the superblock's end-of-file address against the file's size (and the weights
member's size inside a ``.keras`` zip); the zip's end-of-central-directory record, its
central directory and every member's local header and data lying inside the file.

The local-source opener (:func:`ckptscan.formats.layouts.open_source`) calls
:func:`integrity_problem` before HDF5 or zipfile guess why a file cannot be read, and
:func:`~ckptscan.formats.layouts.open_sharded` calls it for every local shard. Remote
sources (:mod:`.remote`) skip it: the checks seek to the end of the object and a
size may be unknown, so a cut-short remote object is reported by the reader instead.
The verdict for a file met in a folder (``keras`` / ``not_keras`` / ``unreadable``) is
:func:`ckptscan.formats.verdict.classify`.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import BinaryIO

from .h5util import HDF5_MAGIC, find_hdf5_superblock

__all__ = ["hdf5_eof_problem", "integrity_problem"]

ZIP_LOCAL = b"PK\x03\x04"
ZIP_EMPTY = b"PK\x05\x06"
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
#: Members of a zip whose local headers are checked (a .keras holds three).
MAX_CHECKED_MEMBERS = 10_000
_UNDEFINED = (1 << 64) - 1


# --- HDF5 -----------------------------------------------------------------------------


def _nbytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def _u(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def hdf5_eof_problem(fp: BinaryIO, start: int, size: int, what: str = "file") -> str | None:
    """Why the HDF5 file in ``[start, start+size)`` of ``fp`` is cut short, or None.

    Reads the superblock (versions 0-3) and compares its end-of-file address with
    ``size``. ``what`` names the container in the reason (``file``, ``member
    model.weights.h5``).
    """
    fp.seek(start)
    head = fp.read(min(size, 2048 + 8))
    off = find_hdf5_superblock(head)
    if off is None:
        if size < len(HDF5_MAGIC) and HDF5_MAGIC.startswith(head):
            return f"truncated: {what} is {_nbytes(size)}, shorter than the HDF5 signature"
        return None
    fp.seek(start + off)
    sb = fp.read(128)
    if len(sb) < 9:
        return f"truncated: HDF5 superblock incomplete ({what} size {size})"
    version = sb[8]
    if version in (0, 1):
        if len(sb) < 16:
            return f"truncated: HDF5 superblock incomplete ({what} size {size})"
        osize = sb[13]
        at = 24 if version == 0 else 28
    elif version in (2, 3):
        osize = sb[9]
        at = 12
    else:
        return None  # a superblock version this reader does not know: leave it to HDF5
    if osize not in (2, 4, 8):
        return None
    eof_at = at + 2 * osize
    if len(sb) < eof_at + osize:
        return f"truncated: HDF5 superblock incomplete ({what} size {size})"
    eof = _u(sb[eof_at : eof_at + osize])
    if eof == (1 << (8 * osize)) - 1:  # undefined address
        return None
    if eof > size:
        return f"truncated: HDF5 end-of-file address {eof} > {what} size {size}"
    return None


# --- zip ------------------------------------------------------------------------------


def _zip_problem(fp: BinaryIO, size: int) -> str | None:
    """Why the zip in ``fp`` (``size`` bytes) is cut short or inconsistent, or None."""
    tail_len = min(size, 65535 + 22)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    pos = tail.rfind(_EOCD)
    while pos >= 0 and len(tail) - pos < 22:
        pos = tail.rfind(_EOCD, 0, pos)
    if pos < 0:
        return f"truncated: zip end-of-central-directory record not found (file size {size})"
    eocd = tail[pos : pos + 22]
    entries, cd_size, cd_off = struct.unpack("<HII", eocd[10:20])
    eocd_at = size - tail_len + pos
    zip64 = cd_off == 0xFFFFFFFF or cd_size == 0xFFFFFFFF or entries == 0xFFFF
    if not zip64 and cd_off + cd_size > eocd_at:
        return (f"truncated: zip central directory ends at {cd_off + cd_size} "
                f"past its end record at {eocd_at} (file size {size})")
    fp.seek(0)
    try:
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        return f"corrupt zip: central directory unreadable ({exc})"
    with zf:
        infos = zf.infolist()
        limit = cd_off if not zip64 else size
        for info in infos[:MAX_CHECKED_MEMBERS]:
            fp.seek(info.header_offset)
            header = fp.read(30)
            if len(header) < 30:
                return f"truncated: zip member {info.filename} local header past the end of the file"
            if header[:4] != ZIP_LOCAL:
                return f"corrupt zip: member {info.filename} has no local header at offset {info.header_offset}"
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            data_start = info.header_offset + 30 + name_len + extra_len
            end = data_start + info.compress_size
            if end > limit:
                return (f"truncated: zip member {info.filename} data ends at {end} "
                        f"past the central directory at {limit} (file size {size})")
        weights = [i for i in infos if i.filename == "model.weights.h5"]
        if len(weights) == 1 and weights[0].compress_type == zipfile.ZIP_STORED:
            info = weights[0]
            fp.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", fp.read(4))
            start = info.header_offset + 30 + name_len + extra_len
            problem = hdf5_eof_problem(fp, start, info.file_size, "member model.weights.h5")
            if problem:
                return problem
    return None


# --- entry points -------------------------------------------------------------------------


def _local_problem(path: str) -> str | None:
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        head = fp.read(8)
        if size == 0:
            return None  # "empty file" is the reader's own message
        if head[:4] == ZIP_LOCAL or head[:4] == ZIP_EMPTY:
            return _zip_problem(fp, size)
        if size < 4 and ZIP_LOCAL.startswith(head):
            return f"truncated: file is {_nbytes(size)}, shorter than the zip signature"
        return hdf5_eof_problem(fp, 0, size)


def integrity_problem(path: str | os.PathLike) -> str | None:
    """Why the local file or ``.keras`` folder at ``path`` is cut short, or None.

    Structural checks only (HDF5 end-of-file address, zip directory and members); a
    sharded index is not parsed here: the opener checks each shard it opens
    (:func:`ckptscan.formats.layouts.open_sharded`) and :func:`ckptscan.formats.verdict.classify`
    each shard an index lists. Whether it is a *Keras* archive is ``classify``'s question. A path that cannot be read at all gives None: the reader reports it.
    """
    p = os.fspath(path)
    try:
        if os.path.isdir(p):
            inner = os.path.join(p, "model.weights.h5")
            if os.path.isfile(inner):
                problem = _local_problem(inner)
                return f"model.weights.h5: {problem}" if problem else None
            return None  # a sharded folder: each shard is checked as it is opened
        if not os.path.isfile(p):
            return None
        return _local_problem(p)
    except OSError:
        return None
    return None
