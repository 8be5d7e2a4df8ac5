"""Partitioned (sliced) TensorFlow variables read as one variable (issue 14).

``fixtures/tfckpt/partitioned/`` was written by TensorFlow's own ``Saver`` from a TF1 graph
(``fixtures/gen_tfckpt.py partitioned``): ``bn/moving_variance`` [12] in three slices with a
NaN at index 9 (slice 2), ``dense/kernel`` [4, 6] split on axis 1 in two. The values
TensorFlow's reader stitched are in ``manifest.json``. Hostile slice layouts are written
with ``tests/tfbuild.py``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tfbuild as B
from conftest import FIXTURES
from ckptscan import scan
from ckptscan.cli import main
from ckptscan.formats import open_checkpoint
from ckptscan.formats.tfbundle import slices as S
from ckptscan.formats.tfbundle.table import Table, read_index_bytes

TF = FIXTURES / "tfckpt"
DOC = json.loads((TF / "manifest.json").read_text())["checkpoints"]["partitioned"]
PREFIX = TF / DOC["path"]


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- the real checkpoint --------------------------------------------------------------------------


def test_each_partitioned_variable_is_listed_once_with_its_full_shape():
    with open_checkpoint(PREFIX) as ck:
        got = sorted([v.path, list(v.shape), v.dtype] for v in ck.variables)
        assert got == sorted(DOC["variables"])  # what TensorFlow's reader reports: full names and shapes
        assert set(ck.partitioned) == set(DOC["partitioned"])
        assert {k: len(p) for k, p in ck.partitioned.items()} == DOC["partitioned"]
        assert not any(v.h5path.startswith("\x00") for v in ck.variables)  # no slice key as a variable
        assert ck.find("bn/moving_variance").nbytes == 48 and ck.notes == []


def test_inspect_cli_lists_the_full_variable_once(capsys):
    assert main(["inspect", "--json", str(PREFIX)]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = [(v["layer_path"], v["name"], v["shape"]) for v in doc["variables"]]
    assert rows.count(("bn", "moving_variance", [12])) == 1 and rows.count(("dense", "kernel", [4, 6])) == 1
    assert len(rows) == 5


@pytest.mark.parametrize("block", [1, 5, 7, 1 << 17])
def test_values_equal_tensorflows_stitched_tensor(block):
    with open_checkpoint(PREFIX) as ck:
        for name, want in DOC["values"].items():
            var = ck.find(name)
            want = np.array([np.nan if x is None else x for x in want], dtype=np.float32)
            got = np.concatenate([b.copy() for b in ck.iter_blocks(var, block_elems=block)])
            np.testing.assert_array_equal(got, want)  # axis-1 slices interleaved in C order
            np.testing.assert_array_equal(ck.read(var).reshape(-1), want)
        assert ck.integrity_failures == []


def test_scan_reports_the_nan_at_the_full_index_and_bn_rules_apply():
    res = scan(PREFIX).files[0]
    assert res.status == "scanned", res.reason
    [f] = [f for f in res.findings if f.severity.value in ("error", "warning")]
    assert (f.rule_id, f.layer_path, f.variable, list(f.indices)) == ("BN001", "bn", "moving_variance", [9])
    # fix leaves a partitioned variable unfixed, so the finding does not claim it can
    assert f.patchable is False


def test_a_finding_on_an_unpartitioned_tensor_stays_patchable():
    res = scan(FIXTURES / "tfckpt" / "seed_broken_sw" / "ckpt").files[0]
    bn = [f for f in res.findings if f.rule_id == "BN001"]
    assert bn and all(f.patchable for f in bn)


def test_slice_keys_are_tensorflows_ordered_code():
    table = Table(read_index_bytes(f"{PREFIX}.index", "t"), "t")
    keys = [k for k, _ in table.items() if k[:1] == b"\x00"]
    decoded = [S.decode_key(k) for k in keys]
    assert decoded == [("bn/moving_variance", ((0, 4),)), ("bn/moving_variance", ((4, 4),)),
                       ("bn/moving_variance", ((8, 4),)), ("dense/kernel", ((0, 4), (0, 3))),
                       ("dense/kernel", ((0, 4), (3, 3)))]
    assert [S.encode_key(n, e) for n, e in decoded] == keys


@pytest.mark.parametrize("value", [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 1 << 40, -(1 << 55), (1 << 63) - 1,
                                   -(1 << 63)])
def test_signed_ordered_code_round_trips_and_keeps_order(value):
    code = S.encode_key("v", ((value, -1),))
    assert S.decode_key(code) == ("v", ((value, -1),))
    assert (S.encode_key("v", ((value - 1, -1),)) < code) if value > -(1 << 63) else True


def test_escaped_names_round_trip():
    for name in ("a\x00b", "x\udcffy", ""):
        assert S.decode_key(S.encode_key(name, ((0, -1), (3, 5)))) == (name, ((0, -1), (3, 5)))


def test_slice_crc_mismatch_is_an_integrity_finding(tmp_path):
    for f in PREFIX.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    shard = tmp_path / "model.ckpt.data-00000-of-00001"
    with open_checkpoint(tmp_path / "model.ckpt") as ck:
        piece = ck.partitioned["dense/kernel"][1]
    data = bytearray(shard.read_bytes())
    data[piece.entry.offset] ^= 0x01
    shard.write_bytes(bytes(data))
    with open_checkpoint(tmp_path / "model.ckpt") as ck:
        ck.read(ck.find("dense/kernel"))
        assert [(v.path, why) for v, why in ck.integrity_failures] == [
            ("dense/kernel", "stored bytes of slice 0,4:3,3 do not match the checksum in the index")]
    res = scan(tmp_path / "model.ckpt").files[0]
    assert any(f.rule_id == "INT001" and f.path == "dense/kernel" for f in res.findings)


def test_fix_refuses_a_partitioned_variable_and_writes_nothing(tmp_path, capsys):
    for f in PREFIX.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    before = _snapshot(tmp_path)
    assert main(["fix", str(tmp_path / "model.ckpt.index")]) == 1
    out = capsys.readouterr()
    assert "bn/moving_variance: partitioned variable: fix not supported" in out.out + out.err
    assert _snapshot(tmp_path) == before


# --- hostile slice layouts -------------------------------------------------------------------------


def _slice_pb(*extents):
    """A TensorSliceProto: (start, length) per dimension, None for a whole dimension."""
    out = b""
    for ext in extents:
        out += B.pb(1, b"" if ext is None else (B.pb(1, ext[0]) if ext[0] else b"") + B.pb(2, ext[1]))
    return B.pb(7, out)


def _partitioned(prefix, shape, slices, stored, full_dtype=1):
    """A bundle with ``v`` of ``shape`` listing ``slices`` and slice entries ``stored``:
    {extents (start, length|-1 per dim): (shape, values)}."""
    data = bytearray()
    extra = [(b"v", B.pb(1, full_dtype) + B.pb(2, B.shape_pb(shape)) + b"".join(_slice_pb(*s) for s in slices))]
    for ext, (sshape, values) in stored.items():
        raw = np.asarray(values, dtype="<f4").tobytes()
        extra.append((S.encode_key("v", ext), B.entry_pb("float32", sshape, 0, len(data), len(raw), B.mask(B.crc(raw)))))
        data += raw
    B.write_bundle(prefix, {}, extra_entries=extra)
    prefix.parent.joinpath(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))


def test_hand_built_slices_on_axis_0_and_whole_dimensions(tmp_path):
    # a whole-dimension extent is written without fields and keyed with (0, -1)
    _partitioned(tmp_path / "ckpt", (4, 2), [[(0, 1), None], [(1, 3), None]],
                 {((0, 1), (0, -1)): ((1, 2), [1, 2]), ((1, 3), (0, -1)): ((3, 2), [3, 4, 5, 6, 7, 8])})
    with open_checkpoint(tmp_path / "ckpt") as ck:
        assert ck.read(ck.find("v")).tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]


@pytest.mark.parametrize("slices, stored, needle", [
    ([[(0, 2)], [(2, 3)]], {((0, 2),): ((2,), [1, 2]), ((2, 3),): ((3,), [3, 4, 5])}, "lies outside its shape [4]"),
    ([[(0, 3)], [(2, 2)]], {((0, 3),): ((3,), [1, 2, 3]), ((2, 2),): ((2,), [4, 5])}, "slices 0,3 and 2,2 overlap"),
    ([[(0, 2)], [(2, 2)]], {((0, 2),): ((2,), [1, 2])}, "the entry of slice 2,2 is missing"),
    ([[(0, 2)]], {((0, 2),): ((2,), [1, 2])}, "its slices do not cover the whole tensor [4]"),
    ([[(0, 2)], [(2, 2)]], {((0, 2),): ((2,), [1, 2]), ((2, 2),): ((3,), [3, 4, 5])}, "stores shape [3], expected [2, ]"),
    ([[(0, 2), (0, 1)], [(2, 2)]], {((0, 2),): ((2,), [1, 2]), ((2, 2),): ((2,), [3, 4])}, "slice of rank 2"),
])
def test_hostile_slices_are_one_error_line(tmp_path, capsys, slices, stored, needle):
    _partitioned(tmp_path / "ckpt", (4,), slices, stored)
    needle = needle.replace("[2, ]", "[2]")
    before = _snapshot(tmp_path)
    for cmd in (["inspect"], ["scan"]):
        assert main(cmd + [str(tmp_path / "ckpt")]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("ckptscan: error: ")]
        assert len(errors) == 1 and "partitioned variable v" in errors[0] and needle in errors[0], captured.err
        assert "Traceback" not in captured.err
    assert _snapshot(tmp_path) == before


def test_many_slices_check_and_stitch_in_bounded_time(tmp_path):
    """4,096 one-row slices (axis 0) and a 64 x 64 grid of slices: both read, quickly."""
    import time

    n = 4096
    _partitioned(tmp_path / "rows", (n,), [[(i, 1)] for i in range(n)], {((i, 1),): ((1,), [i]) for i in range(n)})
    grid = {((i, 1), (j, 1)): ((1, 1), [i * 64 + j]) for i in range(64) for j in range(64)}
    _partitioned(tmp_path / "grid", (64, 64), [list(k) for k in grid], grid)
    t0 = time.monotonic()
    with open_checkpoint(tmp_path / "rows") as ck:
        assert ck.read(ck.find("v")).tolist() == list(range(n))
    with open_checkpoint(tmp_path / "grid") as ck:
        assert ck.read(ck.find("v")).reshape(-1).tolist() == list(range(64 * 64))
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed test


def test_raw_bits_of_a_partitioned_variable_are_the_stitched_tensor():
    """What ``fix --from`` reads from a reference checkpoint (``patch.rawio.read_raw``)."""
    from ckptscan.patch.rawio import read_raw

    with open_checkpoint(PREFIX) as ck:
        var = ck.find("dense/kernel")
        raw = read_raw(ck, var)
        assert raw.dtype == np.dtype("<f4") and raw.tolist() == ck.read(var).reshape(-1).tolist()
