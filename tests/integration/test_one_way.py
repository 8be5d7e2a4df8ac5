"""Issue 12: readers never write, a pending journal is a finding, and the two bugs of the
formats/remote and patch/remote loops stay fixed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from ckptscan import journal
from ckptscan.cli import main
from ckptscan.formats import open_checkpoint
from ckptscan.formats.remote import is_uri
from conftest import FIXTURES

BROKEN = FIXTURES / "k3" / "seed_broken.keras"


def _digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.fixture
def pending(tmp_path) -> tuple[Path, Path]:
    """A copy of a checkpoint whose ``ckptscan fix`` was killed right after committing its
    journal (the state the fault point ``journal-committed`` leaves): (file, journal)."""
    p = tmp_path / "m.keras"
    shutil.copyfile(BROKEN, p)
    old = p.read_bytes()[100:104]
    with journal.acquire_lock(str(p)):
        jp = journal.write_journal(str(p), [journal.Region(str(p), 100, old, b"XXXX")])
    return p, Path(jp)


def test_inspect_of_a_path_that_looks_like_a_uri_is_one_error_line(capsys):
    # before: formats sent any "://" path to remote.open_any, which sent it back (RecursionError)
    assert not is_uri("a b://x.keras") and is_uri("s3://b/x.keras") and is_uri("simplecache::s3://b/x.keras")
    assert main(["inspect", "a b://x.keras"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "ckptscan: error: a b://x.keras: no such file or directory\n")


def test_fix_backup_of_a_file_uri_leaves_the_backup(tmp_path, capsys):
    # before: any "://" in the list sent every path to remote.fix_paths, which dropped backup
    p = tmp_path / "m.keras"
    shutil.copyfile(BROKEN, p)
    original = p.read_bytes()
    assert main(["fix", "--backup", f"file://{p}"]) == 0, capsys.readouterr().err
    bak = p.with_name("m.keras.bak")
    assert bak.read_bytes() == original and p.read_bytes() != original
    assert f"backup: {bak}" in capsys.readouterr().out


def test_fix_of_file_uris_keeps_jobs_and_timeout(tmp_path, capsys):
    # the same request reaches every path: two file:// URIs patched by two workers, each
    # within --timeout, with --backup-to
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    for p in (a, b):
        shutil.copyfile(BROKEN, p)
    man = tmp_path / "manifest.json"
    code = main(["fix", "--jobs", "2", "--timeout", "60", "--backup", "--manifest", str(man),
                 f"file://{a}", f"file://{b}"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(man.read_text())
    assert [(f["path"], f["status"], f["backup"]) for f in doc["files"]] == [
        (str(a), "fixed", f"{a}.bak"), (str(b), "fixed", f"{b}.bak")]


def test_readers_never_write_and_scan_reports_the_pending_journal(pending, capsys):
    p, jp = pending
    before = _digest(p, jp)
    with open_checkpoint(p) as ckpt:
        assert ckpt.variables
    assert main(["inspect", str(p)]) == 0
    assert main(["diff", str(p), str(BROKEN)]) == 0
    capsys.readouterr()
    assert main(["scan", "--format", "json", str(p)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert _digest(p, jp) == before and journal.needs_recovery(str(p))  # byte for byte untouched
    (f,) = [f for f in doc["files"][0]["findings"] if f["rule_id"] == "JRN001"]
    assert f["severity"] == "error" and f["category"] == "file"
    assert f["message"] == (f"{p}: a ckptscan fix was interrupted while writing this checkpoint and left its "
                            f"journal {jp}; it may hold half-written values until it is recovered")
    assert "ckptscan recover" in f["fix_hint"] and "ckptscan fix" in f["fix_hint"]


def test_recover_is_the_explicit_writer(pending, capsys):
    p, jp = pending
    original = BROKEN.read_bytes()
    assert main(["recover", str(p)]) == 0
    assert capsys.readouterr().out == f"{p}: recovered an interrupted ckptscan fix: rolled back 0 of 1 regions\n"
    assert not jp.exists() and p.read_bytes() == original
    assert main(["recover", str(p)]) == 0
    assert capsys.readouterr().out == f"{p}: nothing to recover\n"
    assert main(["scan", "--format", "json", "--select", "JRN", str(p)]) == 0


def test_fix_still_recovers_first(pending, capsys):
    p, jp = pending
    assert main(["fix", "--dry-run", str(p)]) == 0, capsys.readouterr().err
    assert not jp.exists()
    assert "note: recovered an interrupted ckptscan fix" in capsys.readouterr().out


def test_console_script_version_is_the_fast_path():
    # what the `ckptscan` console script runs: ckptscan.cli:main, before Typer, numpy or h5py
    import subprocess
    import sys

    code = ("import sys\nsys.argv = ['ckptscan', '--version']\nfrom ckptscan.cli import main\nrc = main()\n"
            "print(sorted(m for m in ('typer', 'numpy', 'h5py', 'ckptscan.cli.program') if m in sys.modules))\n"
            "sys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "ckptscan 0.1.0\n[]\n", "")


def test_a_ckptscan_bug_is_not_reported_as_corrupt_metadata():
    from ckptscan.errors import MalformedArchiveError
    from ckptscan.formats._errors import translate_errors

    for bug in (AttributeError("'NoneType' object has no attribute 'id'"), AssertionError("x")):
        with pytest.raises(type(bug)):
            with translate_errors("m.h5"):
                raise bug
    with pytest.raises(MalformedArchiveError, match=r"^m.h5: corrupt HDF5 metadata \(bad object header\)$"):
        with translate_errors("m.h5"):
            raise OSError("Unable to synchronously open object (bad object header)")


def test_an_internal_error_is_one_line_exit_2(monkeypatch, capsys):
    from ckptscan.formats import layouts

    def broken(src):
        raise AttributeError("boom")

    monkeypatch.setattr(layouts, "sniff", broken)
    assert main(["inspect", str(BROKEN)]) == 2
    assert capsys.readouterr().err == "ckptscan: error: internal error: AttributeError: boom (please report)\n"
