"""Unit tests of the patch machinery that need no Keras: CRC-32 arithmetic, zip CRC
fields (with and without a data descriptor), encoding, strategies, journal, lock."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptscan.errors import MalformedArchiveError, PatchRefusedError
from ckptscan.formats import open_checkpoint
from ckptscan.formats.base import Variable
from ckptscan.patch import Change, PatchPlan, apply
from ckptscan import journal as safety
from ckptscan.patch import zipcrc
from ckptscan.patch.rawio import encode, runs
from ckptscan.patch.strategies import initializer_value
from test_patch_models import fixmodels, fresh  # noqa: F401


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), cut=st.data())
def test_crc_delta_matches_zlib(data, cut):
    o = cut.draw(st.integers(0, len(data) - 1))
    n = cut.draw(st.integers(1, len(data) - o))
    new = cut.draw(st.binary(min_size=n, max_size=n))
    patched = data[:o] + new + data[o + n:]
    assert zlib.crc32(data) ^ zipcrc.crc_delta(data[o:o + n], new, o, len(data)) == zlib.crc32(patched)


def test_crc_update_does_not_read_the_member():
    n = 64 << 20
    data = bytearray(n)
    new = bytearray(data)
    new[10:14] = b"\x01\x02\x03\x04"
    assert zlib.crc32(data) ^ zipcrc.crc_delta(bytes(4), bytes(new[10:14]), 10, n) == zlib.crc32(new)
    t = time.perf_counter()
    zipcrc.crc_delta(bytes(4), b"abcd", 10, 1 << 40)  # a terabyte-long member: O(log n)
    assert time.perf_counter() - t < 0.5


def test_runs():
    assert runs(np.array([5, 1, 2, 3, 9, 10])) == [(1, 3), (5, 1), (9, 2)]
    assert runs(np.array([], dtype=np.int64)) == []


def _var(dtype):
    return Variable("bn", "moving_variance", "bn", "BatchNormalization", (3,), dtype, "/x", "/f")


def test_encode_bfloat16_rounds_to_nearest_even_and_float16_casts():
    bits = encode(np.array([1.0, 1.00390625, 1.01171875], dtype=np.float32), _var("bfloat16"))
    # 1.00390625 = 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0)
    assert bits.tolist() == [0x3F80, 0x3F80, 0x3F82]
    assert encode(np.array([65504.0, 1e-8, 0.1]), _var("float16")).tolist() == \
        np.array([65504.0, 1e-8, 0.1], dtype="<f2").tolist()


@pytest.mark.parametrize("spec,default,want", [
    (None, 1.0, 1.0), ("zeros", 1.0, 0.0), ("ones", 0.0, 1.0), ({"class_name": "Ones", "config": {}}, 0.0, 1.0),
    ({"module": "keras.initializers", "class_name": "Constant", "config": {"value": 2.5}, "registered_name": None},
     1.0, 2.5),
    ({"class_name": "Constant", "config": {"value": [0.25]}}, 1.0, 0.25),
])
def test_initializer_values(spec, default, want):
    assert initializer_value(spec, default, "f", _var("float32")) == want


def test_non_constant_initializer_is_refused():
    with pytest.raises(PatchRefusedError, match="initializer RandomNormal is not a constant; use median, from or value"):
        initializer_value({"class_name": "RandomNormal", "config": {}}, 1.0, "f", _var("float32"))


class _Unseekable(io.RawIOBase):
    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def test_patch_inside_a_member_with_data_descriptor(fixmodels, tmp_path):
    src = fixmodels[("keras", "bn")]
    sink = _Unseekable()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(sink, "w") as zout:
        for info in zin.infolist():
            with zout.open(info.filename, "w") as dst:
                dst.write(zin.read(info))
    p = tmp_path / "dd.keras"
    p.write_bytes(bytes(sink.buf))
    with zipfile.ZipFile(p) as zf:
        assert zf.getinfo("model.weights.h5").flag_bits & 0x08
        assert zf.getinfo("model.weights.h5").compress_type == zipfile.ZIP_STORED
    loc = zipcrc.locate(str(p), "model.weights.h5")
    assert loc.descriptor_crc_at is not None
    with open_checkpoint(p) as ck:
        var = ck.find("bn/moving_variance")
        old = ck.read(var)
    f = apply(PatchPlan(str(p), (Change(var, (2, 3), np.array([1.0, 1.0]), old[[2, 3]]),)))
    assert f.status == "fixed" and f.mode == "in-place"
    with zipfile.ZipFile(p) as zf:
        assert zf.testzip() is None
        info = zf.getinfo("model.weights.h5")
        assert zlib.crc32(zf.read(info)) == info.CRC
    data = p.read_bytes()
    assert struct.unpack("<I", data[loc.descriptor_crc_at:loc.descriptor_crc_at + 4])[0] == info.CRC


def test_journal_roll_back_refuses_foreign_changes(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abcdefgh")
    regions = [safety.Region(str(f), 2, b"cd", b"XY")]
    with safety.acquire_lock(str(f)):
        safety.write_journal(str(f), regions)
    f.write_bytes(b"abXdefgh")  # torn: one byte new, one old -> rolled back
    assert safety.recover(str(f)) == "recovered an interrupted ckptscan fix: rolled back 1 of 1 regions"
    assert f.read_bytes() == b"abcdefgh" and not safety.needs_recovery(str(f))
    with safety.acquire_lock(str(f)):
        safety.write_journal(str(f), regions)
    f.write_bytes(b"ab??efgh")  # someone else wrote there: never clobbered
    with pytest.raises(MalformedArchiveError, match="changed at offset 2 since the interrupted ckptscan fix"):
        safety.recover(str(f))
    assert f.read_bytes() == b"ab??efgh"


def test_damaged_journal_is_refused(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abcdefgh")
    with safety.acquire_lock(str(f)):
        jp = safety.write_journal(str(f), [safety.Region(str(f), 0, b"a", b"b")])
    doc = json.loads(open(jp).read())
    doc["regions"][0]["offset"] = 1
    open(jp, "w").write(json.dumps(doc))
    with pytest.raises(MalformedArchiveError, match="fails its checksum; inspect it by hand"):
        safety.recover(str(f))


def test_stale_temporaries_trigger_recovery(fixmodels, tmp_path):
    p = fresh(fixmodels[("legacy", "bn")], tmp_path / "w")
    stale = safety.temp_path(str(p))
    shutil.copyfile(p, stale)
    assert safety.needs_recovery(str(p))
    with open_checkpoint(p):  # a reader never writes: the temporary stays
        pass
    assert os.path.exists(stale)
    assert safety.recover(str(p)) == "removed 1 temporary file(s) of an interrupted ckptscan fix"
    assert not os.path.exists(stale)
