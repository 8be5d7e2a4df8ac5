"""Hostile TensorFlow checkpoints: each malformation -> exit 2, one line, nothing written.

Bundles are written by ``tests/tfbuild.py`` (TensorFlow reads its output) and then
broken one field at a time: the table (magic, footer, handles, varints, restart
arrays, block checksums, compression, duplicate keys), the bundle entries (offsets and
sizes against the shard, shape x dtype, absurd shapes, header) and the object graph
(references to missing nodes, cycles).
"""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

import tfbuild as B
from ckptscan.cli import main
from ckptscan.formats import open_checkpoint

KEY_K = "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _expect_error(capsys, target, folder, needle):
    before = _snapshot(folder)
    assert main(["inspect", str(target)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("ckptscan: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert _snapshot(folder) == before  # nothing written, nothing left behind


def _raw_table(contents: bytes, ctype: int = 0, good_crc: bool = True) -> bytes:
    """A table whose single data block has exactly ``contents`` (header entry must be in it)."""
    out = bytearray()
    trailer = bytes([ctype]) + struct.pack("<I", B.mask(B.crc(contents + bytes([ctype]))) ^ (0 if good_crc else 1))
    out += contents + trailer
    handle = B.varint(0) + B.varint(len(contents))
    meta = B.block([])
    meta_handle = B.varint(len(out)) + B.varint(len(meta))
    out += B.with_trailer(meta)
    idx = B.block([(b"\xff", handle)], interval=1)
    idx_handle = B.varint(len(out)) + B.varint(len(idx))
    out += B.with_trailer(idx)
    return bytes(out + (meta_handle + idx_handle).ljust(40, b"\0") + B.MAGIC)


def _header() -> bytes:
    return B.pb(1, 1) + B.pb(3, B.pb(1, 1))


# --- the table ----------------------------------------------------------------------------------


def test_valid_bundle_reads(tmp_path):
    B.dense_bundle(tmp_path / "ckpt")
    with open_checkpoint(tmp_path / "ckpt") as ck:
        assert [v.path for v in ck.variables] == ["dense/kernel", "dense/bias"]
        assert ck.read(ck.find("dense/kernel")).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_bad_magic(tmp_path, capsys):
    idx = B.dense_bundle(tmp_path / "ckpt")
    idx.write_bytes(idx.read_bytes()[:-8] + b"\0" * 8)
    _expect_error(capsys, idx, tmp_path, "table magic")


@pytest.mark.parametrize("keep", [0.5, 30 / 1000])
def test_truncated_index(tmp_path, capsys, keep):
    idx = B.dense_bundle(tmp_path / "ckpt")
    data = idx.read_bytes()
    idx.write_bytes(data[: max(1, int(len(data) * keep))])
    _expect_error(capsys, idx, tmp_path, "truncated")


def test_truncated_shard(tmp_path, capsys):
    B.dense_bundle(tmp_path / "ckpt")
    shard = tmp_path / "ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:10])
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "past the end of data shard 0")


def test_block_handle_past_the_end(tmp_path, capsys):
    idx = B.dense_bundle(tmp_path / "ckpt")
    data = idx.read_bytes()
    footer = (B.varint(0) + B.varint(1) + B.varint(10**9) + B.varint(40)).ljust(40, b"\0") + B.MAGIC
    idx.write_bytes(data[:-48] + footer)
    _expect_error(capsys, idx, tmp_path, "points past the end of the file")


def test_varint_overflow_in_footer(tmp_path, capsys):
    idx = B.dense_bundle(tmp_path / "ckpt")
    data = idx.read_bytes()
    idx.write_bytes(data[:-48] + b"\xff" * 40 + B.MAGIC)
    _expect_error(capsys, idx, tmp_path, "overflow")


def test_varint_overflow_in_block_entry(tmp_path, capsys):
    contents = b"\xff\xff\xff\xff\x7f" + b"\x00\x00" + struct.pack("<I", 0) + struct.pack("<I", 1)
    (tmp_path / "ckpt.index").write_bytes(_raw_table(contents))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "overflows 32 bits")


def test_restart_offset_out_of_range(tmp_path, capsys):
    entry = B.varint(0) + B.varint(0) + B.varint(len(_header())) + _header()
    contents = entry + struct.pack("<I", 9999) + struct.pack("<I", 1)
    (tmp_path / "ckpt.index").write_bytes(_raw_table(contents))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "restart offset 9999 out of range")


def test_restart_count_larger_than_block(tmp_path, capsys):
    (tmp_path / "ckpt.index").write_bytes(_raw_table(struct.pack("<I", 0xFFFFFFFF)))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "larger than the block")


