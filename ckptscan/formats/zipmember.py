"""Reading members of a ``.keras`` zip without extracting them.

A stored (uncompressed) member is read in place through :class:`FileWindow`, a
read-only file object over ``[start, start+size)`` of the archive that h5py can open.
A compressed member is streamed to a temporary file, with zip-bomb limits.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile

from ..errors import MalformedArchiveError, UnsafeArchiveError
from ..runtime.bounds import MAX_INFLATED, MAX_JSON_BYTES, MAX_SMALL_MEMBER
from ..runtime.bounds import MAX_ZIP_EXPANSION as MAX_EXPANSION
from ..runtime.timeout import check_deadline

#: Prefix of the temporary files holding inflated members (always deleted on close).
TEMP_PREFIX = "ckptscan-"


def check_member_names(names: list[str], where: str) -> None:
    """Refuse member names that would point outside an extraction folder.

    ckptscan never extracts, but a ``.keras`` that carries ``../../x`` or ``/etc/x``
    was made to attack whatever does; it is refused as hostile.
    """
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":") or "\x00" in name:
            raise UnsafeArchiveError(where, f"zip member name {name!r} points outside the archive (path traversal)")


def check_window(fp, info: zipfile.ZipInfo, start: int, where: str) -> None:
    """Refuse a stored member whose declared bytes do not fit inside the archive."""
    fp.seek(0, os.SEEK_END)
    total = fp.tell()
    if info.compress_size != info.file_size:
        raise MalformedArchiveError(
            where, f"zip member {info.filename} is stored but declares {info.file_size} bytes from {info.compress_size}"
        )
    if start + info.file_size > total:
        raise MalformedArchiveError(
            where, f"zip member {info.filename} declares {info.file_size} bytes but the archive ends first (truncated file)"
        )


def data_offset(fp, info: zipfile.ZipInfo, where: str) -> int:
    """Absolute offset of a member's data, read from its local header."""
    fp.seek(info.header_offset)
    header = fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise MalformedArchiveError(where, f"zip member {info.filename}: bad local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class SeekableReader(io.RawIOBase):
    """Base of ckptscan's read-only file objects over ``size`` bytes: position and seek.

    Subclasses set :attr:`size` and implement ``readinto``.
    """

    size: int = 0
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        new = pos if whence == 0 else self._pos + pos if whence == 1 else self.size + pos
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new


class FileWindow(SeekableReader):
    """A read-only, seekable view of ``size`` bytes starting at ``start`` of a file."""

    def __init__(self, path: str, start: int, size: int):
        super().__init__()
        self._f = open(path, "rb")
        self.start = start
        self.size = size
        self._pos = 0

    def readinto(self, b) -> int:
        check_deadline()  # a looping HDF5 library gets a failed read once time is up
        n = max(0, min(len(b), self.size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self.start + self._pos)
        got = self._f.readinto(memoryview(b)[:n])
        self._pos += got or 0
        return got or 0

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def read_json_member(zf: zipfile.ZipFile, name: str, where: str) -> bytes:
    """Bytes of a small member, refusing oversized or over-expanding ones."""
    info = zf.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise UnsafeArchiveError(where, f"zip member {name} declares {info.file_size} bytes (too large)")
    with zf.open(info) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise UnsafeArchiveError(where, f"zip member {name} is larger than it declares")
    return data


def inflate_to_temp(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> str:
    """Stream a compressed member to a temporary file; returns its path (caller deletes)."""
    if info.file_size > MAX_INFLATED or (
        info.file_size > MAX_SMALL_MEMBER and info.file_size > MAX_EXPANSION * max(info.compress_size, 1)
    ):
        raise UnsafeArchiveError(
            where, f"zip member {info.filename} expands to {info.file_size} bytes from {info.compress_size} (zip bomb)"
        )
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".h5")
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            copied = 0
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > info.file_size:
                    raise UnsafeArchiveError(where, f"zip member {info.filename} is larger than it declares")
                out.write(chunk)
        return tmp
    except BaseException:
        os.unlink(tmp)
        raise

