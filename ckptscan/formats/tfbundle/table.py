"""Reader of the LevelDB-style table TensorFlow uses for a checkpoint's ``.index`` file.

Layout (TensorFlow ``core/lib/io/table_format.txt``, ``format.cc``, ``block.cc``)::

    [data block + trailer]*  [metaindex block + trailer]  [index block + trailer]  footer

* footer: the last 48 bytes: metaindex handle, index handle (each ``varint64 offset,
  varint64 size``), zero padding to 40 bytes, then the magic ``0xdb4775248b80fb57``
  (fixed64, little-endian);
* trailer: 5 bytes after every block: compression type (0 none, 1 Snappy) and a masked
  CRC32C over the block contents plus the type byte;
* block: entries ``varint32 shared, varint32 non_shared, varint32 value_length,
  key_delta, value`` (keys prefix-compressed against the previous key), then
  ``fixed32 restarts[n]`` and ``fixed32 n``; the entry at a restart offset shares
  nothing with its predecessor.

Everything is checked before use: the file size bounds every handle, each varint is
at most 5 (varint32) or 10 (varint64) bytes and fits its width, restart offsets must
point at entry starts, keys must strictly increase, every block's CRC must match.
Any violation raises :class:`~ckptscan.errors.MalformedArchiveError` (or
:class:`~ckptscan.errors.UnsafeArchiveError` for sizes that would exhaust memory).
The whole index is read into memory once (it is small: ~100 bytes per tensor), after
its size is checked against :data:`MAX_INDEX_BYTES`.
"""

from __future__ import annotations

import os
import struct
from typing import Iterator

from ...errors import MalformedArchiveError, UnsafeArchiveError, UnsupportedFormatError
from . import crc

MAGIC = 0xDB4775248B80FB57
MAGIC_BYTES = MAGIC.to_bytes(8, "little")
FOOTER_LEN = 48
TRAILER_LEN = 5
#: Largest ``.index`` file read (a 100,000-tensor checkpoint's index is ~10 MB).
MAX_INDEX_BYTES = 64 << 20
#: Most entries read from one table (each costs ~200 bytes in memory once decoded).
MAX_ENTRIES = 1 << 21
#: Largest uncompressed block accepted (TensorFlow writes 4 KiB blocks; 1 MiB+ is odd).
MAX_BLOCK_BYTES = 64 << 20


class TableError(MalformedArchiveError):
    """A malformed ``.index`` table."""


def _varint(buf: bytes, pos: int, end: int, bits: int, where: str, what: str) -> tuple[int, int]:
    if pos < end and buf[pos] < 0x80:  # one byte: most shared/non-shared/value lengths
        return buf[pos], pos + 1
    result = 0
    shift = 0
    limit = (bits + 6) // 7
    for _ in range(limit):
        if pos >= end:
            raise TableError(where, f"{what}: varint runs past the end of its block")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> bits:
                raise TableError(where, f"{what}: varint overflows {bits} bits")
            return result, pos
        shift += 7
    raise TableError(where, f"{what}: varint longer than {limit} bytes (overflow)")


def is_table(head: bytes, tail: bytes) -> bool:
    """True when ``tail`` (the file's last bytes) ends with the table magic."""
    return len(tail) >= FOOTER_LEN and tail[-8:] == MAGIC_BYTES


def read_index_bytes(path: str, where: str) -> bytes:
    """The bytes of an ``.index`` file, size-checked."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise MalformedArchiveError(where, f"cannot read {os.path.basename(path)} ({exc.strerror or exc})") from exc
    if size > MAX_INDEX_BYTES:
        raise UnsafeArchiveError(where, f"index file is {size} bytes (more than {MAX_INDEX_BYTES >> 20} MiB)")
    with open(path, "rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise MalformedArchiveError(where, "index file changed while being read")
    return data


class Table:
    """An open table: iterate its ``(key, value)`` pairs in order with :meth:`items`."""

    def __init__(self, data: bytes, where: str):
        self.data = data
        self.where = where
        n = len(data)
        if n < FOOTER_LEN:
            raise TableError(where, f"index file is {n} bytes, shorter than the 48-byte table footer (truncated)")
        if data[-8:] != MAGIC_BYTES:
            raise TableError(where, "bad magic: no table magic at the end of the index (truncated, or not a TensorFlow checkpoint index)")
        foot = n - FOOTER_LEN
        pos = foot
        self.metaindex, pos = self._handle(pos, foot + 40, "metaindex handle")
        self.index, pos = self._handle(pos, foot + 40, "index handle")
        self._blocks_end = foot

    def _handle(self, pos: int, end: int, what: str) -> tuple[tuple[int, int], int]:
        off, pos = _varint(self.data, pos, end, 64, self.where, what)
        size, pos = _varint(self.data, pos, end, 64, self.where, what)
        if off > self._limit() or size > self._limit() or off + size + TRAILER_LEN > self._limit():
            raise TableError(self.where, f"{what} points past the end of the file (offset {off}, size {size})")
        return (off, size), pos

    def _limit(self) -> int:
        return len(self.data) - FOOTER_LEN

    def block(self, handle: tuple[int, int], what: str) -> bytes:
        """The verified, uncompressed contents of the block at ``handle``."""
        off, size = handle
        if off + size + TRAILER_LEN > self._limit():
            raise TableError(self.where, f"{what} at offset {off} (size {size}) runs past the end of the file")
        if size > MAX_BLOCK_BYTES:
            raise UnsafeArchiveError(self.where, f"{what} is {size} bytes (absurd)")
        contents = self.data[off : off + size]
        ctype = self.data[off + size]
        stored = struct.unpack_from("<I", self.data, off + size + 1)[0]
        actual = crc.mask(crc.crc32c(self.data[off : off + size + 1], self.where))
        if stored != actual:
            raise TableError(self.where, f"{what} at offset {off}: block checksum mismatch (corrupted index)")
        if ctype == 0:
            return contents
        if ctype == 1:
            return _snappy(contents, self.where, what)
        raise TableError(self.where, f"{what} at offset {off}: unknown compression type {ctype}")

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` of the table, in key order (keys strictly increasing)."""
        index = self.block(self.index, "index block")
        last: bytes | None = None
        count = 0
        seen_blocks: set[tuple[int, int]] = set()
        for _sep, hval in _entries(index, self.where, "index block"):
            h, _ = _decode_handle(hval, self.where, self._limit())
            if h in seen_blocks:
                raise TableError(self.where, f"index block lists the data block at offset {h[0]} twice")
            seen_blocks.add(h)
            for key, value in _entries(self.block(h, f"data block at offset {h[0]}"), self.where, "data block"):
                count += 1
                if count > MAX_ENTRIES:
                    raise UnsafeArchiveError(self.where, f"index holds more than {MAX_ENTRIES} entries")
                if last is not None and key <= last:
                    if key == last:
                        raise TableError(self.where, f"duplicate key {key.decode('utf-8', 'replace')!r}")
                    raise TableError(self.where, "keys out of order (corrupted index)")
                last = key
                yield key, value


