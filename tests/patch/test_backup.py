"""``fix --backup`` never overwrites a backup (issue 13, item 6)."""

from __future__ import annotations

import hashlib
import shutil

import ckptscan
from conftest import FIXTURES, run_cli


def _sha(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_backup_twice_keeps_the_first_original(tmp_path):
    path = tmp_path / "seed_broken.keras"
    shutil.copy(FIXTURES / "k3" / "seed_broken.keras", path)
    original = _sha(path)
    first = run_cli("fix", "--backup", path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"backup: {path}.bak" in first.stdout
    assert _sha(f"{path}.bak") == original
    patched = _sha(path)
    assert patched != original
    # the second run fixes the warning left (BN002) and must not touch the first backup
    second = run_cli("fix", "--backup", "--select", "BN002", path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"backup: {path}.bak.1" in second.stdout
    assert _sha(f"{path}.bak") == original, "the first original was overwritten"
    assert _sha(f"{path}.bak.1") == patched
    third = run_cli("fix", "--backup", path)  # nothing left to fix: no backup made, none touched
    assert "nothing to fix" in third.stdout and not (tmp_path / "seed_broken.keras.bak.2").exists()
    assert _sha(f"{path}.bak") == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_backup_to_existing_path_is_refused(tmp_path):
    path = tmp_path / "m.weights.h5"
    shutil.copy(FIXTURES / "k3" / "seed_broken.weights.h5", path)
    keep = tmp_path / "keep.h5"
    keep.write_bytes(b"precious")
    before = _sha(path)
    res = ckptscan.fix(path, backup=str(keep)).files[0]
    assert res.status == "refused" and "already exists; not overwritten" in res.reason
    assert keep.read_bytes() == b"precious" and _sha(path) == before


def test_sharded_backups_are_numbered(tmp_path):
    for p in (FIXTURES / "k3").glob("seed_broken_sharded*"):
        shutil.copy(p, tmp_path / p.name)
    index = tmp_path / "seed_broken_sharded.weights.json"
    originals = {p.name: _sha(p) for p in tmp_path.glob("*_0*.weights.h5")}
    r1 = ckptscan.fix(index, backup=True).files[0]
    assert r1.status == "fixed", r1
    r2 = ckptscan.fix(index, backup=True, select=("BN002",)).files[0]
    assert r2.status == "fixed", r2
    assert ".bak.1" in r2.backup
    for name, sha in originals.items():
        bak = tmp_path / (name + ".bak")
        if bak.exists():
            assert _sha(bak) == sha
