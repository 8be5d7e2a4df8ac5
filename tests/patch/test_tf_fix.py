"""``ckptscan fix`` on TensorFlow-format checkpoints: shard bytes patched in place, the
index's CRC32C of each changed tensor (and of its table block) rewritten, as one
journaled transaction (the HDF5 in-place machinery of ``ckptscan.patch``).

Here ckptscan's own reader, which verifies the same checksums, re-reads the result;
TensorFlow itself restoring the fixed checkpoints (``load_weights``,
``tf.train.Checkpoint.restore``, ``load_model``, a TF1 ``Saver``, all verifying CRC32C)
and ``predict`` being finite is asserted in ``test_tf_fix_restore.py``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor


import ckptscan
from conftest import FIXTURES, run_cli
from ckptscan.cli import main
from ckptscan.errors import CkptscanError
from ckptscan.formats import journal_unit, open_checkpoint
from ckptscan.formats.tfbundle.bundle import Bundle
from ckptscan.journal import journal_path, needs_recovery

SRC = FIXTURES / "tfckpt" / "seed_broken_sw"
CHANGED = {"layer_with_weights-0/post_bn/moving_mean", "layer_with_weights-0/post_bn/moving_variance"}


def _copy(tmp_path, name="ck"):
    d = tmp_path / name
    shutil.copytree(SRC, d)
    return d


def _digest(d):
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        if f.name.startswith("ckpt."):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_fix_in_place_rewrites_crc_and_leaves_the_rest_bit_identical(tmp_path):
    d = _copy(tmp_path)
    before = Bundle(str(SRC / "ckpt"))
    shard_before = (SRC / "ckpt.data-00000-of-00001").read_bytes()
    (f,) = ckptscan.fix(str(d / "ckpt.index")).files
    assert (f.status, f.mode) == ("fixed", "in-place"), f.reason
    assert {f"{c.layer_path}/{c.variable}" for c in f.changes} == CHANGED
    # every checksum holds: table blocks on open, every tensor while it streams
    with open_checkpoint(d / "ckpt") as ck:
        for v in ck.variables:
            if v.is_float:
                ck.read(v)
        assert ck.integrity_failures == []
        changed_keys = {ck.find(p).h5path for p in CHANGED}
        shard_after = (d / "ckpt.data-00000-of-00001").read_bytes()
        for v in ck.variables:
            same = shard_after[v.offset : v.offset + v.nbytes] == shard_before[v.offset : v.offset + v.nbytes]
            assert same == (v.h5path not in changed_keys), v.path
    after = Bundle(str(d / "ckpt"))
    for k, e in before.entries.items():
        a = after.entries[k]
        assert (a.offset, a.size, a.shape, a.dtype) == (e.offset, e.size, e.shape, e.dtype)
        assert (a.crc32c == e.crc32c) == (k not in changed_keys), k
    assert len(shard_after) == len(shard_before)
    # the BN faults are gone; the others (not fixable by reset) remain
    res = ckptscan.scan(d / "ckpt").files[0]
    assert not [x for x in res.findings if x.rule_id in ("BN001", "BN004", "INT001")]
    assert not os.path.exists(journal_path(str(d / "ckpt.index")))


def test_dry_run_and_output_write_nothing(tmp_path, capsys):
    d = _copy(tmp_path)
    digest = _digest(d)
    (f,) = ckptscan.fix(str(d / "ckpt.index"), dry_run=True).files
    assert f.status == "planned"
    assert main(["fix", "--dry-run", "--output", str(tmp_path / "out"), str(d / "ckpt.index")]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert _digest(d) == digest
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in SRC.iterdir())


def test_sigkill_during_tf_fix_leaves_original_or_patched(tmp_path):
    from test_fix_crash import PAUSE, _run_server

    ref = _copy(tmp_path, "ref")
    assert ckptscan.fix(str(ref / "ckpt.index")).files[0].status == "fixed"
    original, patched = _digest(SRC), _digest(ref)
    assert original != patched
    (count,) = [int(r.split(":")[2]) for r in _run_server([(str(_copy(tmp_path, "calib") / "ckpt.index"), 10**6, 0.0)])]
    assert count >= 4
    rng = random.Random(14)
    stops = [-1, count] + [rng.randint(-1, count) for _ in range(48)]
    jobs = [(str(_copy(tmp_path, f"t{i}") / "ckpt.index"), s, rng.uniform(0, 1.5 * PAUSE)) for i, s in enumerate(stops)]
    halves = [jobs[0::2], jobs[1::2]]
    with ThreadPoolExecutor(2) as pool:
        wheres = list(pool.map(_run_server, halves))
    outcomes = {"original": 0, "patched": 0}
    inside = pending_seen = 0
    for i, (job, where) in enumerate(list(zip(halves[0], wheres[0])) + list(zip(halves[1], wheres[1]))):
        path = job[0]
        d = os.path.dirname(path)
        assert where and (not where.startswith("finished:") or where.startswith("finished:0:")), where
        inside += where.startswith("region") or where in ("journal-committed", "regions-synced")
        # one journal per checkpoint, whichever name it is given: the index, the folder, the prefix
        assert {journal_unit(n) for n in (path, d, path[: -len(".index")])} == {path}
        pending = needs_recovery(path)
        pending_seen += pending
        # readers never write: scanning (by the folder or the index) reports the pending
        # journal as JRN001 and leaves it there; opening does not roll it back either
        # (in the error line when the half-written index no longer opens)
        res = ckptscan.scan(d if i % 2 else path).files[0]
        reported = "JRN001" in {x.rule_id for x in res.findings} or "JRN001" in res.reason
        assert reported == pending, (where, res.status, res.reason, res.findings)
        if pending:
            try:
                open_checkpoint(d).close()
            except CkptscanError:
                pass  # a half-written index may not open; it must still not be recovered
            assert needs_recovery(path), where
        # the recovery path: `ckptscan recover` or `ckptscan fix`, by the folder, the index or the prefix
        how = i % 4
        if how == 0:
            assert main(["recover", d]) == 0
        elif how == 1:
            assert main(["recover", path]) == 0
        elif how == 2:
            (f,) = ckptscan.fix(d, dry_run=True).files
            assert f.status not in ("failed", "refused"), f.reason
        elif i % 8 == 3:
            out = run_cli("recover", path[: -len(".index")])
            assert out.returncode == 0, out.stderr
        else:
            ckptscan.fix(path, dry_run=True)
        assert not needs_recovery(path), where
        assert not os.path.exists(journal_path(path)), where
        assert [n for n in os.listdir(d) if n.endswith(".tmp")] == []
        digest = _digest(tmp_path / os.path.basename(d))
        assert digest in (original, patched), where
        outcomes["original" if digest == original else "patched"] += 1
        with open_checkpoint(d) as ck:
            assert ck.variables
    assert len(jobs) >= 50
    assert outcomes["original"] >= 5 and outcomes["patched"] >= 2, outcomes
    assert inside >= 10, inside
    assert pending_seen >= 5, pending_seen


def test_fix_from_an_hdf5_reference_across_formats(tmp_path):
    """Repair a TF checkpoint from the last good legacy ``.h5`` of the same model: with
    the config, both name ``resnet101v2/post_bn/moving_mean`` the same."""
    import numpy as np

    d = _copy(tmp_path)
    ref = FIXTURES / "tf2" / "seed.h5"
    (f,) = ckptscan.fix(str(d / "ckpt.index"), ref=str(ref), config=str(FIXTURES / "tfckpt" / "seed.config.json")).files
    assert f.status == "fixed", f.reason
    with open_checkpoint(ref) as good, open_checkpoint(d / "ckpt", config=str(FIXTURES / "tfckpt" / "seed.config.json")) as ck:
        for name in ("resnet101v2/post_bn/moving_mean", "resnet101v2/post_bn/moving_variance"):
            assert np.array_equal(ck.read(ck.find(name)), good.read(good.find(name)))
        for v in ck.variables:
            if v.is_float:
                ck.read(v)
        assert ck.integrity_failures == []


def test_backup_copies_index_and_shard(tmp_path):
    d = _copy(tmp_path)
    (f,) = ckptscan.fix(str(d / "ckpt.index"), backup=True).files
    assert f.status == "fixed", f.reason
    for name in ("ckpt.index", "ckpt.data-00000-of-00001"):
        assert (d / (name + ".bak")).read_bytes() == (SRC / name).read_bytes()
        assert (d / name).read_bytes() != (SRC / name).read_bytes()


def test_fix_savedmodel_and_checkpoint_folders_by_name(tmp_path, capsys):
    for name in ("nested_broken_sm", "mgr"):
        shutil.copytree(FIXTURES / "tfckpt" / name, tmp_path / name)
    assert main(["fix", "--value", "0", str(tmp_path / "nested_broken_sm"), str(tmp_path / "mgr")]) == 0
    out = capsys.readouterr().out
    assert "nested_broken_sm: fixed in-place" in out and "mgr: fixed in-place" in out
    for name in ("nested_broken_sm", "mgr"):
        res = ckptscan.scan(tmp_path / name).files[0]
        assert [x.rule_id for x in res.findings if x.severity.value == "error"] == [], res.findings
    # the folder's latest checkpoint was patched, the older one is untouched
    assert (tmp_path / "mgr" / "ckpt-1.index").read_bytes() == (FIXTURES / "tfckpt" / "mgr" / "ckpt-1.index").read_bytes()
