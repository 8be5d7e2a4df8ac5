"""What a patch of a TensorFlow checkpoint must also change: the CRC32C in the index.

TensorFlow verifies each tensor's masked CRC32C (``BundleEntryProto.crc32c``, a fixed32,
so a new value takes exactly the old value's 4 bytes) when it restores it, and each
table block's masked CRC32C (its 5-byte trailer). A repair that changes tensor bytes in
a data shard therefore also overwrites, in the ``.index``, the entry's CRC and the CRC
of the block holding that entry. Every change is a same-size overwrite, so the whole
repair is a list of byte regions (shard bytes, index blocks) that
:mod:`ckptscan.patch` journals, writes, verifies and rolls back as one transaction.

This module only computes bytes; it writes nothing.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ...errors import MalformedArchiveError
from . import crc, proto
from .table import TRAILER_LEN, Table, _decode_handle, _entries, read_index_bytes

#: Bytes read per step when computing a patched tensor's CRC32C.
_STEP = 1 << 20


def patched_crc(path: str, offset: int, nbytes: int, itemsize: int, idx: np.ndarray, new_raw: np.ndarray,
                where: str) -> int:
    """Masked CRC32C the stored bytes will have once ``new_raw`` is written at elements
    ``idx`` (ascending) of the tensor at ``offset`` (streams the tensor, bounded memory)."""
    per = max(1, _STEP // itemsize)
    total = nbytes // itemsize
    running = 0
    idx = np.asarray(idx, dtype=np.int64)
    dt = np.dtype(f"u{itemsize}")
    new_bits = np.ascontiguousarray(new_raw).view(dt)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start in range(0, total, per):
            n = min(per, total - start)
            buf = os.pread(fd, n * itemsize, offset + start * itemsize)
            if len(buf) != n * itemsize:
                raise MalformedArchiveError(where, "data shard ends early (truncated)")
            a, b = np.searchsorted(idx, [start, start + n])
            if b > a:
                block = np.frombuffer(buf, dtype=dt).copy()
                block[idx[a:b] - start] = new_bits[a:b]
                buf = block.tobytes()
            running = crc.crc32c(buf, where, running)
    finally:
        os.close(fd)
    return crc.mask(running)


def _crc_field_at(value: bytes, where: str, key: str) -> int:
    """Offset of the 4 bytes of field 6 (crc32c, fixed32) inside an entry's bytes."""
    pos = 0
    end = len(value)
    try:
        while pos < end:
            tag, after = proto.read_varint(value, pos, end)
            if tag == (6 << 3 | proto.FIXED32):
                return after
            pos = _skip(value, after, tag & 7, end)
    except proto.ProtoError as exc:
        raise MalformedArchiveError(where, f"{key}: malformed entry ({exc})") from None
    raise MalformedArchiveError(where, f"{key}: the index entry has no checksum field to update")


def _skip(buf: bytes, pos: int, wt: int, end: int) -> int:
    if wt == proto.VARINT:
        return proto.read_varint(buf, pos, end)[1]
    if wt == proto.FIXED64:
        return pos + 8
    if wt == proto.FIXED32:
        return pos + 4
    if wt == proto.LEN:
        n, pos = proto.read_varint(buf, pos, end)
        return pos + n
    raise proto.ProtoError(f"unsupported wire type {wt}")


def index_regions(index_path: str, new_crcs: dict[str, int], where: str) -> list[tuple[str, int, bytes, bytes]]:
    """``(file, offset, old bytes, new bytes)`` that give the entries named in ``new_crcs``
    (bundle key -> masked CRC32C) their new checksums, one region per table block
    (contents and trailer)."""
    data = read_index_bytes(index_path, where)
    table = Table(data, where)
    index = table.block(table.index, "index block")
    want = {k.encode("utf-8", "surrogateescape"): v for k, v in new_crcs.items()}
    out = []
    found = set()
    for _sep, hval in _entries(index, where, "index block"):
        (off, size), _ = _decode_handle(hval, where, len(data) - 48)
        if data[off + size] != 0:
            raise MalformedArchiveError(where, "index block is compressed; a patch would have to rewrite it")
        contents = bytearray(table.block((off, size), f"data block at offset {off}"))
        changed = False
        for key, value in _entries(bytes(contents), where, "data block"):
            if key in want:
                start = _value_offset(bytes(contents), key)
                at = start + _crc_field_at(value, where, key.decode("utf-8", "replace"))
                contents[at : at + 4] = struct.pack("<I", want[key])
                changed = True
                found.add(key)
        if changed:
            old = data[off : off + size + TRAILER_LEN]
            new = bytes(contents) + bytes([0]) + struct.pack("<I", crc.mask(crc.crc32c(bytes(contents) + b"\0", where)))
            if new != old:
                out.append((index_path, off, old, new))
    missing = set(want) - found
    if missing:
        raise MalformedArchiveError(where, f"index has no entry {sorted(missing)[0].decode('utf-8', 'replace')!r}")
    return out


def _value_offset(block: bytes, key: bytes) -> int:
    """Offset in ``block`` of the value bytes of the entry whose full key is ``key``."""
    n = len(block)
    num_restarts = struct.unpack_from("<I", block, n - 4)[0]
    data_end = n - (num_restarts + 1) * 4
    pos = 0
    prev = b""
    while pos < data_end:
        shared, pos = proto.read_varint(block, pos, data_end)
        non_shared, pos = proto.read_varint(block, pos, data_end)
        vlen, pos = proto.read_varint(block, pos, data_end)
        k = prev[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        if k == key:
            return pos
        pos += vlen
        prev = k
    raise KeyError(key)
