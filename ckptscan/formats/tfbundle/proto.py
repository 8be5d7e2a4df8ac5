"""A small, bounded protobuf wire-format decoder for the handful of messages ckptscan reads.

Why not the ``protobuf`` runtime with generated classes? The messages read here are
five small ones (``BundleHeaderProto``, ``BundleEntryProto`` with ``TensorShapeProto``
and ``TensorSliceProto``, ``TrackableObjectGraph``, tf-keras' ``SavedMetadata``), of
which ckptscan needs a dozen fields. The runtime would be a fourth dependency (or an
extra) whose version must match the generated code, and its parser accepts inputs of
any size and depth, which the hostile-input rules of this project then have to bound
from outside anyway. The wire format is five rules (varint, fixed64, length-delimited,
fixed32, and the deprecated groups, refused), so a decoder that checks every length
against the remaining bytes, caps varints at 10 bytes and 64 bits, and only recurses
into the known sub-messages is shorter than the glue around generated classes, and
every malformation becomes one :class:`~ckptscan.errors.MalformedArchiveError`.

Field numbers are the ones of TensorFlow's ``.proto`` files named on each decoder.
Unknown fields are skipped (forward compatible, as protobuf itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import MalformedArchiveError

VARINT, FIXED64, LEN, GROUP_START, GROUP_END, FIXED32 = 0, 1, 2, 3, 4, 5


class ProtoError(ValueError):
    """Malformed protobuf bytes (turned into MalformedArchiveError by the callers)."""


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; at most 10 bytes, value below 2**64."""
    if pos < end and buf[pos] < 0x80:  # one byte: field keys, small sizes (most of them)
        return buf[pos], pos + 1
    result = 0
    shift = 0
    for i in range(10):
        if pos >= end:
            raise ProtoError("varint runs past the end")
        b = buf[pos]
        pos += 1
        if i == 9 and b > 1:
            raise ProtoError("varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise ProtoError("varint longer than 10 bytes")


def to_int64(v: int) -> int:
    """Two's complement view of a varint decoded as uint64 (int64 fields)."""
    return v - (1 << 64) if v >= (1 << 63) else v


def fields(buf, start: int = 0, end: int | None = None):
    """Yield ``(field_number, wire_type, value)``; LEN values as ``(start, end)`` spans."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wt == VARINT:
            v, pos = read_varint(buf, pos, end)
        elif wt == FIXED64:
            if pos + 8 > end:
                raise ProtoError("fixed64 runs past the end")
            v = int.from_bytes(bytes(buf[pos : pos + 8]), "little")
            pos += 8
        elif wt == FIXED32:
            if pos + 4 > end:
                raise ProtoError("fixed32 runs past the end")
            v = int.from_bytes(bytes(buf[pos : pos + 4]), "little")
            pos += 4
        elif wt == LEN:
            n, pos = read_varint(buf, pos, end)
            if n > end - pos:
                raise ProtoError("length-delimited field runs past the end")
            v = (pos, pos + n)
            pos += n
        else:
            raise ProtoError(f"unsupported wire type {wt}")
        yield num, wt, v


#: Largest span decoded into a list by :func:`field_list` (a field takes at least two
#: bytes, so the list holds at most 4,096 fields, ~0.5 MB); longer spans are iterated.
LIST_SPAN = 8192


def field_list(buf, start: int = 0, end: int | None = None):
    """:func:`fields`, decoded in one loop into a list (same checks, same errors).

    The object graph of a ResNet101V2 checkpoint is ~17,000 fields and its index ~550
    entries of ~8 fields each: one generator resumption and two calls per field were
    most of the time spent opening it. Here the one-byte varints that nearly every key,
    length and small value are take no call, and the fields come back as one list.
    A span longer than :data:`LIST_SPAN` bytes is handed to the :func:`fields`
    generator instead, so a hostile message of millions of tiny fields never becomes a
    list of millions (the callers' own caps apply while they iterate).
    """
    end = len(buf) if end is None else end
    if end - start > LIST_SPAN:
        return fields(buf, start, end)
    out: list[tuple[int, int, object]] = []
    append = out.append
    pos = start
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        num = key >> 3
        wt = key & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wt == LEN:
            if pos < end and buf[pos] < 0x80:
                n = buf[pos]
                pos += 1
            else:
                n, pos = read_varint(buf, pos, end)
            if n > end - pos:
                raise ProtoError("length-delimited field runs past the end")
            append((num, LEN, (pos, pos + n)))
            pos += n
        elif wt == VARINT:
            if pos < end and buf[pos] < 0x80:
                append((num, VARINT, buf[pos]))
                pos += 1
            else:
                v, pos = read_varint(buf, pos, end)
                append((num, VARINT, v))
        elif wt == FIXED32:
            if pos + 4 > end:
                raise ProtoError("fixed32 runs past the end")
            append((num, FIXED32, int.from_bytes(bytes(buf[pos : pos + 4]), "little")))
            pos += 4
        elif wt == FIXED64:
            if pos + 8 > end:
                raise ProtoError("fixed64 runs past the end")
            append((num, FIXED64, int.from_bytes(bytes(buf[pos : pos + 8]), "little")))
            pos += 8
        else:
            raise ProtoError(f"unsupported wire type {wt}")
    return out


def _str(buf, span) -> str:
    if type(buf) is bytes:
        return buf[span[0] : span[1]].decode("utf-8", "replace")
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "replace")


def _need(wt: int, want: int, what: str) -> None:
    if wt != want:
        raise ProtoError(f"{what} has wire type {wt}")


# --- tensor_bundle.proto ---------------------------------------------------------------


@dataclass
class BundleHeader:
    """``BundleHeaderProto``: num_shards = 1, endianness = 2, version = 3 (VersionDef)."""

    num_shards: int = 0
    endianness: int = 0
    version: int = 0


def parse_header(buf) -> BundleHeader:
    """Decode a ``BundleHeaderProto``."""
    h = BundleHeader()
    for num, wt, v in fields(buf):
        if num == 1:
            _need(wt, VARINT, "num_shards")
            h.num_shards = v
        elif num == 2:
            _need(wt, VARINT, "endianness")
            h.endianness = v
        elif num == 3 and wt == LEN:
            for n2, w2, v2 in fields(buf, *v):  # VersionDef.producer = 1
                if n2 == 1 and w2 == VARINT:
                    h.version = to_int64(v2)
    return h


@dataclass
class BundleEntry:
    """``BundleEntryProto``: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""

    dtype: int = 0
    shape: tuple[int, ...] = ()
    unknown_rank: bool = False
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None
    slices: list = field(default_factory=list)
    """Each slice: tuple of (start, length) per dimension (length -1: the whole dimension)."""


#: Most dimensions accepted in a shape (TensorFlow's own limit is 254).
MAX_RANK = 254
MAX_SLICES = 1 << 16


def parse_shape(buf, start: int, end: int) -> tuple[tuple[int, ...], bool]:
    """``TensorShapeProto``: dim = 2 (Dim: size = 1, name = 2), unknown_rank = 3."""
    dims: list[int] = []
    unknown = False
    for num, wt, v in field_list(buf, start, end):
        if num == 2:
            _need(wt, LEN, "shape dim")
            size = 0
            for n2, w2, v2 in field_list(buf, *v):
                if n2 == 1:
                    _need(w2, VARINT, "dim size")
                    size = to_int64(v2)
            dims.append(size)
            if len(dims) > MAX_RANK:
                raise ProtoError(f"shape has more than {MAX_RANK} dimensions")
        elif num == 3 and wt == VARINT:
            unknown = bool(v)
    return tuple(dims), unknown


def parse_slice(buf, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """``TensorSliceProto``: extent = 1 (Extent: start = 1, length = 2)."""
    out = []
    for num, wt, v in field_list(buf, start, end):
        if num == 1:
            _need(wt, LEN, "slice extent")
            s, length = 0, -1
            for n2, w2, v2 in field_list(buf, *v):
                if n2 == 1 and w2 == VARINT:
                    s = to_int64(v2)
                elif n2 == 2 and w2 == VARINT:
                    length = to_int64(v2)
            out.append((s, length))
            if len(out) > MAX_RANK:
                raise ProtoError("slice has too many extents")
    return tuple(out)


def _varint63(buf, pos: int, end: int) -> tuple[int, int]:
    """A varint of at most 9 bytes (below 2**63) for the fast paths; (-1, pos) when it
    is longer, negative as int64 or runs past ``end`` (the generic decoder then decides)."""
    v = shift = 0
    while pos < end and shift <= 56:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7
    return -1, pos


def _shape_fast(buf, pos: int, end: int) -> tuple[int, ...] | None:
    """A shape whose dims hold only a size (what TensorFlow writes), else None."""
    dims: list[int] = []
    while pos < end:
        if pos + 2 > end or buf[pos] != 0x12:  # dim = 2, LEN, one-byte length
            return None
        n = buf[pos + 1]
        pos += 2
        if n == 0:
            dims.append(0)
        else:
            if n >= 0x80 or pos + n > end or buf[pos] != 0x08:  # Dim.size = 1, VARINT
                return None
            if n == 2 and buf[pos + 1] < 0x80:  # a size below 128, in one byte
                v, q = buf[pos + 1], pos + 2
            else:
                v, q = _varint63(buf, pos + 1, pos + n)
            if v < 0 or q != pos + n:
                return None
            dims.append(v)
            pos = q
        if len(dims) > MAX_RANK:
            return None
    return tuple(dims)


#: Most distinct shapes one ``shapes`` memo of :func:`_entry_fast` holds.
MAX_SHAPE_MEMO = 4096


def _entry_fast(buf, shapes: dict | None = None) -> BundleEntry | None:
    """The entries TensorFlow writes (one-byte keys and lengths, sizes below 2**63, no
    slices, no unknown rank) in one loop; None for anything else (:func:`parse_entry`
    then decodes it field by field, with the same checks and errors as ever).

    ``shapes``: encoded shape → decoded shape, filled as entries are decoded (a model's
    tensors have few distinct shapes: 29 for ResNet101V2's 545 entries), at most
    :data:`MAX_SHAPE_MEMO` of them."""
    end = len(buf)
    pos = 0
    dtype = shard = offset = size = 0
    crc32c = None
    if type(buf) is not bytes:  # the memo's keys are bytes
        shapes = None
    shape: tuple[int, ...] = ()
    while pos < end:
        k = buf[pos]
        pos += 1
        if k == 0x35:  # crc32c = 6, FIXED32
            if pos + 4 > end:
                return None
            crc32c = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif k == 0x12:  # shape = 2, LEN
            n = buf[pos] if pos < end else 0x80
            if n >= 0x80 or pos + 1 + n > end:
                return None
            if shapes is None:
                got = _shape_fast(buf, pos + 1, pos + 1 + n)
            else:
                enc = buf[pos + 1 : pos + 1 + n]
                got = shapes.get(enc)
                if got is None:
                    got = _shape_fast(buf, pos + 1, pos + 1 + n)
                    if got is not None and len(shapes) < MAX_SHAPE_MEMO:
                        shapes[enc] = got
            if got is None:
                return None
            shape = got
            pos += 1 + n
        elif k in (0x08, 0x18, 0x20, 0x28):  # dtype, shard_id, offset, size: VARINT
            if pos < end and buf[pos] < 0x80:  # one byte (dtype, small offsets and sizes)
                v = buf[pos]
                pos += 1
            else:
                v, pos = _varint63(buf, pos, end)
                if v < 0:
                    return None
            if k == 0x08:
                dtype = v
            elif k == 0x18:
                shard = v
            elif k == 0x20:
                offset = v
            else:
                size = v
        else:
            return None
    return BundleEntry(dtype, shape, False, shard, offset, size, crc32c)


def parse_entry(buf, fast: bool = True, shapes: dict | None = None) -> BundleEntry:
    """Decode a ``BundleEntryProto`` (the common layout in one loop: :func:`_entry_fast`,
    with its ``shapes`` memo; ``fast=False``: field by field only, the reference the
    tests compare it with)."""
    got = _entry_fast(buf, shapes) if fast else None
    if got is not None:
        return got
    e = BundleEntry()
    for num, wt, v in field_list(buf):
        if num == 1:
            _need(wt, VARINT, "dtype")
            e.dtype = v
        elif num == 2:
            _need(wt, LEN, "shape")
            e.shape, e.unknown_rank = parse_shape(buf, *v)
        elif num == 3:
            _need(wt, VARINT, "shard_id")
            e.shard_id = to_int64(v)
        elif num == 4:
            _need(wt, VARINT, "offset")
            e.offset = to_int64(v)
        elif num == 5:
            _need(wt, VARINT, "size")
            e.size = to_int64(v)
        elif num == 6:
            _need(wt, FIXED32, "crc32c")
            e.crc32c = v
        elif num == 7:
            _need(wt, LEN, "slices")
            e.slices.append(parse_slice(buf, *v))
            if len(e.slices) > MAX_SLICES:
                raise ProtoError("too many slices")
    return e


# --- trackable_object_graph.proto --------------------------------------------------------


@dataclass
class Attribute:
    """``SerializedTensor``: name = 1, full_name = 2, checkpoint_key = 3."""

    name: str = ""
    full_name: str = ""
    checkpoint_key: str = ""


@dataclass
class SlotRef:
    """``SlotVariableReference``: original_variable_node_id = 1, slot_name = 2, slot_variable_node_id = 3."""

    original: int = 0
    slot_name: str = ""
    slot: int = 0


@dataclass
class Node:
    """``TrackableObject``: children = 1 (ObjectReference: node_id = 1, local_name = 2),
    attributes = 2, slot_variables = 3."""

    children: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    slots: list[SlotRef] = field(default_factory=list)


#: Most nodes accepted in an object graph (a ResNet-152 with Adam has ~3,000).
MAX_NODES = 1 << 20
#: Most children + attributes + slot references over all nodes (bounds the memory a
#: graph of tiny records can claim: each costs ~100 bytes once decoded).
MAX_GRAPH_ITEMS = 1 << 21


def _attribute_fast(buf, pos: int, end: int) -> Attribute | None:
    """A ``SerializedTensor`` of string fields with one-byte field keys (what TensorFlow
    writes), else None (decoded field by field). The strings of a ``bytes`` input are
    sliced and decoded in place (:func:`_str` per field was a fifth of the graph's
    decoding)."""
    whole = type(buf) is bytes
    name = full_name = checkpoint_key = ""
    while pos < end:
        if pos + 2 > end:
            return None
        k, n, p = buf[pos], buf[pos + 1], pos + 2
        if n >= 0x80:  # a key of 128 bytes or more (deeply nested layers)
            n, p = _varint63(buf, pos + 1, end)
        pos = p + n
        if n < 0 or pos > end:
            return None
        if k == 0x0A:
            name = (buf[p:pos] if whole else bytes(buf[p:pos])).decode("utf-8", "replace")
        elif k == 0x12:
            full_name = (buf[p:pos] if whole else bytes(buf[p:pos])).decode("utf-8", "replace")
        elif k == 0x1A:
            checkpoint_key = (buf[p:pos] if whole else bytes(buf[p:pos])).decode("utf-8", "replace")
        else:
            return None
    return Attribute(name, full_name, checkpoint_key)


def _node_fast(buf: bytes, pos: int, end: int) -> tuple[Node, int] | None:
    """A ``TrackableObject`` laid out as TensorFlow writes it (one-byte field keys;
    children as node_id then local_name; string attributes; other fields skipped only
    when length-delimited) in one loop, with its number of fields; None for anything
    else, slot variables included (the optimizer's node: decoded field by field).

    Most nodes of a model's graph are a layer or a variable: a few children, one
    attribute and a ``has_checkpoint_values`` flag. Going through :func:`field_list`
    and a second dispatch per field was ~1.5 us a field, half of opening's decoding.
    """
    children: list[tuple[int, str]] = []
    attributes: list[Attribute] = []
    count = 0
    while pos < end:
        if pos + 2 > end:
            return None
        k, n, p = buf[pos], buf[pos + 1], pos + 2
        if n >= 0x80:
            n, p = _varint63(buf, pos + 1, end)
        q = p + n
        if n < 0 or q > end:
            return None
        if k == 0x0A:  # children = 1: node_id = 1 (varint; absent when 0), local_name = 2
            nid, r = _varint63(buf, p + 1, q) if p < q and buf[p] == 0x08 else (0, p)
            if nid < 0 or r + 2 > q or buf[r] != 0x12 or buf[r + 1] >= 0x80 or r + 2 + buf[r + 1] != q:
                return None
            children.append((nid, buf[r + 2 : q].decode("utf-8", "replace")))
        elif k == 0x12:  # attributes = 2
            a = _attribute_fast(buf, p, q)
            if a is None:
                return None
            attributes.append(a)
        elif k & 7 != LEN or k >> 3 <= 3 or k >= 0x80:
            return None
        count += 1
        pos = q
    return Node(children, attributes, []), count


def _graph_fast(buf: bytes) -> list[Node] | None:
    """The whole graph when every record is a node :func:`_node_fast` decodes and the
    caps hold, in one loop (no field tuple per node); None at the first record that is
    not (the field-by-field path then decodes the graph from the start, and raises
    whatever error it finds)."""
    nodes: list[Node] = []
    append = nodes.append
    end = len(buf)
    pos = items = 0
    while pos < end:
        if buf[pos] != 0x0A or pos + 1 >= end:  # nodes = 1, LEN, one-byte key
            return None
        n, p = buf[pos + 1], pos + 2
        if n >= 0x80:
            n, p = _varint63(buf, pos + 1, end)
        q = p + n
        if n < 0 or q > end:
            return None
        got = _node_fast(buf, p, q)
        if got is None:
            return None
        items += got[1]
        if items > MAX_GRAPH_ITEMS or len(nodes) >= MAX_NODES:
            return None
        append(got[0])
        pos = q
    return nodes


def parse_object_graph(buf, fast: bool = True) -> list[Node]:
    """Decode a ``TrackableObjectGraph`` (nodes = 1). A graph laid out as TensorFlow
    writes it takes a shorter path (:func:`_graph_fast`, and node by node
    :func:`_node_fast`; ``fast=False``: never; the tests compare the two)."""
    whole = fast and type(buf) is bytes
    if whole:
        got = _graph_fast(buf)
        if got is not None:
            return got
    nodes: list[Node] = []
    items = 0
    for num, wt, v in field_list(buf):
        if num != 1:
            continue
        _need(wt, LEN, "node")
        got = _node_fast(buf, *v) if whole else None
        if got is not None and items + got[1] <= MAX_GRAPH_ITEMS:
            nodes.append(got[0])
            items += got[1]
            if len(nodes) > MAX_NODES:
                raise ProtoError(f"object graph has more than {MAX_NODES} nodes")
            continue
        node = Node()
        for n2, w2, v2 in field_list(buf, *v):
            items += 1
            if items > MAX_GRAPH_ITEMS:
                raise ProtoError(f"object graph has more than {MAX_GRAPH_ITEMS} references")
            if n2 == 1:
                _need(w2, LEN, "child")
                a, b = v2
                if fast and a < b and buf[a] == 0x08:  # as TensorFlow writes it: node_id, then local_name
                    nid, p = _varint63(buf, a + 1, b)
                    if nid >= 0 and p + 2 <= b and buf[p] == 0x12 and buf[p + 1] < 0x80 and p + 2 + buf[p + 1] == b:
                        node.children.append((nid, _str(buf, (p + 2, b))))
                        continue
                nid, name = 0, ""
                for n3, w3, v3 in field_list(buf, *v2):
                    if n3 == 1 and w3 == VARINT:
                        nid = v3
                    elif n3 == 2 and w3 == LEN:
                        name = _str(buf, v3)
                node.children.append((nid, name))
            elif n2 == 2:
                _need(w2, LEN, "attribute")
                a = _attribute_fast(buf, *v2) if fast else None
                if a is not None:
                    node.attributes.append(a)
                    continue
                a = Attribute()
                for n3, w3, v3 in field_list(buf, *v2):
                    if w3 != LEN:
                        continue
                    if n3 == 1:
                        a.name = _str(buf, v3)
                    elif n3 == 2:
                        a.full_name = _str(buf, v3)
                    elif n3 == 3:
                        a.checkpoint_key = _str(buf, v3)
                node.attributes.append(a)
            elif n2 == 3:
                _need(w2, LEN, "slot variable")
                s = SlotRef()
                for n3, w3, v3 in field_list(buf, *v2):
                    if n3 == 1 and w3 == VARINT:
                        s.original = v3
                    elif n3 == 2 and w3 == LEN:
                        s.slot_name = _str(buf, v3)
                    elif n3 == 3 and w3 == VARINT:
                        s.slot = v3
                node.slots.append(s)
        nodes.append(node)
        if len(nodes) > MAX_NODES:
            raise ProtoError(f"object graph has more than {MAX_NODES} nodes")
    return nodes


# --- tf-keras protobuf/saved_metadata.proto ----------------------------------------------


@dataclass
class SavedMeta:
    """``SavedObject`` of ``SavedMetadata`` (nodes = 1): node_id = 2, node_path = 3,
    identifier = 4, metadata = 5 (a JSON string)."""

    node_id: int = -1
    node_path: str = ""
    identifier: str = ""
    metadata: str = ""


def parse_saved_metadata(buf) -> list[SavedMeta]:
    """Decode tf-keras' ``keras_metadata.pb``."""
    out = []
    for num, wt, v in fields(buf):
        if num != 1 or wt != LEN:
            continue
        m = SavedMeta()
        for n2, w2, v2 in fields(buf, *v):
            if n2 == 2 and w2 == VARINT:
                m.node_id = v2
            elif n2 == 3 and w2 == LEN:
                m.node_path = _str(buf, v2)
            elif n2 == 4 and w2 == LEN:
                m.identifier = _str(buf, v2)
            elif n2 == 5 and w2 == LEN:
                m.metadata = _str(buf, v2)
        out.append(m)
        if len(out) > MAX_NODES:
            raise ProtoError("keras_metadata.pb has too many nodes")
    return out


def decode(where: str, what: str, fn, buf):
    """Run a decoder, turning a :class:`ProtoError` into a MalformedArchiveError."""
    try:
        return fn(buf)
    except ProtoError as exc:
        raise MalformedArchiveError(where, f"{what}: malformed protobuf ({exc})") from None
