"""A TensorFlow tensor bundle (``PREFIX.index`` + ``PREFIX.data-NNNNN-of-MMMMM``), read without TensorFlow.

TensorFlow ``core/util/tensor_bundle/tensor_bundle.cc`` and ``naming.cc``: the table
(:mod:`.table`) maps the empty key to a ``BundleHeaderProto`` and every tensor key to a
``BundleEntryProto`` (:mod:`.proto`). Numeric tensors are stored raw, little-endian, at
``offset`` in data shard ``shard_id``, ``size`` bytes, with a masked CRC32C of those
bytes in the entry. String tensors store ``varint64`` lengths, a masked CRC32C of the
lengths (each as uint32, or uint64 when larger), then the bytes; their entry CRC covers
the lengths (as integers), the length checksum and the bytes. Partitioned variables have
an entry listing ``slices`` and one entry per slice under an encoded key.

:class:`Bundle` validates every entry against the header and the shard files before
anything is read: dtype known, shape fully defined and its byte size equal to
``size`` (numeric), ``offset + size`` inside the shard, shard id below ``num_shards``.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from ...errors import MalformedArchiveError, NotAnArchiveError, UnsafeArchiveError, UnsupportedFormatError
from . import crc, proto
from .table import Table, read_index_bytes

#: ``core/framework/types.proto`` DataType → (ckptscan dtype name, bytes per element).
DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 4), 2: ("float64", 8), 3: ("int32", 4), 4: ("uint8", 1), 5: ("int16", 2),
    6: ("int8", 1), 7: ("string", 0), 8: ("complex64", 8), 9: ("int64", 8), 10: ("bool", 1),
    14: ("bfloat16", 2), 17: ("uint16", 2), 18: ("complex128", 16), 19: ("float16", 2),
    22: ("uint32", 4), 23: ("uint64", 8),
}
#: Types that exist in bundles but hold no plain values (resource handles, variants).
OPAQUE = {20: "resource", 21: "variant"}
#: Most data shards accepted (TensorFlow writes one per device; 5 digits in the name).
MAX_SHARDS = 99_999
#: Largest string tensor read whole (the object graph of a big model is a few MB).
MAX_STRING_TENSOR = 64 << 20
HEADER_KEY = b""
#: Most elements a tensor may declare (256 TiB of bytes: far past any real checkpoint).
MAX_ELEMENTS = 1 << 48


class Entry(NamedTuple):
    """One validated tensor entry of the bundle (a named tuple: one is made per tensor,
    and a frozen dataclass took 2.4 us each, 1.3 ms for a ResNet101V2 index)."""

    key: str
    dtype: str
    """ckptscan dtype name (``float32``…, ``string``, ``resource``/``variant`` opaque)."""
    shape: tuple[int, ...]
    shard: str
    """Absolute path of the data shard file."""
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    """Masked CRC32C from the entry (None when absent)."""
    sliced: bool = False
    """A partitioned variable: the values live in per-slice entries, not here."""
    slices: tuple = ()
    """A partitioned variable's slices: per slice, ``(start, length)`` per dimension
    (length -1: the whole dimension); see :mod:`.slices`."""

    @property
    def numeric(self) -> bool:
        """True for dtypes stored raw (not string, resource, variant)."""
        return self.dtype not in ("string", "resource", "variant")


def shard_name(prefix: str, shard_id: int, num_shards: int) -> str:
    """``naming.cc`` DataFilename."""
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def _elements(shape: tuple[int, ...], cap: int, where: str, key: str) -> int:
    n = 1
    for d in shape:
        if d < 0:
            raise MalformedArchiveError(where, f"{key}: shape {list(shape)} has an undefined dimension")
        n *= d
        if n > cap:
            raise UnsafeArchiveError(where, f"{key}: shape {list(shape)} declares more than 2**48 elements (absurd shape)")
    return n


class Bundle:
    """The entries of one ``PREFIX.index`` with their shard files (read-only)."""

    def __init__(self, prefix: str, where: str | None = None, files=None):
        self.prefix = prefix
        self.index_path = prefix + ".index"
        self.where = where or self.index_path
        self.files = files
        """Where the bytes are when not in local files (:class:`ckptscan.formats.tfremote.RemoteFiles`:
        ``index_bytes()``, ``size(path)``, ``pread(path, offset, n)``); None: local files."""
        crc.require(self.where)
        data = read_index_bytes(self.index_path, self.where) if files is None else files.index_bytes()
        table = Table(data, self.where)
        raw: list[tuple[bytes, bytes]] = list(table.items())
        if not raw or raw[0][0] != HEADER_KEY:
            raise MalformedArchiveError(self.where, "index has no bundle header entry (empty key)")
        self.header = proto.decode(self.where, "bundle header", proto.parse_header, raw[0][1])
        h = self.header
        if h.endianness == 1:
            raise UnsupportedFormatError(self.where, "big-endian TensorFlow checkpoint (not supported)")
        if h.endianness != 0:
            raise MalformedArchiveError(self.where, f"bundle header: unknown endianness {h.endianness}")
        if not 1 <= h.num_shards <= MAX_SHARDS:
            raise MalformedArchiveError(self.where, f"bundle header: {h.num_shards} data shards (expected 1 to {MAX_SHARDS})")
        self.shard_sizes: dict[int, int] = {}
        self.entries: dict[str, Entry] = {}
        self.slice_keys: list[str] = []
        self.slice_entries: dict[bytes, Entry] = {}
        """Validated slice entries by raw key (read through :func:`.slices.resolve`)."""
        self._shard_paths: dict[int, str] = {}
        shapes: dict = {}
        for kb, vb in raw[1:]:
            key = kb.decode("utf-8", "surrogateescape")
            try:
                e = proto.parse_entry(vb, shapes=shapes)
            except proto.ProtoError as exc:  # the message names the entry only when needed
                raise MalformedArchiveError(self.where, f"entry {key!r}: malformed protobuf ({exc})") from None
            if kb[:1] == b"\x00":  # an encoded slice key (checkpoint::EncodeTensorNameSlice)
                self.slice_keys.append(key)
                self.slice_entries[kb] = self._validate(key, e)  # its bytes must still lie inside a shard
                continue
            self.entries[key] = self._validate(key, e)

    def _shard_size(self, shard_id: int) -> int:
        size = self.shard_sizes.get(shard_id)
        if size is None:
            path = shard_name(self.prefix, shard_id, self.header.num_shards)
            try:
                size = os.path.getsize(path) if self.files is None else self.files.size(path)
            except (OSError, NotAnArchiveError):
                raise MalformedArchiveError(self.where, f"data shard {os.path.basename(path)} is missing") from None
            self.shard_sizes[shard_id] = size
        return size

    def _validate(self, key: str, e: proto.BundleEntry) -> Entry:
        w = self.where
        if e.dtype in DTYPES:
            dtype, item = DTYPES[e.dtype]
        elif e.dtype in OPAQUE:
            dtype, item = OPAQUE[e.dtype], 0
        else:
            raise MalformedArchiveError(w, f"{key}: unknown dtype number {e.dtype}")
        if e.unknown_rank:
            raise MalformedArchiveError(w, f"{key}: shape of unknown rank")
        sliced = bool(e.slices)
        if sliced:
            _elements(e.shape, MAX_ELEMENTS, w, key)
            return Entry(key, dtype, e.shape, "", e.shard_id, 0, 0, e.crc32c, True, tuple(e.slices))
        if not 0 <= e.shard_id < self.header.num_shards:
            raise MalformedArchiveError(w, f"{key}: shard id {e.shard_id} outside the {self.header.num_shards} shard(s)")
        if e.offset < 0 or e.size < 0:
            raise MalformedArchiveError(w, f"{key}: negative offset or size")
        shard_size = self.shard_sizes.get(e.shard_id)
        if shard_size is None:
            shard_size = self._shard_size(e.shard_id)
        if e.offset + e.size > shard_size:
            raise MalformedArchiveError(
                w, f"{key}: bytes {e.offset}..{e.offset + e.size} lie past the end of data shard {e.shard_id} "
                f"({shard_size} bytes; truncated?)")
        if item:
            shape = e.shape
            if len(shape) == 1 and 0 <= shape[0] <= MAX_ELEMENTS:  # vectors: most entries
                n = shape[0]
            else:
                n = _elements(shape, MAX_ELEMENTS, w, key)
            if n * item != e.size:
                raise MalformedArchiveError(
                    w, f"{key}: {e.size} stored bytes do not match shape {list(e.shape)} x {dtype} ({n * item} bytes)")
        elif dtype == "string":
            _elements(e.shape, e.size, w, key)  # at least one length byte per element
        path = self._shard_paths.get(e.shard_id)
        if path is None:
            path = self._shard_paths[e.shard_id] = shard_name(self.prefix, e.shard_id, self.header.num_shards)
        return Entry(key, dtype, tuple(e.shape), path, e.shard_id, e.offset, e.size, e.crc32c, False)

    # --- values ---------------------------------------------------------------------

    def read_bytes(self, entry: Entry) -> bytes:
        """The stored bytes of ``entry`` (whole: for small tensors and strings only)."""
        if self.files is not None:
            data = self.files.pread(entry.shard, entry.offset, entry.size)
            if len(data) != entry.size:
                raise MalformedArchiveError(self.where, f"{entry.key}: data shard ends early (truncated)")
            return data
        with open(entry.shard, "rb") as fh:
            fh.seek(entry.offset)
            data = fh.read(entry.size)
        if len(data) != entry.size:
            raise MalformedArchiveError(self.where, f"{entry.key}: data shard ends early (truncated)")
        return data

    def read_strings(self, entry: Entry) -> list[bytes]:
        """Decode a string tensor, verifying its length checksum and its entry CRC32C."""
        w = self.where
        if entry.dtype != "string":
            raise MalformedArchiveError(w, f"{entry.key}: expected a string tensor, found {entry.dtype}")
        if entry.size > MAX_STRING_TENSOR:
            raise UnsafeArchiveError(w, f"{entry.key}: string tensor of {entry.size} bytes (too large)")
        data = self.read_bytes(entry)
        n = 1
        for d in entry.shape:
            n *= d
        pos = 0
        lengths = []
        running = 0
        for _ in range(n):
            try:
                ln, pos = proto.read_varint(data, pos, len(data))
            except proto.ProtoError as exc:
                raise MalformedArchiveError(w, f"{entry.key}: string lengths: {exc}") from None
            lengths.append(ln)
            running = crc.crc32c(struct.pack("<I", ln) if ln <= 0xFFFFFFFF else struct.pack("<Q", ln), w, running)
        if pos + 4 > len(data):
            raise MalformedArchiveError(w, f"{entry.key}: string tensor ends before its length checksum")
        stored = struct.unpack_from("<I", data, pos)[0]
        if stored != crc.mask(running):
            raise MalformedArchiveError(w, f"{entry.key}: string lengths checksum mismatch (corrupted data)")
        running = crc.crc32c(data[pos : pos + 4], w, running)
        pos += 4
        if sum(lengths) != len(data) - pos:
            raise MalformedArchiveError(w, f"{entry.key}: string lengths ({sum(lengths)} bytes) do not match the stored size")
        out = []
        for ln in lengths:
            out.append(data[pos : pos + ln])
            pos += ln
        running = crc.crc32c(data[pos - sum(lengths) : pos], w, running)
        if entry.crc32c is not None and crc.mask(running) != entry.crc32c:
            raise MalformedArchiveError(w, f"{entry.key}: checksum mismatch (corrupted data)")
        return out
