"""``--all-checkpoints``: every checkpoint a TensorFlow ``checkpoint`` state file lists
(``fixtures/tfckpt/mgr``: a CheckpointManager folder, ``ckpt-1`` clean, ``ckpt-2`` with
one +Inf in ``head_a/kernel``), through ``scan``, ``ckptscan.scan`` and ``timeline``;
stale and foreign paths fall back to the index files present (issue 14)."""

from __future__ import annotations

import json
import shutil

import pytest

import ckptscan
from conftest import FIXTURES
from ckptscan.cli import main
from ckptscan.formats.tfstate import listed_checkpoints

MGR = FIXTURES / "tfckpt" / "mgr"


@pytest.fixture
def mgr(tmp_path):
    d = tmp_path / "mgr"
    shutil.copytree(MGR, d)
    return d


def _scan_json(capsys, *args):
    code = main(["scan", "--format", "json", *map(str, args)])
    doc = json.loads(capsys.readouterr().out)
    return code, {f["path"]: f for f in doc["files"]}


def _errors(f):
    return [(x["rule_id"], x["layer_path"], x["variable"]) for x in f["findings"] if x["severity"] == "error"]


def test_scan_all_checkpoints_names_each_checkpoint(capsys):
    code, files = _scan_json(capsys, "--all-checkpoints", MGR)
    assert list(files) == [str(MGR / "ckpt-1.index"), str(MGR / "ckpt-2.index")]
    one, two = files.values()
    assert one["status"] == two["status"] == "scanned"
    assert one["format"] == two["format"] == "tf-checkpoint"
    assert _errors(one) == []
    assert _errors(two) == [("NUM001", "head_a", "kernel")]
    assert code == 1


def test_without_the_flag_the_latest_only_and_the_note_says_how(capsys):
    code, files = _scan_json(capsys, MGR)
    assert list(files) == [str(MGR)]
    assert _errors(files[str(MGR)]) == [("NUM001", "head_a", "kernel")]
    assert any("--all-checkpoints" in n for n in files[str(MGR)]["notes"])
    assert code == 1


def test_api_keyword_and_folder_walk(tmp_path):
    report = ckptscan.scan(MGR, all_checkpoints=True)
    assert [f.path for f in report.files] == [str(MGR / "ckpt-1.index"), str(MGR / "ckpt-2.index")]
    # a state-file folder met while walking a folder is expanded too
    shutil.copytree(MGR, tmp_path / "runs" / "a" / "mgr")
    report = ckptscan.scan(tmp_path / "runs", all_checkpoints=True)
    assert [f.path for f in report.files] == [str(tmp_path / "runs" / "a" / "mgr" / f"ckpt-{i}.index") for i in (1, 2)]
    assert [f.status for f in report.files] == ["scanned", "scanned"]
    assert len(ckptscan.scan(tmp_path / "runs").files) == 1


def test_absolute_paths_from_another_machine_fall_back_to_the_files_beside(mgr, capsys):
    (mgr / "checkpoint").write_text('model_checkpoint_path: "/home/someone/run7/ckpt-2"\n'
                                    'all_model_checkpoint_paths: "/home/someone/run7/ckpt-1"\n'
                                    'all_model_checkpoint_paths: "C:\\\\Users\\\\x\\\\run7\\\\ckpt-2"\n')
    assert [x.prefix for x in listed_checkpoints(str(mgr))] == [str(mgr / "ckpt-1"), str(mgr / "ckpt-2")]
    code, files = _scan_json(capsys, "--all-checkpoints", mgr)
    assert list(files) == [str(mgr / "ckpt-1.index"), str(mgr / "ckpt-2.index")]
    assert all(f["status"] == "scanned" for f in files.values())
    assert code == 1


def test_a_listed_checkpoint_that_is_gone_is_listed_as_skipped(mgr, capsys):
    (mgr / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n'
                                    'all_model_checkpoint_paths: "ckpt-1"\n'
                                    'all_model_checkpoint_paths: "ckpt-2"\n'
                                    'all_model_checkpoint_paths: "ckpt-3"\n')
    code, files = _scan_json(capsys, "--all-checkpoints", mgr)
    assert list(files) == [str(mgr / f"ckpt-{i}.index") for i in (1, 2, 3)]
    assert [f["status"] for f in files.values()] == ["scanned", "scanned", "skipped"]
    assert "no .index is present" in files[str(mgr / "ckpt-3.index")]["reason"]
    assert code == 1  # the findings of ckpt-2; the missing one is not a read error


def test_a_state_file_naming_only_missing_checkpoints_falls_back_to_the_indexes_present(mgr):
    (mgr / "checkpoint").write_text('model_checkpoint_path: "/gone/ckpt-9"\n'
                                    'all_model_checkpoint_paths: "/gone/ckpt-9"\n')
    report = ckptscan.scan(mgr, all_checkpoints=True)
    assert [(f.path, f.status) for f in report.files] == [
        (str(mgr / "ckpt-1.index"), "scanned"), (str(mgr / "ckpt-2.index"), "scanned"), (str(mgr / "ckpt-9.index"), "skipped")]


def test_timeline_over_a_checkpoint_manager_folder_lists_every_checkpoint(capsys):
    code = main(["timeline", "--json", str(MGR)])
    doc = json.loads(capsys.readouterr().out)
    assert [c["path"] for c in doc["checkpoints"]] == [str(MGR / "ckpt-1.index"), str(MGR / "ckpt-2.index")]
    assert [c["status"] for c in doc["checkpoints"]] == ["good", "bad"]
    assert doc["first_bad"] == str(MGR / "ckpt-2.index") and doc["last_good"] == str(MGR / "ckpt-1.index")
    assert code == 1


def test_timeline_missing_listed_checkpoint_is_an_error_entry(mgr, capsys):
    (mgr / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n'
                                    'all_model_checkpoint_paths: "ckpt-0"\n'
                                    'all_model_checkpoint_paths: "ckpt-1"\n'
                                    'all_model_checkpoint_paths: "ckpt-2"\n')
    main(["timeline", "--json", str(mgr)])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert [(c["path"], c["status"]) for c in doc["checkpoints"]] == [
        (str(mgr / "ckpt-0.index"), "error"), (str(mgr / "ckpt-1.index"), "good"), (str(mgr / "ckpt-2.index"), "bad")]
    assert "no .index is present" in out.err


def test_cache_keys_a_tensorflow_index_by_its_data_shards_too(mgr, tmp_path, capsys):
    """``--cache``: a changed data shard is not a cache hit (the index alone did not change)."""
    cache = tmp_path / "cache"
    _scan_json(capsys, "--all-checkpoints", "--cache", cache, mgr)
    shard = mgr / "ckpt-1.data-00000-of-00001"
    with ckptscan.open_checkpoint(mgr / "ckpt-1.index") as ck:
        v = ck.find("head_a/kernel")
    data = bytearray(shard.read_bytes())
    data[v.offset:v.offset + 4] = b"\x00\x00\xc0\x7f"  # a NaN (float32, little-endian)
    shard.write_bytes(bytes(data))
    main(["scan", "--format", "json", "--all-checkpoints", "--cache", str(cache), str(mgr)])
    out = capsys.readouterr()
    assert "cache: 1 of 2 files unchanged" in out.err
    first = json.loads(out.out)["files"][0]
    assert ("NUM001", "head_a", "kernel") in _errors(first)
