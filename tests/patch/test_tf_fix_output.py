"""``ckptscan fix --output`` on TensorFlow-format checkpoints (issue 14): a complete
patched copy at the output (index and every data shard; a SavedModel's whole folder; a
checkpoint folder's patched checkpoint with a state file naming it), verified by
re-reading, the source untouched byte for byte, an existing output never replaced."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

import ckptscan
from conftest import FIXTURES
from ckptscan.cli import main
from ckptscan.formats import open_checkpoint
from ckptscan.formats.tfbundle.bundle import Bundle

TF = FIXTURES / "tfckpt"
CHANGED = {"layer_with_weights-0/post_bn/moving_mean", "layer_with_weights-0/post_bn/moving_variance"}


def _tree(d):
    """{relative path: sha256} of every file under ``d``."""
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            f = os.path.join(root, n)
            out[os.path.relpath(f, d)] = hashlib.sha256(open(f, "rb").read()).hexdigest()
    return out


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    shutil.copytree(TF / "seed_broken_sw", d)
    return d


def _errors(path):
    return sorted({(f.rule_id, f.layer_path) for f in ckptscan.scan(path).files[0].findings
                   if f.rule_id in ("BN001", "BN004", "INT001", "NUM001")})


def _read_all(prefix):
    """Every tensor's stored bytes by variable path (each CRC32C verified by the reader)."""
    with open_checkpoint(prefix) as ck:
        for v in ck.variables:
            if v.is_float:
                ck.read(v)
        assert ck.integrity_failures == []
        names = {v.h5path: v.path for v in ck.variables}
    b = Bundle(str(prefix))
    return {names.get(k, k): b.read_bytes(e) for k, e in b.entries.items() if e.numeric}


def test_prefix_output_is_a_complete_patched_copy_and_the_source_is_untouched(src, tmp_path, capsys):
    before = _tree(src)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["fix", "-o", str(out / "fixed"), str(src / "ckpt.index")]) == 0
    assert f"fixed copy → {out / 'fixed'}" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["fixed.data-00000-of-00001", "fixed.index"]
    assert _tree(src) == before
    assert _errors(src) and not _errors(out / "fixed")
    old, new = _read_all(src / "ckpt"), _read_all(out / "fixed")
    assert set(old) == set(new)
    assert {k for k in old if old[k] != new[k]} == CHANGED


def test_output_named_by_its_index_or_a_folder_and_the_api(src, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (f,) = ckptscan.fix(str(src / "ckpt"), output=str(out / "a.index")).files
    assert f.status == "fixed" and f.mode == "copy" and f.output == str(out / "a.index")
    assert set(f.sha256_after) == {str(out / "a.index"), str(out / "a.data-00000-of-00001")}
    (g,) = ckptscan.fix(str(src / "ckpt.index"), output=str(out)).files  # an existing folder: same base name
    assert g.status == "fixed" and g.output == str(out / "ckpt")
    assert sorted(os.listdir(out)) == ["a.data-00000-of-00001", "a.index", "ckpt.data-00000-of-00001", "ckpt.index"]
    assert _read_all(out / "a") == _read_all(out / "ckpt")


def test_an_existing_output_or_the_input_itself_is_refused_and_nothing_is_written(src, tmp_path, capsys):
    before = _tree(src)
    out = tmp_path / "o"
    out.mkdir()
    (out / "x.data-00000-of-00001").write_bytes(b"mine")
    assert main(["fix", "-o", str(out / "x"), str(src / "ckpt.index")]) == 1
    assert "exists" in capsys.readouterr().out
    assert os.listdir(out) == ["x.data-00000-of-00001"] and (out / "x.data-00000-of-00001").read_bytes() == b"mine"
    (f,) = ckptscan.fix(str(src / "ckpt.index"), output=str(src / "ckpt")).files
    assert f.status == "refused" and "input itself" in f.reason
    assert _tree(src) == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left


def test_savedmodel_output_copies_the_whole_folder(tmp_path):
    sm = tmp_path / "sm"
    shutil.copytree(TF / "nested_broken_sm", sm)
    before = _tree(sm)
    out = tmp_path / "sm_fixed"
    (f,) = ckptscan.fix(str(sm), value=0.0, output=str(out)).files
    assert f.status == "fixed", f.reason
    assert _tree(sm) == before
    after = _tree(out)
    assert set(after) == set(before)
    changed = {p for p in after if after[p] != before[p]}
    assert changed and changed <= {"variables/variables.index", "variables/variables.data-00000-of-00001"}
    res = ckptscan.scan(out).files[0]
    assert res.format == "tf-savedmodel"
    assert [x.rule_id for x in res.findings if x.severity.value == "error"] == []
    # an existing folder is never replaced
    (g,) = ckptscan.fix(str(sm), value=0.0, output=str(out)).files
    assert g.status == "refused" and "exists" in g.reason
    assert _tree(out) == after


def test_checkpoint_folder_output_holds_the_patched_latest_and_a_state_file(tmp_path):
    mgr = tmp_path / "mgr"
    shutil.copytree(TF / "mgr", mgr)
    before = _tree(mgr)
    out = tmp_path / "mgr_fixed"
    (f,) = ckptscan.fix(str(mgr), value=0.0, output=str(out)).files
    assert f.status == "fixed", f.reason
    assert _tree(mgr) == before
    assert sorted(os.listdir(out)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert 'model_checkpoint_path: "ckpt-2"' in (out / "checkpoint").read_text()
    res = ckptscan.scan(out).files[0]
    assert res.status == "scanned" and [x.rule_id for x in res.findings if x.severity.value == "error"] == []
    assert _read_all(mgr / "ckpt-2").keys() == _read_all(out / "ckpt-2").keys()