def test_block_checksum_mismatch(tmp_path, capsys):
    entry = B.varint(0) + B.varint(0) + B.varint(len(_header())) + _header()
    contents = entry + struct.pack("<I", 0) + struct.pack("<I", 1)
    (tmp_path / "ckpt.index").write_bytes(_raw_table(contents, good_crc=False))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "block checksum mismatch")


def test_snappy_block_is_decompressed(tmp_path):
    import cramjam

    idx = B.dense_bundle(tmp_path / "ckpt")
    # rebuild the index with its data blocks Snappy-compressed, as TensorFlow < 1.1 wrote them
    from ckptscan.formats.tfbundle.table import Table

    entries = list(Table(idx.read_bytes(), str(idx)).items())
    contents = bytes(cramjam.snappy.compress_raw(B.block(entries)))
    idx.write_bytes(_raw_table(contents, ctype=1))
    with open_checkpoint(tmp_path / "ckpt") as ck:
        assert ck.read(ck.find("dense/bias")).tolist() == [0.5, 1.5, 2.5]


def test_corrupt_snappy_block(tmp_path, capsys):
    (tmp_path / "ckpt.index").write_bytes(_raw_table(b"\x10\xff\xff\xff\xff", ctype=1))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "corrupt Snappy data")


def test_snappy_bomb_refused_before_decompressing(tmp_path, capsys):
    (tmp_path / "ckpt.index").write_bytes(_raw_table(B.varint(0xFFFFFFF) + b"\x00", ctype=1))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "absurd")


def test_duplicate_keys(tmp_path, capsys):
    dup = (KEY_K.encode(), B.entry_pb("float32", (3,), 0, 0, 12, None))
    B.dense_bundle(tmp_path / "ckpt", extra_entries=[dup])
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "duplicate key")


# --- entries -----------------------------------------------------------------------------------


def _kernel(**extra):
    return {KEY_K: B.Tensor("float32", (2, 3), np.arange(6, dtype="<f4").tobytes(), extra)}


@pytest.mark.parametrize("extra,needle", [
    ({"offset": 10**6}, "past the end of data shard 0"),
    ({"size": 10**6}, "past the end of data shard 0"),
    ({"size": 20}, "do not match shape [2, 3] x float32"),
    ({"shape": (1 << 40, 1 << 40)}, "absurd shape"),
    ({"shape": (2, -1)}, "undefined dimension"),
    ({"dtype": 99}, "unknown dtype number 99"),
    ({"shard_id": 3}, "shard id 3 outside the 1 shard(s)"),
])
def test_bad_entries(tmp_path, capsys, extra, needle):
    B.dense_bundle(tmp_path / "ckpt", tensors=_kernel(**extra))
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, needle)


def test_malformed_entry_protobuf(tmp_path, capsys):
    bad = (b"zzz", B.varint(1 << 3) + b"\xff" * 11)
    B.dense_bundle(tmp_path / "ckpt", extra_entries=[bad])
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "malformed protobuf")


@pytest.mark.parametrize("header,needle", [
    (B.pb(1, 1) + B.pb(2, 1), "big-endian"),
    (B.pb(1, 0), "0 data shards"),
    (B.pb(1, 1) + B.pb(2, 7), "unknown endianness"),
])
def test_bad_header(tmp_path, capsys, header, needle):
    B.dense_bundle(tmp_path / "ckpt", header=header)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, needle)


def test_missing_shard(tmp_path, capsys):
    B.dense_bundle(tmp_path / "ckpt")
    (tmp_path / "ckpt.data-00000-of-00001").unlink()
    (tmp_path / "keep").write_text("x")
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "data shard ckpt.data-00000-of-00001 is missing")


# --- object graph ------------------------------------------------------------------------------------


def test_graph_refers_to_missing_node(tmp_path, capsys):
    g = B.graph([B.node(children=[(99, "layer_with_weights-0")])])
    B.dense_bundle(tmp_path / "ckpt", graph=g)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "refers to missing node 99")


def test_graph_slot_cycle(tmp_path, capsys):
    g = B.graph([
        B.node(children=[(1, "layer_with_weights-0"), (2, "optimizer")]),
        B.node(children=[(3, "kernel")]),
        B.node(slots=[(3, "m", 3)]),
        B.node(attributes=[("VARIABLE_VALUE", "dense/kernel", KEY_K)]),
    ])
    B.dense_bundle(tmp_path / "ckpt", graph=g)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "slot of itself (cycle)")


def test_graph_variable_unreachable_from_root(tmp_path, capsys):
    g = B.graph([B.node(), B.node(attributes=[("VARIABLE_VALUE", "dense/kernel", KEY_K)])])
    B.dense_bundle(tmp_path / "ckpt", graph=g)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "not reachable from the root")


