"""Partitioned (sliced) variables of a tensor bundle: slice keys, validation, stitching.

A TF1 ``Saver`` writes a partitioned variable (``get_variable(..., partitioner=...)``)
as one entry under the variable's own name holding its dtype, its *full* shape and the
list of its slices (``BundleEntryProto.slices``, each a ``TensorSliceProto``: one
``Extent {start, length}`` per dimension, ``length`` absent for the whole dimension),
and one ordinary entry per slice holding that slice's values (TensorFlow
``tensor_bundle.cc`` ``BundleWriter::AddSlice``). A slice's entry is keyed by
``checkpoint::EncodeTensorNameSlice`` (``core/util/saved_tensor_slice_util.cc``) in
TensorFlow's *ordered code* (``core/lib/strings/ordered_code.cc``):

* ``WriteNumIncreasing(0)``: the leading ``\\x00`` (so every slice key sorts first);
* ``WriteString(name)``: the name with ``\\x00`` escaped as ``\\x00\\xff`` and ``\\xff`` as
  ``\\xff\\x00``, then the separator ``\\x00\\x01``;
* ``WriteNumIncreasing(rank)``: a length byte, then the value big-endian without leading
  zero bytes (0 is the single byte ``\\x00``);
* per dimension ``WriteSignedNumIncreasing(start)`` and ``(length)`` (``-1`` for a whole
  dimension): a self-delimiting signed code whose leading bits give its byte count
  (one byte covers -64..63: ``0x80 ^ v``).

:func:`resolve` turns a full entry and the slice entries into :class:`Piece` s, checked
as TensorFlow's reader checks them before it stitches a full tensor (each slice's
entry present, of the full dtype and of the slice's shape; extents inside the full
shape; no two slices overlapping; together covering every element): any violation
is a :class:`~ckptscan.errors.MalformedArchiveError`. :func:`stitch` yields the full
tensor in C order, a bounded block of leading-axis rows at a time, verifying each
slice's CRC32C as its bytes stream past.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ...errors import MalformedArchiveError, UnsafeArchiveError

#: Largest leading-axis row (bytes) stitched at once: a partitioned tensor is read in
#: blocks of whole rows, so a single row larger than this is refused (never met in
#: practice: TensorFlow's partitioners split a tensor along its first axis).
MAX_ROW_BYTES = 64 << 20


# --- ordered code (core/lib/strings/ordered_code.cc) ---------------------------------------


def _num_increasing(v: int) -> bytes:
    body = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes([len(body)]) + body


def _signed_increasing(v: int) -> bytes:
    """``WriteSignedNumIncreasing``: the ``n``-byte two's complement of ``v`` (``n`` the fewest
    bytes holding its ``7n - 1`` value bits) xored with ``n`` leading one bits."""
    x = ~v if v < 0 else v
    bits = x.bit_length() + 1  # value bits plus the sign
    n = 1
    while 7 * n < bits:
        n += 1
    if n > 10:
        raise ValueError("value out of range")
    word = v & ((1 << (8 * n)) - 1)
    header = ((1 << n) - 1) << (8 * n - n)  # n leading one bits (sign + n - 1 size bits)
    return (word ^ header).to_bytes(n, "big")


_SPECIAL = re.compile(rb"[\x00\xff]")
_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}


def encode_key(name: str, extents: tuple[tuple[int, int], ...]) -> bytes:
    """TensorFlow's ``EncodeTensorNameSlice(name, slice)``: the key of one slice's entry."""
    raw = _SPECIAL.sub(lambda m: _ESCAPES[m.group()], name.encode("utf-8", "surrogateescape"))
    out = _num_increasing(0) + raw + b"\x00\x01" + _num_increasing(len(extents))
    for start, length in extents:
        out += _signed_increasing(start) + _signed_increasing(length)
    return out


class SliceKeyError(ValueError):
    """A slice key that is not TensorFlow's ordered code."""


