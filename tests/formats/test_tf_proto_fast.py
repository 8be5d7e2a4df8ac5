"""The short decoding paths of :mod:`ckptscan.formats.tfbundle.proto` (entries, object-graph
children and attributes as TensorFlow writes them) give exactly what the field-by-field
decoder gives: on every entry and object graph of the committed Keras-written fixtures,
on encodings TensorFlow does not write (which must take the long path), and on seeded
random mutations of real messages (same result, or the same error).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

import tfbuild as B
from ckptscan.formats.tfbundle import names, proto
from ckptscan.formats.tfbundle.bundle import Bundle
from ckptscan.formats.tfbundle.table import Table, read_index_bytes

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tfckpt"
INDEXES = sorted(FIXTURES.rglob("*.index"))


def _outcome(fn, buf, fast):
    try:
        got = fn(buf, fast=fast)
    except proto.ProtoError as exc:
        return ("error", str(exc))
    return ("ok", [dataclasses.astuple(n) for n in got] if isinstance(got, list) else dataclasses.astuple(got))


def _entries() -> list[bytes]:
    out = []
    for idx in INDEXES:
        out += [v for k, v in Table(read_index_bytes(str(idx), "t"), "t").items() if k]
    return out


def _graphs() -> list[bytes]:
    out = []
    for idx in INDEXES:
        b = Bundle(str(idx)[: -len(".index")])
        e = b.entries.get(names.OBJECT_GRAPH_KEY)
        if e is not None:
            out += b.read_strings(e)
    return out


def test_fixtures_hold_entries_and_graphs():
    assert len(INDEXES) >= 5
    assert len(_entries()) > 50 and len(_graphs()) >= 4


def test_real_entries_take_the_short_path_and_match():
    entries = _entries()
    assert all(proto._entry_fast(v) is not None for v in entries if not proto.parse_entry(v, fast=False).slices)
    for v in entries:
        assert _outcome(proto.parse_entry, v, True) == _outcome(proto.parse_entry, v, False)


def test_real_graphs_match():
    for g in _graphs():
        fast, slow = _outcome(proto.parse_object_graph, g, True), _outcome(proto.parse_object_graph, g, False)
        assert fast[0] == "ok" and fast == slow


def test_real_graph_nodes_take_the_short_path():
    # every node TensorFlow wrote decodes in one loop, except one holding slot
    # variables (a legacy optimizer's; tf-keras 2.21's optimizers track their slots as
    # plain variables, so the fixtures hold none), which would go field by field
    taken = 0
    for g in _graphs():
        for num, _wt, span in proto.fields(g):
            if num != 1:
                continue
            got = proto._node_fast(g, *span)
            has_slots = any(n == 3 for n, _w, _v in proto.fields(g, *span))
            assert (got is None) == has_slots, g[span[0]: span[0] + 80]
            taken += got is not None
    assert taken > 500


def test_real_graphs_take_the_whole_graph_path():
    # the graph-level loop (_graph_fast) decodes every fixture graph whose nodes all take
    # the node-level one; a graph with a slot-variable node goes field by field
    taken = 0
    for g in _graphs():
        slots = any(proto._node_fast(g, *span) is None for num, _wt, span in proto.fields(g) if num == 1)
        got = proto._graph_fast(g)
        assert (got is None) == slots
        if got is not None:
            taken += 1
            assert [dataclasses.astuple(n) for n in got] == [dataclasses.astuple(n) for n in proto.parse_object_graph(g, fast=False)]
    assert taken >= 4


def test_entries_decode_the_same_with_a_shared_shape_memo(monkeypatch):
    entries = _entries()
    memo: dict = {}
    assert [dataclasses.astuple(proto.parse_entry(v, shapes=memo)) for v in entries] == \
        [dataclasses.astuple(proto.parse_entry(v, fast=False)) for v in entries]
    assert 0 < len(memo) < len(entries)  # shapes repeat: the memo is used
    monkeypatch.setattr(proto, "MAX_SHAPE_MEMO", 3)
    small: dict = {}
    assert [dataclasses.astuple(proto.parse_entry(v, shapes=small)) for v in entries] == \
        [dataclasses.astuple(proto.parse_entry(v, fast=False)) for v in entries]
    assert len(small) == 3


@pytest.mark.parametrize("buf, want", [
    # a dim with a name, a dim of unknown size (-1: ten-byte varint), unknown rank: long path
    (B.pb(1, 1) + B.pb(2, B.pb(2, B.pb(1, 3) + B.pb(2, "rows"))) + B.pb(5, 12), ((3,), False)),
    (B.pb(1, 1) + B.pb(2, B.pb(2, B.pb(1, (1 << 64) - 1))), ((-1,), False)),
    (B.pb(1, 1) + B.pb(2, B.pb(3, 1)), ((), True)),
    # a two-byte field key for dtype (field 1 written as 0x88 0x00): long path, same value
    (b"\x88\x00\x01" + B.pb(5, 4), ((), False)),
])
def test_unusual_entries_take_the_long_path(buf, want):
    assert proto._entry_fast(buf) is None
    e = proto.parse_entry(buf)
    assert (e.shape, e.unknown_rank) == want
    assert dataclasses.astuple(e) == dataclasses.astuple(proto.parse_entry(buf, fast=False))


def test_unusual_graph_records_decode_the_same():
    key = "x" * 200  # a checkpoint key longer than 127 bytes: two-byte length
    child_swapped = B.pb(1, B.pb(2, "dense") + B.pb(1, 1))  # local_name before node_id
    attr = B.pb(2, B.pb(1, "VARIABLE_VALUE") + B.pb(2, "dense/kernel") + B.pb(3, key))
    slot = B.pb(3, B.pb(1, 1) + B.pb(2, "m") + B.pb(3, 2))  # a legacy optimizer's slot reference
    g = B.graph([B.pb(1, B.pb(1, 1) + B.pb(2, "layer_with_weights-0")) + child_swapped, attr, slot])
    nodes = proto.parse_object_graph(g)
    assert nodes[0].children == [(1, "layer_with_weights-0"), (1, "dense")]
    assert nodes[1].attributes[0].checkpoint_key == key
    assert [(s.original, s.slot_name, s.slot) for s in nodes[2].slots] == [(1, "m", 2)]
    assert [dataclasses.astuple(n) for n in nodes] == [dataclasses.astuple(n) for n in proto.parse_object_graph(g, fast=False)]


def test_a_child_whose_name_length_is_a_two_byte_varint_gone_wrong_is_refused():
    # local_name's length reads 0x85 0x01 = 133 but only 132 bytes follow it: the record
    # ends exactly 0x85 bytes after the length byte, which must not pass for a length
    ref = b"\x08\x01\x12\x85\x01" + b"n" * 132
    g = B.graph([B.pb(1, ref)])
    with pytest.raises(proto.ProtoError, match="runs past the end"):
        proto.parse_object_graph(g)
    with pytest.raises(proto.ProtoError, match="runs past the end"):
        proto.parse_object_graph(g, fast=False)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    v = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.4 and v:
            v[rng.randrange(len(v))] = rng.randrange(256)
        elif r < 0.6 and v:
            v[rng.randrange(len(v))] = rng.choice([0x00, 0x01, 0x08, 0x0A, 0x12, 0x1A, 0x35, 0x3A, 0x7F, 0x80, 0xFF])
        elif r < 0.8:
            v.insert(rng.randrange(len(v) + 1), rng.randrange(256))
        elif v:
            del v[rng.randrange(len(v)) :]
    return bytes(v)


def test_mutated_entries_same_result_or_same_error():
    rng = random.Random(14)
    entries = _entries()
    outcomes = set()
    for _ in range(3000):
        v = _mutate(rng, rng.choice(entries))
        fast = _outcome(proto.parse_entry, v, True)
        assert fast == _outcome(proto.parse_entry, v, False), v
        outcomes.add(fast[0])
    assert outcomes == {"ok", "error"}


def test_mutated_graphs_same_result_or_same_error():
    rng = random.Random(5)
    graphs = [g for g in _graphs() if len(g) < 20_000]
    outcomes = set()
    for _ in range(400):
        g = _mutate(rng, rng.choice(graphs))
        fast = _outcome(proto.parse_object_graph, g, True)
        assert fast == _outcome(proto.parse_object_graph, g, False)
        outcomes.add(fast[0])
    assert outcomes == {"ok", "error"}