def test_graph_cycles_are_walked_once(tmp_path):
    """Real tf-keras graphs hold cycles (a model is its own child "root"): each node is
    entered once, so a 100,000-node ring ends, and its variable keeps its first path."""
    n = 100_000
    nodes = [B.node(children=[(1, "layer_with_weights-0"), (0, "root")])]
    nodes.append(B.node(children=[(2, "kernel"), (3, "ring")]))
    nodes.append(B.node(attributes=[("VARIABLE_VALUE", "dense/kernel", KEY_K)]))
    for i in range(3, n):
        nodes.append(B.node(children=[(i + 1 if i + 1 < n else 1, "ring")]))
    B.dense_bundle(tmp_path / "ckpt", graph=B.graph(nodes), tensors={})
    with open_checkpoint(tmp_path / "ckpt") as ck:
        assert ck.find("dense/kernel").shape == (2, 3)


def test_object_graph_string_tensor_checksum(tmp_path, capsys):
    g = B.graph([B.node()])
    B.dense_bundle(tmp_path / "ckpt", graph=g)
    shard = tmp_path / "ckpt.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    from ckptscan.formats.tfbundle.bundle import Bundle

    e = Bundle(str(tmp_path / "ckpt")).entries["_CHECKPOINTABLE_OBJECT_GRAPH"]
    data[e.offset + e.size - 1] ^= 0xFF  # a byte of the serialized graph
    shard.write_bytes(bytes(data))
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "_CHECKPOINTABLE_OBJECT_GRAPH: checksum mismatch")


# --- missing optional libraries -------------------------------------------------------------------------


def test_missing_crc32c_extra_is_one_line(tmp_path, capsys, monkeypatch):
    from ckptscan.formats.tfbundle import crc

    B.dense_bundle(tmp_path / "ckpt")
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    monkeypatch.setattr(crc, "_impl", None)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "needs the 'tf' extra (pip install 'ckptscan[tf]')")


def test_missing_snappy_extra_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "ckpt.index").write_bytes(_raw_table(b"\x05abc", ctype=1))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "cramjam", None)
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "needs the 'snappy' extra")


def test_graph_deeper_than_the_limit(tmp_path, capsys):
    from ckptscan.formats.tfbundle.names import MAX_DEPTH

    n = MAX_DEPTH + 10
    nodes = [B.node(children=[(i + 1, "layer-0")]) for i in range(n)]
    nodes.append(B.node(attributes=[("VARIABLE_VALUE", "dense/kernel", KEY_K)]))
    B.dense_bundle(tmp_path / "ckpt", graph=B.graph(nodes))
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, f"deeper than {MAX_DEPTH} levels")


# --- mutation sweep --------------------------------------------------------------------------------


def _read_everything(target):
    from ckptscan.errors import CkptscanError

    try:
        with open_checkpoint(target) as ck:
            for v in ck.variables:
                if v.is_float:
                    ck.read(v)
            return "ok", len(ck.integrity_failures)
    except CkptscanError as exc:
        assert exc.reason and "\n" not in exc.reason
        return "error", exc.reason