def decode_key(key: bytes) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``DecodeTensorNameSlice``: (name, ((start, length), ...)) of a slice key."""
    pos = 0
    if key[:1] != b"\x00":
        raise SliceKeyError("slice key does not start with 0")
    pos = 1
    name = bytearray()
    while True:
        if pos + 1 >= len(key):
            raise SliceKeyError("slice key name has no terminator")
        b = key[pos]
        if b not in (0x00, 0xFF):
            name.append(b)
            pos += 1
            continue
        nxt = key[pos + 1]
        pos += 2
        if b == 0x00 and nxt == 0x01:
            break
        if b == 0x00 and nxt == 0xFF:
            name.append(0)
        elif b == 0xFF and nxt == 0x00:
            name.append(0xFF)
        else:
            raise SliceKeyError("bad escape in slice key name")
    n, pos = _read_num(key, pos)
    extents = []
    for _ in range(n):
        s, pos = _read_signed(key, pos)
        ln, pos = _read_signed(key, pos)
        extents.append((s, ln))
    if pos != len(key):
        raise SliceKeyError("trailing bytes after the slice extents")
    return name.decode("utf-8", "surrogateescape"), tuple(extents)


def _read_num(key: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(key):
        raise SliceKeyError("slice key ends before its rank")
    n = key[pos]
    if n > 8 or pos + 1 + n > len(key):
        raise SliceKeyError("bad rank in slice key")
    return int.from_bytes(key[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def _read_signed(key: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(key):
        raise SliceKeyError("slice key ends inside an extent")
    neg = not key[pos] & 0x80
    flip = 0xFF if neg else 0x00
    # count the leading bits equal to the sign bit (over up to two bytes): that is the length
    bits = ((key[pos] ^ flip) << 8) | ((key[pos + 1] ^ flip) if pos + 1 < len(key) else 0)
    n = 0
    while n < 11 and bits & (0x8000 >> n):
        n += 1
    if not 1 <= n <= 10 or pos + n > len(key):
        raise SliceKeyError("bad signed number in slice key")
    word = int.from_bytes(key[pos : pos + n], "big") ^ (((1 << n) - 1) << (8 * n - n))
    return (word - (1 << (8 * n)) if neg else word), pos + n


# --- pieces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One slice of a partitioned variable, its extents made concrete."""

    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    key: bytes
    """The slice entry's raw key."""
    entry: object
    """Its validated :class:`~.bundle.Entry` (the slice's bytes in a data shard)."""


def resolve(where: str, name: str, shape: tuple[int, ...], dtype: str, slices, lookup: Callable[[bytes], object]
            ) -> list[Piece]:
    """The pieces of the partitioned variable ``name`` (validated; see the module doc).

    ``lookup(key)`` returns the slice entry under that raw key, or None.
    """
    label = f"partitioned variable {name}"
    rank = len(shape)
    pieces: list[Piece] = []
    for sl in slices:
        if len(sl) != rank:
            raise MalformedArchiveError(where, f"{label}: slice of rank {len(sl)} for a tensor of rank {rank}")
        starts, lengths = [], []
        for d, (s, ln) in enumerate(sl):
            full = ln == -1
            length = shape[d] if full else ln
            if full and s != 0 or s < 0 or length < 0 or s + length > shape[d]:
                raise MalformedArchiveError(
                    where, f"{label}: slice {_spec(sl)} lies outside its shape {list(shape)} (dimension {d})")
            starts.append(s)
            lengths.append(length)
        key = encode_key(name, tuple(sl))
        entry = lookup(key)
        if entry is None or entry.sliced:
            raise MalformedArchiveError(where, f"{label}: the entry of slice {_spec(sl)} is missing")
        if entry.dtype != dtype:
            raise MalformedArchiveError(where, f"{label}: slice {_spec(sl)} is {entry.dtype}, the variable {dtype}")
        if tuple(entry.shape) != tuple(lengths):
            raise MalformedArchiveError(
                where, f"{label}: slice {_spec(sl)} stores shape {list(entry.shape)}, expected {lengths}")
        pieces.append(Piece(tuple(starts), tuple(lengths), key, entry))
    _check_tiling(where, label, shape, pieces)
    return pieces


def _spec(sl) -> str:
    """TensorFlow's slice notation: ``start,length`` per dimension, ``-`` for a whole one."""
    return ":".join("-" if ln == -1 else f"{s},{ln}" for s, ln in sl)


#: Most box comparisons made to prove a partitioned variable's slices disjoint (real
#: partitions, split along one axis, need about one per slice; a hostile grid of tens of
#: thousands of slices would need billions).
MAX_OVERLAP_CHECKS = 2_000_000


def _check_tiling(where: str, label: str, shape: tuple[int, ...], pieces: list[Piece]) -> None:
    """No two pieces overlap and together they hold every element exactly once."""
    if shape and len(pieces) > 1:
        _check_disjoint(where, label, shape, pieces)
    if sum(math.prod(p.lengths) for p in pieces) != math.prod(shape):
        raise MalformedArchiveError(where, f"{label}: its slices do not cover the whole tensor {list(shape)}")


