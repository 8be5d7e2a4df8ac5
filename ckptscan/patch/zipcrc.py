"""CRC-32 bookkeeping for writing inside a stored ``.keras`` zip member.

CRC-32 is affine over GF(2): for two messages of the same length,
``crc(A) ^ crc(B) == lin(A ^ B)`` where ``lin`` is the CRC register with zero
pre- and post-conditioning. Changing ``n`` bytes at offset ``o`` of an ``L``-byte
member therefore changes its CRC by ``lin(delta)`` shifted through ``L - o - n``
zero bytes, and the shift is a 32×32 bit-matrix power (zlib's ``crc32_combine``).
The update costs O(bytes changed + log L), never a pass over the member.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import MalformedArchiveError
from ..formats.gf2 import square, times

_POLY = 0xEDB88320


def shift_zeros(crc_reg: int, nbytes: int) -> int:
    """The raw CRC register after feeding ``nbytes`` zero bytes (O(log n))."""
    if nbytes <= 0 or crc_reg == 0:
        return crc_reg
    odd = [_POLY] + [1 << (n - 1) for n in range(1, 32)]  # one zero bit
    even = square(odd)  # two zero bits
    odd = square(even)  # four zero bits
    while True:
        even = square(odd)  # first pass: one zero byte
        if nbytes & 1:
            crc_reg = times(even, crc_reg)
        nbytes >>= 1
        if not nbytes:
            break
        odd = square(even)
        if nbytes & 1:
            crc_reg = times(odd, crc_reg)
        nbytes >>= 1
        if not nbytes:
            break
    return crc_reg


def crc_delta(old: bytes, new: bytes, offset: int, total: int) -> int:
    """XOR to apply to a member's CRC-32 when ``old`` at ``offset`` becomes ``new``."""
    if len(old) != len(new):
        raise ValueError("old and new regions differ in length")
    delta = (np.frombuffer(old, np.uint8) ^ np.frombuffer(new, np.uint8)).tobytes()
    lin = zlib.crc32(delta, 0xFFFFFFFF) ^ 0xFFFFFFFF
    return shift_zeros(lin, total - offset - len(old))


@dataclass(frozen=True)
class MemberCrc:
    """Where a member's CRC-32 is stored in the archive."""

    name: str
    crc: int
    data_start: int
    size: int
    local_crc_at: int | None
    """Local file header + 14; None when bit 3 is set and the field holds 0 (the CRC
    lives in the data descriptor)."""
    central_crc_at: int
    """Central directory header + 16."""
    descriptor_crc_at: int | None
    """Data descriptor CRC field, when general-purpose bit 3 is set."""


def locate(path: str, member: str) -> MemberCrc:
    """Find every CRC field of a stored ``member`` of the zip at ``path``."""
    with open(path, "rb") as fp:
        zf = zipfile.ZipFile(fp)
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            raise MalformedArchiveError(path, f"zip member {member} is compressed")
        fp.seek(info.header_offset)
        head = fp.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise MalformedArchiveError(path, f"zip member {member}: bad local header")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        data_start = info.header_offset + 30 + name_len + extra_len
        central = None
        pos = zf.start_dir
        size = _central_size(zf, fp)
        fp.seek(pos)
        cd = fp.read(max(0, size))
        off = 0
        while off + 46 <= len(cd) and cd[off:off + 4] == b"PK\x01\x02":
            n, m, k = struct.unpack("<HHH", cd[off + 28:off + 34])
            name = cd[off + 46:off + 46 + n]
            local_off = struct.unpack("<I", cd[off + 42:off + 46])[0]
            flags = struct.unpack("<H", cd[off + 8:off + 10])[0]
            if name.decode("utf-8" if flags & 0x800 else "cp437", "replace") == member and (
                    local_off == info.header_offset or local_off == 0xFFFFFFFF):
                central = pos + off + 16
                break
            off += 46 + n + m + k
        if central is None:
            raise MalformedArchiveError(path, f"zip member {member}: no central directory entry")
        desc = None
        local = info.header_offset + 14
        if info.flag_bits & 0x08:
            fp.seek(data_start + info.compress_size)
            sig = fp.read(4)
            desc = data_start + info.compress_size + (4 if sig == b"PK\x07\x08" else 0)
            if struct.unpack("<I", head[14:18])[0] == 0:
                local = None
        return MemberCrc(member, info.CRC, data_start, info.file_size, local, central, desc)


def _central_size(zf: zipfile.ZipFile, fp) -> int:
    fp.seek(0, 2)
    end = fp.tell()
    return end - zf.start_dir