@pytest.mark.parametrize("source", ["bidi_sw", "tf1"])
def test_every_bit_flip_and_truncation_of_a_real_index_is_handled(tmp_path, source):
    """Flip one bit at many positions of a real index (and cut it at many lengths): each
    read either succeeds or raises one CkptscanError; nothing else escapes."""
    from conftest import FIXTURES

    src = FIXTURES / "tfckpt" / source
    prefix_name = "ckpt" if source == "bidi_sw" else "model.ckpt"
    for f in src.iterdir():
        if f.name.startswith(prefix_name):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    idx = tmp_path / f"{prefix_name}.index"
    original = idx.read_bytes()
    outcomes = set()
    step = max(1, len(original) // 300)
    for pos in range(0, len(original), step):
        data = bytearray(original)
        data[pos] ^= 1 << (pos % 8)
        idx.write_bytes(bytes(data))
        outcomes.add(_read_everything(tmp_path / prefix_name)[0])
        idx.write_bytes(original[:pos])
        assert _read_everything(tmp_path / prefix_name)[0] == "error"
    idx.write_bytes(original)
    assert _read_everything(tmp_path / prefix_name) == ("ok", 0)
    assert "error" in outcomes


def test_bit_flips_in_a_shard_are_checksum_findings(tmp_path):
    from conftest import FIXTURES

    for f in (FIXTURES / "tfckpt" / "bidi_sw").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "ckpt.data-00000-of-00001"
    original = shard.read_bytes()
    with open_checkpoint(tmp_path / "ckpt") as ck:
        floats = [v for v in ck.variables if v.is_float]
    for v in floats:
        data = bytearray(original)
        data[v.offset] ^= 0x01
        shard.write_bytes(bytes(data))
        with open_checkpoint(tmp_path / "ckpt") as ck:
            for w in ck.variables:
                if w.is_float:
                    ck.read(w)
            assert [(w.path, why) for w, why in ck.integrity_failures] == [
                (v.path, "stored bytes do not match the checksum in the index")]


def test_partitioned_variable_without_its_slice_entries_is_one_error_line(tmp_path, capsys):
    """A partitioned variable's entry lists ``slices`` (field 7); its values live in per-slice
    entries under encoded keys (``tests/formats/test_tf_partitioned.py``). Without them the
    variable cannot be read: one error line."""
    part = B.pb(1, 1) + B.pb(2, B.shape_pb((4, 3))) + B.pb(7, B.pb(1, B.pb(1, 0) + B.pb(2, 2)) + B.pb(1, b""))
    B.dense_bundle(tmp_path / "ckpt", extra_entries=[(b"emb", part)])
    _expect_error(capsys, tmp_path / "ckpt", tmp_path, "partitioned variable emb: the entry of slice 0,2:- is missing")


def test_every_stored_dtype_streams(tmp_path):
    """TF1-style keys (no object graph) of each dtype: floats stream (bfloat16 decoded to
    float32, float16/float64 as stored), integers and bools are listed, not numeric-scanned."""
    vals = np.array([1.0, -2.5, 3072.0], dtype="<f4")
    bf16 = (vals.view("<u4") >> 16).astype("<u2").tobytes()
    tensors = {
        "a/bf16": B.Tensor("bfloat16", (3,), bf16),
        "a/f16": B.Tensor("float16", (3,), vals.astype("<f2").tobytes()),
        "a/f64": B.Tensor("float64", (3,), vals.astype("<f8").tobytes()),
        "a/i32": B.Tensor("int32", (3,), np.array([1, 2, 3], "<i4").tobytes()),
        "a/flag": B.Tensor("bool", (2,), b"\x01\x00"),
        "a/i32/Momentum": B.Tensor("int32", (3,), np.array([1, 2, 3], "<i4").tobytes()),
    }
    B.write_bundle(tmp_path / "ckpt", tensors)
    with open_checkpoint(tmp_path / "ckpt") as ck:
        assert ck.format == "tf1-checkpoint"
        got = {v.path: v for v in ck.variables}
        assert ck.read(got["a/bf16"]).tolist() == [1.0, -2.5, 3072.0]
        assert ck.read(got["a/f16"]).dtype == np.float16 and ck.read(got["a/f64"]).tolist() == [1.0, -2.5, 3072.0]
        assert not got["a/i32"].is_float and got["a/flag"].dtype == "bool"
        assert ck.slots["optimizer/Momentum/a/i32"] == ("a/i32", "Momentum")
        assert ck.integrity_failures == []


# --- the list decoder used for entries and object-graph records -----------------------------------


@pytest.mark.parametrize("raw", [
    b"\x08\x96\x01\x12\x03abc\x1d\x01\x02\x03\x04\x21" + bytes(8) + b"\x28\x00",  # every wire type, valid
    b"\x08",  # varint runs past the end
    b"\x08" + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
    b"\x08" + b"\xff" * 9 + b"\x02",  # varint overflows 64 bits
    b"\x00\x01",  # field number 0
    b"\x12\x05ab",  # length-delimited field past the end
    b"\x12\x80",  # its length varint cut short
    b"\x1d\x01\x02",  # fixed32 cut short
    b"\x21\x01",  # fixed64 cut short
    b"\x0b\x0c",  # groups refused
])
def test_field_list_agrees_with_the_streaming_decoder(raw):
    from ckptscan.formats.tfbundle import proto

    def outcome(fn):
        try:
            return list(fn(raw))
        except proto.ProtoError as exc:
            return str(exc)

    got = outcome(proto.field_list)
    assert got == outcome(proto.fields)
    assert isinstance(got, str) or isinstance(proto.field_list(raw), list)


def test_field_list_streams_long_spans():
    # a span that could hold more than 4,096 fields is not decoded into one list
    from ckptscan.formats.tfbundle import proto

    raw = b"\x08\x01" * (proto.LIST_SPAN // 2 + 1)
    out = proto.field_list(raw)
    assert not isinstance(out, list)
    assert sum(1 for _ in out) == proto.LIST_SPAN // 2 + 1
