"""The statements docs/remote.md (JSONL records) and docs/fuzzing.md (``fix --timeout``) make hold."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import jsonschema

from conftest import FIXTURES, ROOT, run_cli


def test_jsonl_record_without_schema_version_is_a_report_file(tmp_path):
    for name in ("seed.keras", "seed_broken.keras"):
        shutil.copy(FIXTURES / "k3" / name, tmp_path / name)
    (tmp_path / "cut.h5").write_bytes((FIXTURES / "k3" / "seed_legacy.h5").read_bytes()[:500])
    out = run_cli("scan", "--format", "jsonl", tmp_path)
    assert out.returncode == 2, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["status"] for r in records} == {"scanned", "error"} and len(records) == 3
    schema = json.loads((ROOT / "ckptscan" / "schema" / "report.schema.json").read_text())
    file_schema = {k: schema[k] for k in ("$schema", "$defs") if k in schema} | {"$ref": "#/$defs/file"}
    for r in records:
        assert r["schema_version"] == 1
        jsonschema.validate({k: v for k, v in r.items() if k != "schema_version"}, file_schema)
        try:  # as docs/remote.md says: with the key, the record is not a `file`
            jsonschema.validate(r, file_schema)
        except jsonschema.ValidationError as exc:
            assert "schema_version" in exc.message
        else:
            raise AssertionError("a record with schema_version validated against $defs/file")
    for key in ("Without its\n  `schema_version` key a record is valid against", "with it, it is not"):
        assert key in (ROOT / "docs" / "remote.md").read_text()


def test_fix_timeout_stops_the_hang_file(tmp_path):
    """docs/fuzzing.md: ``fix --timeout`` ends on the file libhdf5 loops on, exit 2, one line, nothing written."""
    from ckptscan.runtime.watchdog import HARD_GRACE_ENV

    p = tmp_path / "hang.h5"
    shutil.copy(ROOT / "tests" / "data" / "hdf5_hang_legacy.h5", p)
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "ckptscan", "fix", "--timeout", "2", str(p)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
                         env={**os.environ, HARD_GRACE_ENV: "1"})  # the stuck file spins a core until stopped
    took = time.monotonic() - t0
    assert took < 2 + 1 + 20, took  # + interpreter start-up
    assert out.returncode == 2, out.stderr
    assert f"ckptscan: error: {p}: timed out after 2 s (--timeout); stuck in the HDF5 library, stopped" in out.stderr
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["hang.h5"]  # no lock, backup or temporary left
    assert "`fix` had no\n`--timeout` then" in (ROOT / "docs" / "fuzzing.md").read_text()