def _check_disjoint(where: str, label: str, shape: tuple[int, ...], pieces: list[Piece]) -> None:
    """A sweep along the axis with the most distinct slice starts (the split axis): only the
    pieces still open on that axis are compared with the next one, within a budget."""
    axis = max(range(len(shape)), key=lambda d: len({p.starts[d] for p in pieces}))
    budget = MAX_OVERLAP_CHECKS
    active: list[Piece] = []
    for p in sorted(pieces, key=lambda q: (q.starts[axis], q.starts)):
        if not math.prod(p.lengths):
            continue
        active = [q for q in active if q.starts[axis] + q.lengths[axis] > p.starts[axis]]
        budget -= len(active)
        if budget < 0:
            raise UnsafeArchiveError(where, f"{label}: {len(pieces)} slices too entangled to check for overlaps")
        for q in active:
            if all(a < c + d and c < a + b for a, b, c, d in zip(p.starts, p.lengths, q.starts, q.lengths)):
                raise MalformedArchiveError(where, f"{label}: slices {box(q)} and {box(p)} overlap")
        active.append(p)


def box(p: Piece) -> str:
    """A piece's extents as ``start,length`` per dimension."""
    return ":".join(f"{s},{ln}" for s, ln in zip(p.starts, p.lengths))


# --- stitching ------------------------------------------------------------------------------


def stitch(where: str, name: str, shape: tuple[int, ...], storage: np.dtype, pieces: list[Piece],
           block_elems: int, pread: Callable[[object, int, int], bytes],
           crc_update: Callable[[bytes, int], int]) -> Iterator[tuple[np.ndarray, list[tuple[Piece, int]]]]:
    """The full tensor's stored values in C order, a block of whole leading-axis rows at a
    time (``storage`` dtype, flattened), with, after the last block, each piece's running
    CRC32C (unmasked) for the caller to compare.

    ``pread(entry, offset_in_entry, nbytes)`` reads a slice's bytes; ``crc_update(data,
    running)`` extends a CRC32C. Yields ``(block, [])`` per block and finally
    ``(empty, [(piece, crc), ...])``.
    """
    item = storage.itemsize
    if not shape:  # a scalar cannot be partitioned into several pieces; one piece holds it
        shape = (1,)
        pieces = [Piece((0,), (1,), p.key, p.entry) for p in pieces]
    row = math.prod(shape[1:])
    if row * item > MAX_ROW_BYTES:
        raise UnsafeArchiveError(where, f"partitioned variable {name}: one row of {row * item} bytes "
                                        f"is more than {MAX_ROW_BYTES >> 20} MiB (not stitched)")
    rows_per = max(1, block_elems // max(row, 1))
    running = {p.key: 0 for p in pieces}
    waiting = sorted(pieces, key=lambda q: q.starts[0], reverse=True)  # by first row, next at the end
    open_: list[Piece] = []
    for r0 in range(0, shape[0], rows_per):
        r1 = min(shape[0], r0 + rows_per)
        while waiting and waiting[-1].starts[0] < r1:  # pieces reaching into this block of rows
            open_.append(waiting.pop())
        open_ = [p for p in open_ if p.starts[0] + p.lengths[0] > r0]
        out = np.empty((r1 - r0,) + tuple(shape[1:]), dtype=storage)
        for p in open_:
            a, b = max(r0, p.starts[0]), min(r1, p.starts[0] + p.lengths[0])
            if a >= b:
                continue
            prow = math.prod(p.lengths[1:])
            nbytes = (b - a) * prow * item
            if not nbytes:
                continue
            data = pread(p.entry, (a - p.starts[0]) * prow * item, nbytes)
            if len(data) != nbytes:
                raise MalformedArchiveError(where, f"{name}: data shard ends early (truncated)")
            running[p.key] = crc_update(data, running[p.key])
            part = np.frombuffer(data, dtype=storage).reshape((b - a,) + tuple(p.lengths[1:]))
            index = (slice(a - r0, b - r0),) + tuple(slice(s, s + ln) for s, ln in zip(p.starts[1:], p.lengths[1:]))
            out[index] = part
        yield out.reshape(-1), []
    yield np.empty(0, dtype=storage), [(p, running[p.key]) for p in pieces]


def shard_pread(fds: Callable[[str], int]) -> Callable[[object, int, int], bytes]:
    """A ``pread`` for :func:`stitch` over local shard files (``fds(path)`` gives an fd)."""

    def pread(entry, offset: int, nbytes: int) -> bytes:
        return os.pread(fds(entry.shard), nbytes, entry.offset + offset)

    return pread
