"""The screening pass over TensorFlow data shards (``formats/tfbundle/screen.py``).

The pass decides "all finite?" and "checksum matches?" for many tensors in one read,
with a BLAS dot product standing in for ``np.isfinite(...).all()``. Checked here: the
dot test is exact on this numpy; both finiteness tests agree with ``np.isfinite`` on
NaN/±Inf at window edges, in the middle of multi-window tensors, for float16/32/64, with
tensors at offsets that are no multiple of their element size; a shard cut short is one
error; random layouts (gaps, overlaps, mixed widths, kept tensors, wrong or missing
checksums, NaN anywhere) screened through a tiny window give what a tensor-by-tensor
reference gives; the CRC32C of a run follows from its tensors' stored ones; and a whole
scan of every tf-keras fixture finds exactly what it finds with the pass turned off.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from strategies import shard_layouts, write_shard
from ckptscan import scan
from ckptscan.errors import MalformedArchiveError
from ckptscan.formats import open_checkpoint
from ckptscan.formats.tf import TFCheckpoint
from ckptscan.formats.tfbundle import crc
from ckptscan.formats.tfbundle import screen as sp

TF = FIXTURES / "tfckpt"
MANIFEST = json.loads((TF / "manifest.json").read_text())["checkpoints"]


def test_dot_product_test_is_exact_with_this_numpy():
    assert sp._check_dot() is True
    assert sp._dot_is_exact() is True


def _tensors():
    """(name, values, wrong checksum?, keep?) covering block edges and every float width."""
    rng = np.random.default_rng(7)
    per_block = sp.BLOCK // 4
    out = []
    for name, n, bad_at, dt in [
        ("clean3blocks", 3 * per_block + 5, None, np.float32),
        ("nan_last", 3 * per_block + 5, -1, np.float32),
        ("inf_first_of_block2", 2 * per_block + 1, per_block, np.float32),
        ("neginf_mid", per_block // 2, 1000, np.float64),
        ("f64_clean", 300_000, None, np.float64),
        ("f16_inf", 70_000, 69_999, np.float16),
        ("f16_clean_odd", 70_001, None, np.float16),  # every later tensor at offset 2 mod 4
        ("huge_but_finite", 4096, None, np.float32),
    ]:
        x = rng.standard_normal(n).astype(dt)
        if name == "huge_but_finite":
            x[:] = np.finfo(np.float32).max  # the sum of squares overflows: isfinite decides
        if bad_at is not None:
            x[bad_at] = {"nan_last": np.nan, "inf_first_of_block2": np.inf}.get(name, -np.inf)
        out.append((name, x, False, False))
    for i in range(40):  # BN-vector-sized tensors, kept for the caller
        x = rng.standard_normal(64).astype(np.float32)
        if i == 13:
            x[3] = np.nan
        out.append((f"vec{i}", x, i == 21, True))
    out.append(("bad_checksum_big", rng.standard_normal(per_block + 3).astype(np.float32), True, False))
    out.append(("kept_across_windows", rng.standard_normal(per_block + 9).astype(np.float32), False, True))
    out.append(("after_kept", rng.standard_normal(77).astype(np.float32), False, False))
    return out


def _shard(tmp_path):
    path = tmp_path / "shard"
    fd_items = []
    with open(path, "wb") as f:
        for name, x, wrong, keep in _tensors():
            off = f.tell()
            raw = x.tobytes()
            f.write(raw)
            c = crc.mask(crc.crc32c(raw))
            fd_items.append((name, off, len(raw), x.dtype, c ^ 1 if wrong else c, keep, x))
    return path, fd_items


def test_crc_of_a_concatenation_from_the_parts_crcs():
    rng = np.random.default_rng(3)
    for trial in range(200):
        parts = [rng.integers(0, 256, int(rng.choice([0, 1, 3, 4, 1000, int(rng.integers(0, 300_000))])),
                              dtype=np.uint8).tobytes() for _ in range(int(rng.integers(1, 9)))]
        want = crc.crc32c(b"".join(parts))
        assert crc.concatenated([crc.crc32c(p) for p in parts], [len(p) for p in parts]) == want, trial
        if len(parts) > 1 and parts[0]:  # one changed byte anywhere changes the sum
            bad = bytes([parts[0][0] ^ 1]) + parts[0][1:]
            assert crc.concatenated([crc.crc32c(bad)] + [crc.crc32c(p) for p in parts[1:]],
                                    [len(p) for p in parts]) != want
    assert crc.concatenated([], []) == 0


def test_crc_of_a_concatenation_past_256_mb():
    # a part followed by more than 2**28 bytes: a shift of eight hex digits, past the
    # tables built at the first use (the zeros are checksummed 1 MiB at a time)
    head = bytes(range(97))
    n = (1 << 28) + 12_345
    zeros = bytes(1 << 20)
    tail = 0
    for _ in range(n >> 20):
        tail = crc.crc32c(zeros, value=tail)
    tail = crc.crc32c(zeros[: n & ((1 << 20) - 1)], value=tail)
    running = crc.crc32c(head)
    for _ in range(n >> 20):
        running = crc.crc32c(zeros, value=running)
    want = crc.crc32c(zeros[: n & ((1 << 20) - 1)], value=running)
    assert crc.concatenated([crc.crc32c(head), tail], [len(head), n]) == want
    assert len(crc._DIGITS) >= 8


def test_crc32c_array_matches_the_extension():
    import glob

    import google_crc32c

    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, 3 << 20, dtype=np.uint8)
    for lo, hi, start in [(0, 0, 5), (3, 9, 0), (1, 1 << 20, 0), (7, 3 << 20, 0xFFFFFFFF), (100, 5000, 12345)]:
        assert crc.crc32c_array(a[lo:hi], value=start) == google_crc32c.extend(start, a[lo:hi].tobytes())
    assert crc.crc32c_array(a[::3][:999]) == crc.crc32c(a[::3][:999].tobytes())  # not contiguous: copied
    # where the wheel ships its library beside the extension (Linux), the pass calls it
    # without the GIL; elsewhere it falls back to the extension with the same results
    pkg = os.path.dirname(google_crc32c.__file__)
    if glob.glob(pkg + ".libs/libcrc32c*"):
        assert crc.releases_gil()


def test_crc_tables_built_by_many_threads_at_once(monkeypatch):
    # the screening threads may build the tables together; a duplicate entry once made
    # every later sum wrong (and every tensor was checksummed a second time)
    import sys
    import threading

    rng = np.random.default_rng(5)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 1 << 20, 3 << 20, 77)]
    crcs, lengths = [crc.crc32c(p) for p in parts], [len(p) for p in parts]
    want = crc.crc32c(b"".join(parts))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible while they build
    try:
        for _ in range(10):  # the race is not hit every time (without the lock: ~1 round in 3)
            monkeypatch.setattr(crc, "_DIGITS", [])
            monkeypatch.setattr(crc, "_STEPS", [1 << 23])
            got = []
            start = threading.Barrier(8)

            def work():
                start.wait()
                got.append(crc.concatenated(crcs, lengths))

            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert got == [want] * 8
            assert len(crc._DIGITS) == len({id(t) for t in crc._DIGITS}) == crc._FIRST_DIGITS
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("dot", [True, False])
def test_screen_agrees_with_isfinite_and_the_checksums(tmp_path, monkeypatch, dot, nthreads):
    monkeypatch.setattr(sp, "_DOT_OK", dot)
    path, specs = _shard(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    seen = []
    try:
        items = [sp.Item(n, fd, off, nb, np.dtype(dt), c, keep) for n, off, nb, dt, c, keep, _ in specs]
        got = sp.screen(str(path), items[::-1], seen.append, nthreads)  # any order in: shard order inside
    finally:
        os.close(fd)
    assert seen == sorted(seen) and seen[-1] == got.done
    wrong = {n for n, x, w, k in _tensors() if w}
    for name, _, _, _, _, keep, x in specs:
        assert got.finite[name] == (None if keep else bool(np.isfinite(x).all())), name
        assert got.crc_ok[name] == (name not in wrong), name
        if keep:
            np.testing.assert_array_equal(got.values[name], x)
            assert got.values[name].flags.writeable
    assert set(got.values) == {n for n, *_, keep, _ in specs if keep}
    assert got.done == sum(s[2] for s in specs if not s[5])


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("cut_in", ["first", "second"])
def test_shard_cut_short_is_one_error(tmp_path, cut_in, nthreads):
    path = tmp_path / "shard"
    x = np.ones(sp.BLOCK // 4 * 2, np.float32)
    path.write_bytes(x.tobytes() * 2)
    n = x.nbytes
    fd = os.open(path, os.O_RDONLY)
    try:
        items = [sp.Item("a", fd, 0, n, np.dtype(np.float32), None), sp.Item("b", fd, n, n, np.dtype(np.float32), None)]
        if cut_in == "first":  # the first item runs past the end
            items = [sp.Item("a", fd, 0, 3 * n, np.dtype(np.float32), None), items[1]]
        else:
            items = [items[0], sp.Item("b", fd, n, n + 8, np.dtype(np.float32), None)]
        with pytest.raises(MalformedArchiveError, match="data shard ends early"):
            sp.screen(str(path), items, nthreads=nthreads)
    finally:
        os.close(fd)


def _findings(res):
    return sorted((f.rule_id, f.layer_path, f.variable, f.indices, f.count, f.severity.value) for f in res.findings)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_scan_finds_the_same_with_and_without_the_screen(name, monkeypatch):
    doc = MANIFEST[name]
    cfg = str(TF / doc["config"]) if doc.get("config") else None
    screened = []
    real = TFCheckpoint.screen

    def spy(self, variables, keep=(), progress=None):
        got = real(self, variables, keep, progress)
        screened.append((set(got), {v.path for v in variables if v.dtype in ("float16", "float32", "float64")
                                    and v.size and v.path not in self.partitioned and v.path not in keep}))
        return got

    monkeypatch.setattr(TFCheckpoint, "screen", spy)
    fast = scan(TF / doc["path"], config=cfg, include_optimizer=True).files[0]
    # the pass really ran: every contiguous float tensor that is not a kept BN vector is in it
    ((got, expected),) = screened
    assert got == expected
    monkeypatch.setattr(TFCheckpoint, "screen", lambda self, *a, **k: {})
    slow = scan(TF / doc["path"], config=cfg, include_optimizer=True).files[0]
    assert fast.status == slow.status == "scanned"
    assert _findings(fast) == _findings(slow)
    assert (fast.variables_scanned, fast.bytes_scanned) == (slow.variables_scanned, slow.bytes_scanned)


def test_checksum_mismatch_in_a_tensor_holding_nan_is_reported_once(tmp_path):
    # found not finite, the tensor is streamed again for its counts: one INT001, not two
    d = tmp_path / "ck"
    shutil.copytree(TF / "bidi_sw", d)
    with open_checkpoint(d / "ckpt") as ck:
        off = ck.find("out/kernel").offset
    shard = d / "ckpt.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[off: off + 4] = struct.pack("<f", float("nan"))  # the index's checksum is now wrong too
    shard.write_bytes(bytes(data))
    res = scan(d / "ckpt").files[0]
    got = [(f.rule_id, f.layer_path, f.variable, f.indices) for f in res.findings]
    assert got.count(("INT001", "out", "kernel", ())) == 1, got
    assert ("NUM001", "out", "kernel", (0,)) in got, got


@pytest.mark.parametrize("nthreads", [1, 2])
def test_overlapping_entries_are_each_checked_whole(tmp_path, nthreads):
    # a hostile index may point two entries into the same bytes; each is read in full
    x = np.arange(3 * sp.BLOCK // 4, dtype=np.float32)
    x[-1] = np.inf
    path = tmp_path / "shard"
    path.write_bytes(x.tobytes())
    raw = x.tobytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        items = [sp.Item("whole", fd, 0, len(raw), np.dtype(np.float32), crc.mask(crc.crc32c(raw))),
                 sp.Item("inner", fd, 400, 64, np.dtype(np.float32), crc.mask(crc.crc32c(raw[400:464])))]
        got = sp.screen(str(path), items, nthreads=nthreads)
    finally:
        os.close(fd)
    assert got.finite == {"whole": False, "inner": True}
    assert got.crc_ok == {"whole": True, "inner": True}


@pytest.mark.parametrize("nthreads", [1, 2])
def test_a_long_run_with_nans_everywhere_names_each_tensor(tmp_path, nthreads):
    # a diverged model: NaN in many tensors of one run, in every window; each is named
    rng = np.random.default_rng(9)
    sizes = rng.integers(1, 3000, 3000)
    path = tmp_path / "shard"
    items, want = [], {}
    fd_off = 0
    with open(path, "wb") as f:
        for i, n in enumerate(sizes):
            x = rng.standard_normal(int(n)).astype(np.float32)
            if i % 3 == 0:
                x[rng.integers(0, n)] = [np.nan, np.inf, -np.inf][i % 2]
            raw = x.tobytes()
            f.write(raw)
            items.append((f"t{i}", fd_off, len(raw), crc.mask(crc.crc32c(raw))))
            want[f"t{i}"] = bool(np.isfinite(x).all())
            fd_off += len(raw)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = sp.screen(str(path), [sp.Item(n, fd, o, nb, np.dtype(np.float32), c) for n, o, nb, c in items],
                        nthreads=nthreads)
    finally:
        os.close(fd)
    assert fd_off > 4 * sp.BLOCK
    assert got.finite == want
    assert all(got.crc_ok.values())


@settings(max_examples=120, deadline=None)
@given(layout=shard_layouts(), nthreads=st.sampled_from([1, 2]), dot=st.booleans())
def test_screen_equals_a_tensor_by_tensor_reference(tmp_path_factory, layout, nthreads, dot):
    # a small window, so runs cross many windows; every result against isfinite and the
    # checksum of each tensor's own bytes
    path = tmp_path_factory.mktemp("shard") / "shard"
    data = write_shard(path, layout)
    items, want = [], {}
    for s in layout:
        raw = bytes(data[s["offset"]: s["offset"] + s["x"].nbytes])  # what is really there
        vals = np.frombuffer(raw, dtype=s["x"].dtype)
        good = crc.mask(crc.crc32c(raw))
        stored = {"ok": good, "wrong": good ^ 0x10, "none": None}[s["crc"]]
        items.append(sp.Item(s["name"], 0, s["offset"], len(raw), np.dtype(s["x"].dtype), stored, s["keep"]))
        want[s["name"]] = (None if s["keep"] else bool(np.isfinite(vals).all()), s["crc"] != "wrong", vals)
    old = (sp.BLOCK, sp._DOT_OK)
    sp.BLOCK, sp._DOT_OK = 64, dot
    fd = os.open(path, os.O_RDONLY)
    try:
        got = sp.screen(str(path), [it._replace(fd=fd) for it in items], nthreads=nthreads)
    finally:
        os.close(fd)
        sp.BLOCK, sp._DOT_OK = old
    for name, (finite, crc_ok, vals) in want.items():
        assert got.finite[name] == finite, name
        assert got.crc_ok[name] == crc_ok, name
        if finite is None:
            np.testing.assert_array_equal(got.values[name], vals)
    assert got.done == sum(it.nbytes for it in items if not it.keep)


def test_thread_count_follows_the_cpus_and_the_environment(monkeypatch):
    monkeypatch.delenv("CKPTSCAN_SCREEN_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert sp.threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert sp.threads() == 2
    monkeypatch.setenv("CKPTSCAN_SCREEN_THREADS", "1")
    assert sp.threads() == 1
    monkeypatch.setenv("CKPTSCAN_SCREEN_THREADS", "7")  # not 1 or 2: ignored
    assert sp.threads() == 2
