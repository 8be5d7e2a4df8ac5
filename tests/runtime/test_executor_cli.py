"""``scan --jobs N``, ``--executor dask://…``, ``--format jsonl`` and ``--cache DIR``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptscan.bulk import BulkStats, cache_key, run_scan
from ckptscan.discover import discover
from ckptscan.engine import make_options

from conftest import fixture_path, need_module, run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder of checkpoints: healthy and broken, two formats, plus an unreadable file."""
    import keras

    d = tmp_path_factory.mktemp("corpus")
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, name="d1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="out")(x))
    for i in range(12):
        w = m.get_layer("bn").get_weights()
        w[3][:] = 1.0
        if i % 4 == 3:
            w[3][i % 5] = np.nan
        m.get_layer("bn").set_weights(w)
        m.save(d / f"ckpt_{i:02d}.keras")
    m.save(d / "legacy.h5")
    (d / "junk.keras").write_bytes(b"PK\x03\x04 not really")
    shutil.copy(fixture_path("diverge", "epoch_05.keras"), d / "epoch_05.keras")
    return d


def _norm(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc.pop("seconds", None)
    for f in doc.get("files", []):
        f.pop("seconds", None)
    if isinstance(doc.get("summary"), dict):
        doc["summary"].pop("seconds", None)
    return doc


def test_jobs2_output_equals_jobs1(corpus):
    one = run_cli("scan", "--format", "json", corpus)
    two = run_cli("scan", "--format", "json", "--jobs", "2", corpus)
    assert one.returncode == two.returncode == 2  # junk.keras is unreadable
    assert _norm(json.loads(two.stdout)) == _norm(json.loads(one.stdout))
    assert two.stderr.splitlines()[-1] == one.stderr.splitlines()[-1]


def test_jsonl_is_valid_line_by_line_while_running(corpus):
    """A real process: each record is on the pipe while the program still runs."""
    files = sorted(str(p) for p in corpus.iterdir())
    args = [sys.executable, "-m", "ckptscan", "scan", "--format", "jsonl", "--jobs", "2", *(files * 4)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    records = []
    running_at_first = None
    for line in proc.stdout:
        assert line.endswith("\n")
        rec = json.loads(line)  # every line is a complete JSON document the moment it appears
        if running_at_first is None:
            running_at_first = proc.poll() is None
        records.append(rec)
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert running_at_first is True
    assert proc.returncode == 2, err
    paths = sorted(r["path"] for r in records)
    assert paths == sorted(files)  # discovery de-duplicates repeated paths; one record per file
    assert all(r["schema_version"] == 1 for r in records)
    import importlib.resources

    import jsonschema

    schema = json.loads(importlib.resources.files("ckptscan").joinpath("schema/report.schema.json").read_text())
    file_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/file"}
    for r in records:
        jsonschema.validate({k: v for k, v in r.items() if k != "schema_version"}, file_schema)
    by = {Path(r["path"]).name: r for r in records}
    assert by["junk.keras"]["status"] == "error"
    assert by["ckpt_03.keras"]["status"] == "scanned"
    assert {f["rule_id"] for f in by["ckpt_03.keras"]["findings"]} >= {"BN001"}
    assert by["ckpt_00.keras"]["status"] == "scanned" and by["ckpt_00.keras"]["findings"] == []  # healthy


def test_cache_skips_unchanged_files(corpus, tmp_path, monkeypatch):
    work = tmp_path / "w"
    shutil.copytree(corpus, work)
    cache = tmp_path / "cache"
    options = make_options()
    cands = discover([work])
    first_stats = BulkStats()
    first = run_scan(cands, options, cache_dir=str(cache), stats=first_stats)
    assert first_stats.cache_hits == 0
    # a second run must not scan anything it has seen: make scanning impossible
    import importlib

    scan_mod = importlib.import_module("ckptscan.engine")  # the module (ckptscan.scan is also a function)

    def boom(*a, **k):
        raise AssertionError("scan_file called for an unchanged file")

    monkeypatch.setattr(scan_mod, "scan_file", boom)
    readable = [c for c in cands if not c.path.endswith("junk.keras")]
    again_stats = BulkStats()
    again = run_scan(readable, options, cache_dir=str(cache), stats=again_stats)
    assert again_stats.cache_hits == len(readable)
    want = {r.path: r for r in first.files}
    for r in again.files:
        assert r == want[r.path]
    monkeypatch.undo()
    # change one file: only that one is scanned again
    victim = work / "ckpt_00.keras"
    shutil.copy(work / "ckpt_03.keras", victim)
    stats3 = BulkStats()
    third = run_scan(readable, options, cache_dir=str(cache), stats=stats3)
    assert stats3.cache_hits == len(readable) - 1
    assert any(f.rule_id == "BN001" for f in next(r for r in third.files if r.path == str(victim)).findings)


def test_cache_key_depends_on_content_options_and_path(corpus, tmp_path):
    a = str(corpus / "ckpt_00.keras")
    o1, o2 = make_options(), make_options(select=["BN"])
    assert cache_key(a, o1) == cache_key(a, o1)
    assert cache_key(a, o1) != cache_key(a, o2)
    copy = tmp_path / "ckpt_00.keras"
    shutil.copy(a, copy)
    assert cache_key(str(copy), o1) != cache_key(a, o1)  # findings name the path
    before = cache_key(str(copy), o1)
    data = bytearray(copy.read_bytes())
    data[-30] ^= 1
    copy.write_bytes(bytes(data))
    assert cache_key(str(copy), o1) != before


def test_cli_cache_message_and_same_output(corpus, tmp_path):
    cache = tmp_path / "c"
    first = run_cli("scan", "-f", "json", "--cache", cache, corpus)
    second = run_cli("scan", "-f", "json", "--cache", cache, "-j", "2", corpus)
    n = len(list(corpus.iterdir())) - 1  # junk.keras is never cached
    assert f"ckptscan: cache: 0 of {n + 1} files unchanged (not read again)" in first.stderr
    assert f"ckptscan: cache: {n} of {n + 1} files unchanged (not read again)" in second.stderr
    assert _norm(json.loads(second.stdout)) == _norm(json.loads(first.stdout))


def test_dask_executor_cli_identical_to_local(corpus):
    distributed = need_module("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=40) as cluster:
        uri = "dask://" + cluster.scheduler_address.split("://", 1)[1]
        local = run_cli("scan", "-f", "json", corpus)
        remote = run_cli("scan", "-f", "json", "--executor", uri, corpus)
    assert remote.returncode == local.returncode == 2, remote.stderr
    assert _norm(json.loads(remote.stdout)) == _norm(json.loads(local.stdout))


def test_bad_executor_is_a_usage_error(corpus):
    p = run_cli("scan", "--executor", "ray://nowhere", corpus / "legacy.h5")
    assert p.returncode == 4
    assert p.stderr.startswith("ckptscan: error: ray://nowhere: unknown executor")