def _decode_handle(buf: bytes, where: str, limit: int) -> tuple[tuple[int, int], int]:
    off, pos = _varint(buf, 0, len(buf), 64, where, "block handle")
    size, pos = _varint(buf, pos, len(buf), 64, where, "block handle")
    if off + size + TRAILER_LEN > limit:
        raise TableError(where, f"block handle points past the end of the file (offset {off}, size {size})")
    return (off, size), pos


def _entries(block: bytes, where: str, what: str) -> Iterator[tuple[bytes, bytes]]:
    n = len(block)
    if n < 4:
        raise TableError(where, f"{what} is {n} bytes, too short for its restart count")
    num_restarts = struct.unpack_from("<I", block, n - 4)[0]
    if num_restarts == 0 and n > 4:
        raise TableError(where, f"{what} has entries but no restart points")
    if (num_restarts + 1) * 4 > n:
        raise TableError(where, f"{what}: restart array ({num_restarts} entries) larger than the block")
    data_end = n - (num_restarts + 1) * 4
    restarts = struct.unpack_from(f"<{num_restarts}I", block, data_end)
    prev = 0
    for r in restarts:
        if r >= max(data_end, 1) or r < prev:
            raise TableError(where, f"{what}: restart offset {r} out of range (entries end at {data_end})")
        prev = r
    restart_set = set(restarts)
    pos = 0
    key = b""
    starts: set[int] = set()
    while pos < data_end:
        start = pos
        shared, pos = _varint(block, pos, data_end, 32, where, what)
        non_shared, pos = _varint(block, pos, data_end, 32, where, what)
        vlen, pos = _varint(block, pos, data_end, 32, where, what)
        if shared > len(key):
            raise TableError(where, f"{what}: entry shares {shared} bytes with a {len(key)}-byte key")
        if start in restart_set and shared:
            raise TableError(where, f"{what}: entry at restart offset {start} shares a prefix")
        if non_shared + vlen > data_end - pos:
            raise TableError(where, f"{what}: entry at offset {start} runs past the end of the block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        value = block[pos : pos + vlen]
        pos += vlen
        starts.add(start)
        yield key, value
    missing = restart_set - starts - ({0} if data_end == 0 else set())
    if missing:
        bad = min(missing)
        raise TableError(where, f"{what}: restart offset {bad} does not start an entry")


def _snappy(contents: bytes, where: str, what: str) -> bytes:
    """Decompress a Snappy block (tables written before TensorFlow 1.1) with cramjam."""
    # the uncompressed length leads the raw Snappy stream: bound it before allocating
    length, _ = _varint(contents, 0, len(contents), 32, where, f"{what} (snappy length)")
    if length > MAX_BLOCK_BYTES:
        raise UnsafeArchiveError(where, f"{what}: Snappy block expands to {length} bytes (absurd)")
    try:
        import cramjam
    except ImportError as exc:
        raise UnsupportedFormatError(
            where, "TensorFlow checkpoint index with Snappy-compressed blocks: needs the 'snappy' extra "
            "(pip install 'ckptscan[snappy]')"
        ) from exc
    try:
        out = bytes(cramjam.snappy.decompress_raw(contents))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise TableError(where, f"{what}: corrupt Snappy data ({exc})") from None
    if len(out) != length:
        raise TableError(where, f"{what}: Snappy block has {len(out)} bytes, its header says {length}")
    return out
