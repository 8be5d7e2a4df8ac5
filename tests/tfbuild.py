"""Write TensorFlow tensor bundles from Python, for the hostile-input tests.

A small writer of the formats ckptscan reads (TensorFlow ``table_builder.cc``,
``block_builder.cc``, ``tensor_bundle.cc``), used to make well-formed bundles that the
tests then break one field at a time. Real checkpoints written by TensorFlow itself are
in ``fixtures/tfckpt/``; this only exists so each malformation can be made exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np

MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
DT = {"float32": 1, "float64": 2, "int32": 3, "int64": 9, "bool": 10, "bfloat16": 14, "float16": 19, "string": 7}


def mask(c: int) -> int:
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def crc(data: bytes, value: int = 0) -> int:
    return google_crc32c.extend(value, bytes(data))


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb(num: int, value) -> bytes:
    """One protobuf field: int -> varint, bytes/str -> length-delimited, ('f32', v) -> fixed32."""
    if isinstance(value, tuple) and value[0] == "f32":
        return varint(num << 3 | 5) + struct.pack("<I", value[1])
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def block(entries: list[tuple[bytes, bytes]], interval: int = 16) -> bytes:
    out = bytearray()
    restarts = []
    prev = b""
    for i, (k, v) in enumerate(entries):
        if i % interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(k)) and prev[shared] == k[shared]:
                shared += 1
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        prev = k
    if not restarts:
        restarts = [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def with_trailer(contents: bytes, ctype: int = 0) -> bytes:
    return contents + bytes([ctype]) + struct.pack("<I", mask(crc(contents + bytes([ctype]))))


def table(entries: list[tuple[bytes, bytes]], per_block: int = 4) -> bytes:
    out = bytearray()
    index = []
    for i in range(0, len(entries), per_block):
        chunk = entries[i : i + per_block]
        data = block(chunk)
        handle = varint(len(out)) + varint(len(data))
        out += with_trailer(data)
        index.append((chunk[-1][0], handle))
    meta = block([])
    meta_handle = varint(len(out)) + varint(len(meta))
    out += with_trailer(meta)
    idx = block(index, interval=1)
    idx_handle = varint(len(out)) + varint(len(idx))
    out += with_trailer(idx)
    footer = (meta_handle + idx_handle).ljust(40, b"\0") + MAGIC
    return bytes(out + footer)


@dataclass
class Tensor:
    dtype: str
    shape: tuple
    data: bytes
    extra: dict = field(default_factory=dict)
    """Field overrides for the entry (offset, size, shard_id, crc32c, dtype, shape...)."""


def string_tensor(items: list[bytes]) -> bytes:
    lengths = b"".join(varint(len(s)) for s in items)
    c = 0
    for s in items:
        c = crc(struct.pack("<I", len(s)), c)
    return lengths + struct.pack("<I", mask(c)) + b"".join(items)


def string_crc(items: list[bytes]) -> int:
    c = 0
    for s in items:
        c = crc(struct.pack("<I", len(s)), c)
    c = crc(struct.pack("<I", mask(c)), c)
    for s in items:
        c = crc(s, c)
    return mask(c)


def shape_pb(shape) -> bytes:
    return b"".join(pb(2, pb(1, d)) for d in shape)


def entry_pb(dtype, shape, shard_id, offset, size, crc32c) -> bytes:
    out = pb(1, DT[dtype] if isinstance(dtype, str) else dtype) + pb(2, shape_pb(shape))
    if shard_id:
        out += pb(3, shard_id)
    if offset:
        out += pb(4, offset)
    out += pb(5, size)
    if crc32c is not None:
        out += pb(6, ("f32", crc32c))
    return out


def write_bundle(prefix: Path, tensors: dict[str, Tensor], graph: bytes | None = None, num_shards: int = 1,
                 header: bytes | None = None, extra_entries: list[tuple[bytes, bytes]] = (), per_block: int = 4) -> Path:
    """Write ``prefix.index`` + ``prefix.data-00000-of-0000N``; returns the index path."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray()
    entries = []
    items = dict(tensors)
    if graph is not None:
        items["_CHECKPOINTABLE_OBJECT_GRAPH"] = Tensor("string", (), string_tensor([graph]),
                                                      {"crc32c": string_crc([graph])})
    for key in sorted(items):
        t = items[key]
        off = len(data)
        data += t.data
        e = dict(dtype=t.dtype, shape=t.shape, shard_id=0, offset=off, size=len(t.data), crc32c=mask(crc(t.data)))
        e.update(t.extra)
        entries.append((key.encode(), entry_pb(**e)))
    hdr = header if header is not None else pb(1, num_shards) + pb(3, pb(1, 1))
    all_entries = sorted([(b"", hdr)] + entries + list(extra_entries))
    index = prefix.parent / (prefix.name + ".index")
    index.write_bytes(table(all_entries, per_block))
    for i in range(num_shards):
        Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").write_bytes(bytes(data) if i == 0 else b"")
    return index


# --- object graphs --------------------------------------------------------------------------------


def node(children=(), attributes=(), slots=()) -> bytes:
    out = b""
    for cid, name in children:
        out += pb(1, pb(1, cid) + pb(2, name))
    for name, full, key in attributes:
        out += pb(2, pb(1, name) + pb(2, full) + pb(3, key))
    for orig, slot_name, slot in slots:
        out += pb(3, pb(1, orig) + pb(2, slot_name) + pb(3, slot))
    return out


def graph(nodes: list[bytes]) -> bytes:
    return b"".join(pb(1, n) for n in nodes)


def f32(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def dense_bundle(prefix: Path, kernel=None, **kw) -> Path:
    """A model root -> layer_with_weights-0 (Dense ``dense``) -> kernel, bias; object-based."""
    kernel = np.arange(6, dtype="<f4").reshape(2, 3) if kernel is None else kernel
    k = "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    b = "layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE"
    g = graph([
        node(children=[(1, "layer_with_weights-0"), (1, "layer-0")]),
        node(children=[(2, "kernel"), (3, "bias")]),
        node(attributes=[("VARIABLE_VALUE", "dense/kernel", k)]),
        node(attributes=[("VARIABLE_VALUE", "dense/bias", b)]),
    ])
    tensors = {k: Tensor("float32", kernel.shape, kernel.astype("<f4").tobytes()),
               b: Tensor("float32", (3,), f32([0.5, 1.5, 2.5]))}
    tensors.update(kw.pop("tensors", {}))
    return write_bundle(prefix, tensors, kw.pop("graph", g), **kw)
