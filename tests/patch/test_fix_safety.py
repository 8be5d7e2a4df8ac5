"""Never lose data: dry run, refusals, lock, journal rollback, backup, manifest, --output, bulk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import h5py
import numpy as np
import pytest

import ckptscan
from ckptscan.errors import PatchRefusedError
from ckptscan.formats import open_checkpoint
from ckptscan.patch import writer
from ckptscan.journal import acquire_lock, journal_path, lock_path
from conftest import run_cli
from test_patch_models import BROKEN, dataset_digests, fixmodels, fresh, sha256  # noqa: F401


def listing(d):
    return sorted(os.listdir(d))


def test_dry_run_prints_every_change_and_writes_nothing(fixmodels, tmp_path):
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p, "--dry-run", "--strategy", "reset")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:5] == [
        f"{p}: dry run, 4 change(s) planned, nothing written",
        "  bn/moving_mean channels 1: inf → 0 [reset; BN004; bn/moving_mean: 1 +Inf in channel [1] of 4]",
        "  bn/moving_variance channels 2, 3: nan → 2; -1 → 2 [reset; BN001; bn/moving_variance: "
        "1 NaN, 1 negative in channels [2, 3] of 4]",
        "  block/bn2/moving_mean channels 5: nan → 0 [reset; BN004; block/bn2/moving_mean: 1 NaN in channel [5] of 6]",
        "  block/bn2/moving_variance channels 0: inf → 1 [reset; BN001; block/bn2/moving_variance: "
        "1 +Inf in channel [0] of 6]",
    ]
    assert "stop-gap" in out.stdout
    assert out.stderr.endswith("ckptscan fix: 1 file(s): 1 planned, 0 unchanged, 0 refused or left unfixed, 0 failed\n")
    assert sha256(p) == before and listing(p.parent) == names


def _refused(p, names, before, out, reason, code=1):
    assert out.returncode == code, (out.stdout, out.stderr)
    assert sha256(p) == before
    assert listing(p.parent) == names  # no journal, lock, temp or backup left
    assert reason in (out.stdout + out.stderr)


def test_refuses_unparsable_file(fixmodels, tmp_path):
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated archive
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p)
    _refused(p, names, before, out, f"ckptscan: error: {p}: ", code=2)


def test_refuses_reference_with_other_shape(fixmodels, tmp_path):
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    ref = fresh(fixmodels[("legacy", "clean")], tmp_path / "ref")
    with open_checkpoint(ref) as ck:
        h5path = ck.find("bn/moving_variance").h5path
    with h5py.File(ref, "r+") as f:
        del f[h5path]
        f.create_dataset(h5path, data=np.ones(5, "float32"))
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p, "--from", ref)
    _refused(p, names, before, out, f"{p}: refused: bn/moving_variance: reference {ref} has shape (5,), "
                                    "this file (4,); nothing written")


def test_refuses_read_only_file(fixmodels, tmp_path):
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    os.chmod(p, 0o444)  # tests run as root: ckptscan checks the mode bits itself
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p)
    _refused(p, names, before, out, f"{p}: refused: read-only file (mode 0444); nothing written")


def test_refuses_read_only_shard(fixmodels, tmp_path):
    p = fresh(fixmodels[("sharded", "bn")], tmp_path / "w")
    for shard in p.parent.glob("*.weights.h5"):
        os.chmod(shard, 0o444)
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p)
    _refused(p, names, before, out, "refused: read-only file m_00000.weights.h5 (mode 0444); nothing written")


def test_refuses_value_zero_for_a_variance(fixmodels, tmp_path):
    p = fresh(fixmodels[("legacy", "bn")], tmp_path / "w")
    before, names = sha256(p), listing(p.parent)
    out = run_cli("fix", p, "--strategy", "value", "--value", "0")
    _refused(p, names, before, out, "bn/moving_variance: refusing value 0 for a variance (a BN variance must be > 0); "
                                    "strategies that apply: reset, median, from REF, value V (V > 0)")


def test_exclusive_lock(fixmodels, tmp_path):
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    before = sha256(p)
    with acquire_lock(str(p)):
        (f,) = ckptscan.fix(str(p), lock_timeout=0.3).files
        assert f.status == "refused"
        assert f.reason == "another ckptscan process is patching this checkpoint (lock held)"
        assert sha256(p) == before
        # a second process waits for the lock, then finds the work done by then
        proc = subprocess.Popen([sys.executable, "-m", "ckptscan", "fix", str(p)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting
        (f,) = ckptscan.fix(str(p), lock_timeout=0.3).files  # same process: flock is per open file
        assert f.status == "refused"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "fixed in-place, 4 change(s)" in out
    assert not os.path.exists(lock_path(str(p)))


@pytest.mark.parametrize("where", ["target", "neighbour"])
def test_wrong_bits_in_the_patched_tensor_are_caught_and_rolled_back(fixmodels, tmp_path, monkeypatch, where):
    """The real verification: the written bits differ from the plan, at a targeted element
    or at another element of the same tensor (only the whole-tensor digest sees that one)."""
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    before = sha256(p)
    real = writer._write_regions

    def flip(regions):
        r = regions[0]
        if where == "target":
            regions[0] = type(r)(r.file, r.offset, r.old, bytes([r.new[0] ^ 1]) + r.new[1:])
        else:  # one more region: the element after the first one, one bit flipped
            with open(r.file, "rb") as fh:
                fh.seek(r.offset + len(r.old))
                nxt = fh.read(1)
            regions.append(type(r)(r.file, r.offset + len(r.old), nxt, bytes([nxt[0] ^ 1])))
        real(regions)

    monkeypatch.setattr(writer, "_write_regions", flip)
    (f,) = ckptscan.fix(str(p)).files
    assert f.status == "refused"
    assert f.reason.startswith("verification failed, original restored: ")
    assert f.reason.endswith("re-read values differ from the patch")
    assert sha256(p) == before


def test_verification_failure_rolls_back(fixmodels, tmp_path, monkeypatch):
    p = fresh(fixmodels[("sharded", "bn")], tmp_path / "w")
    before, names = sha256(p), listing(p.parent)
    real = writer._verify

    def sabotage(ckpt, expected, hashes, verify):  # the re-read disagrees with the plan
        ckpt.close()
        raise PatchRefusedError(ckpt.path, "untouched tensor changed")

    monkeypatch.setattr(writer, "_verify", sabotage)
    (f,) = ckptscan.fix(str(p)).files
    assert f.status == "refused"
    assert f.reason == "verification failed, original restored: untouched tensor changed"
    assert sha256(p) == before and listing(p.parent) == names
    monkeypatch.setattr(writer, "_verify", real)


def test_interrupted_run_is_rolled_back_by_next_open(fixmodels, tmp_path):
    """A run killed between region writes (torn file, journal present) is rolled back."""
    p = fresh(fixmodels[("keras", "bn")], tmp_path / "w")
    before = sha256(p)
    env = dict(os.environ, CKPTSCAN_FAULT_PAUSE="0.3")
    proc = subprocess.Popen([sys.executable, "-m", "ckptscan", "fix", str(p)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.strip() == "ckptscan-fault-point: region-1-half":
                break
    finally:
        proc.kill()
        proc.wait()
    assert os.path.exists(journal_path(str(p)))
    assert sha256(p) != before  # torn: some regions written, CRC not yet
    with zipfile.ZipFile(p) as zf:
        assert zf.testzip() == "model.weights.h5"
    torn = sha256(p)
    out = run_cli("inspect", p)  # a reader never writes: the torn file and its journal stay
    assert sha256(p) == torn and os.path.exists(journal_path(str(p)))
    out = run_cli("recover", p)  # the writer that rolls it back
    assert out.returncode == 0, out.stderr
    assert "recovered an interrupted ckptscan fix" in out.stdout
    assert sha256(p) == before and not os.path.exists(journal_path(str(p)))


def test_backup_and_manifest(fixmodels, tmp_path):
    src = fixmodels[("keras", "bn")]
    p = fresh(src, tmp_path / "w")
    man = tmp_path / "manifest.json"
    out = run_cli("fix", p, "--backup", "--manifest", man)
    assert out.returncode == 0, out.stderr
    bak = p.with_name(p.name + ".bak")
    assert bak.read_bytes() == src.read_bytes()
    doc = json.loads(man.read_text())
    (f,) = doc["files"]
    assert f["status"] == "fixed" and f["mode"] == "in-place" and f["backup"] == str(bak)
    assert f["sha256_before"] == {str(p): __import__("hashlib").sha256(src.read_bytes()).hexdigest()}
    assert f["sha256_after"] == {str(p): __import__("hashlib").sha256(p.read_bytes()).hexdigest()}
    assert [(c["layer_path"], c["variable"], c["indices"], c["old"], c["new"]) for c in f["changes"]] == [
        ("bn", "moving_mean", [1], ["inf"], [f["changes"][0]["new"][0]]),
        ("bn", "moving_variance", [2, 3], ["nan", -1.0], f["changes"][1]["new"]),
        ("block/bn2", "moving_mean", [5], ["nan"], f["changes"][2]["new"]),
        ("block/bn2", "moving_variance", [0], ["inf"], f["changes"][3]["new"]),
    ]
    assert all(c["strategy"] == "median" for c in f["changes"])


@pytest.mark.parametrize("layout", ["keras", "sharded", "dir", "deflated"])
def test_output_writes_a_patched_copy(fixmodels, tmp_path, layout):
    src = fixmodels[(layout, "bn")]
    p = fresh(src, tmp_path / "w")
    before = sha256(p)
    (tmp_path / "out").mkdir()
    dst = tmp_path / "out" / p.name
    (f,) = ckptscan.fix(str(p), output=str(dst)).files
    assert f.status == "fixed" and f.mode == "copy" and f.output == str(dst)
    assert sha256(p) == before
    inplace = fresh(src, tmp_path / "inplace")
    ckptscan.fix(str(inplace))
    assert dataset_digests(dst) == dataset_digests(inplace)
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]


def test_bulk_jobs_summary_and_exit_codes(fixmodels, tmp_path):
    d = tmp_path / "many"
    for i, layout in enumerate(["keras", "legacy", "sharded", "weights"]):
        fresh(fixmodels[(layout, "bn")], d / f"{i}")
    fresh(fixmodels[("keras", "clean")], d / "clean")
    (d / "junk.keras").write_bytes(b"PK\x03\x04 not really a zip")
    out = run_cli("fix", d, "--jobs", "2")
    assert out.returncode == 2, out.stderr
    assert f"ckptscan: error: {d / 'junk.keras'}: " in out.stderr
    assert out.stderr.endswith("ckptscan fix: 6 file(s): 4 fixed, 1 unchanged, 0 refused or left unfixed, 1 failed\n")
    out = run_cli("fix", d / "0", d / "1")
    assert out.returncode == 0 and out.stderr.endswith("0 fixed, 2 unchanged, 0 refused or left unfixed, 0 failed\n")
    out = run_cli("fix", d / "0", "--output", tmp_path / "x.keras", "--jobs", "-1")  # 0 is one per CPU, as for scan
    assert out.returncode == 4


def test_python_api_returns_dataclasses(fixmodels, tmp_path):
    p = fresh(fixmodels[("legacy", "bn")], tmp_path / "w")
    man = ckptscan.fix(str(p), strategy="reset", verify="targets")
    assert isinstance(man, ckptscan.patch.FixManifest)
    (f,) = man.files
    assert isinstance(f, ckptscan.patch.FileFix) and f.verified == "targets"
    assert all(isinstance(c, ckptscan.patch.ChangeRecord) for c in f.changes)
    assert man.count("fixed") == 1 and f.ok
    assert json.loads(json.dumps(man.to_dict()))["files"][0]["changes"][0]["strategy"] == "reset"


def test_target_selection(fixmodels, tmp_path):
    src = fixmodels[("keras", "bn")]
    got = {}
    for name, kw in {"layer": {"layer": "block/*"}, "ignore": {"ignore": ["BN004"]},
                     "select": {"select": ["BN004"]}}.items():
        p = fresh(src, tmp_path / name)
        (f,) = ckptscan.fix(str(p), dry_run=True, **kw).files
        got[name] = sorted((c.layer_path, c.variable) for c in f.changes)
    assert got == {
        "layer": [("block/bn2", "moving_mean"), ("block/bn2", "moving_variance")],
        "ignore": [("block/bn2", "moving_variance"), ("bn", "moving_variance")],
        "select": [("block/bn2", "moving_mean"), ("bn", "moving_mean")],
    }
    # per-rule strategies: variances reset, means from the median
    p = fresh(src, tmp_path / "per-rule")
    (f,) = ckptscan.fix(str(p), rule_strategies={"BN001": "reset", "BN004": "median"}).files
    assert sorted((c.variable, c.strategy) for c in f.changes) == [
        ("moving_mean", "median"), ("moving_mean", "median"), ("moving_variance", "reset"), ("moving_variance", "reset")]
    out = run_cli("fix", fresh(src, tmp_path / "cli"), "-s", "BN001=clamp", "-n")
    assert out.returncode == 1 and "clamp cannot repair NaN (channels 2)" in out.stdout


def test_json_output_is_the_manifest(fixmodels, tmp_path):
    p = fresh(fixmodels[("weights", "bn")], tmp_path / "w")
    out = run_cli("fix", p, "--json", "--dry-run", "--strategy", "reset")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["manifest_version"] == 1 and doc["dry_run"] is True
    (f,) = doc["files"]
    assert f["status"] == "planned" and len(f["changes"]) == 4
    assert all("no layer config" in c["note"] for c in f["changes"])
