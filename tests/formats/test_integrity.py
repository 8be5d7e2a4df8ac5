"""One verdict per file (issue 13, item 1): a folder never lets a broken archive through.

Every broken-file kind sits in its own folder beside a healthy ``.keras``; ``scan DIR``
and ``scan --jobs 2 DIR`` must exit 2 and name the broken file with its reason. A
healthy file beside a well-formed non-Keras ``data.h5`` exits 0 (``--strict``: 2).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from ckptscan import scan
from ckptscan.errors import MalformedArchiveError
from ckptscan.formats import open_checkpoint
from ckptscan.formats.integrity import integrity_problem
from ckptscan.formats.verdict import classify

from conftest import run_cli
from gate_kinds import HEALTHY, K3, KINDS, stored_keras_with_cut_member, write_kind


@pytest.mark.parametrize("kind", KINDS)
def test_folder_with_a_broken_file_exits_2(tmp_path, kind):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(HEALTHY, folder / "healthy.keras")
    name, reason = write_kind(folder, kind)
    for args in (["scan", str(folder)], ["scan", "--jobs", "2", str(folder)]):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        line = f"ckptscan: error: {folder / name}: "
        assert line in out.stderr, out.stderr
        assert reason in out.stderr.split(line, 1)[1].splitlines()[0], out.stderr
        assert "healthy.keras" in out.stdout  # the healthy file is still scanned
    # the Python API gives the same verdict
    report = scan(folder)
    assert report.exit_code() == 2
    assert {f.path.name if hasattr(f.path, "name") else os.path.basename(f.path): f.status for f in report.files}[name] == "error"


def test_explicit_truncated_file_names_the_cut(tmp_path):
    data = (K3 / "seed.weights.h5").read_bytes()
    p = tmp_path / "cut.weights.h5"
    p.write_bytes(data[: len(data) // 2])
    out = run_cli("scan", p)
    assert out.returncode == 2
    assert f"ckptscan: error: {p}: truncated: HDF5 end-of-file address {len(data)} > file size {len(data) // 2}\n" in out.stderr
    with pytest.raises(MalformedArchiveError, match=r"truncated: HDF5 end-of-file address \d+ > file size"):
        open_checkpoint(p)


def test_healthy_file_and_non_keras_hdf5_exit_0(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(HEALTHY, folder / "healthy.keras")
    with h5py.File(folder / "data.h5", "w") as f:
        f["x"] = np.arange(10.0)
    with zipfile.ZipFile(folder / "bundle.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    (folder / "README.md").write_text("# runs\n")
    for args in (["scan", str(folder)], ["scan", "--jobs", "2", str(folder)]):
        out = run_cli(*args)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert f"{folder / 'data.h5'}: HDF5 file, but not a Keras weight archive" in out.stdout
        assert "not a Keras weight archive (not a Keras" not in out.stdout  # no doubled reason
        assert "3 skipped" in out.stderr
    strict = run_cli("scan", "--strict", folder)
    assert strict.returncode == 2
    assert f"ckptscan: error: {folder / 'data.h5'}: HDF5 file, but not a Keras weight archive" in strict.stderr
    assert f"ckptscan: error: {folder / 'bundle.zip'}" in strict.stderr
    assert "README.md" not in strict.stderr  # unrelated text stays skipped
    assert scan(folder).exit_code() == 0 and scan(folder, strict=True).exit_code() == 2
    # a glob gets the same verdicts as a folder
    globbed = run_cli("scan", str(folder / "*"))
    assert globbed.returncode == 0 and "3 skipped" in globbed.stderr, globbed.stderr
    assert run_cli("scan", "--strict", str(folder / "*")).returncode == 2


def test_classify_outcomes(tmp_path):
    assert classify(K3 / "seed.keras").outcome == "keras"
    assert classify(K3 / "seed_sharded.weights.json").format == "keras3-sharded"
    data = (K3 / "seed_legacy.h5").read_bytes()
    p = tmp_path / "m.h5"
    for n, want in [(0, "empty file"), (1, "truncated: file is 1 byte, shorter than the HDF5 signature"),
                    (40, "truncated: HDF5 superblock incomplete (file size 40)"),
                    (len(data) - 1, f"truncated: HDF5 end-of-file address {len(data)} > file size {len(data) - 1}")]:
        p.write_bytes(data[:n])
        assert classify(p) == classify(p, strict=True)
        assert (classify(p).outcome, classify(p).reason) == ("unreadable", want)
    z = (K3 / "seed.keras").read_bytes()
    k = tmp_path / "m.keras"
    k.write_bytes(z[:-10])
    assert classify(k).reason == f"truncated: zip end-of-central-directory record not found (file size {len(z) - 10})"
    # a consistent zip whose stored weights member is cut: the member's own end-of-file address
    stored_keras_with_cut_member(k)
    assert classify(k).reason.startswith("truncated: HDF5 end-of-file address ")
    assert "> member model.weights.h5 size" in classify(k).reason
    # central directory pointing past its end record
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zz:
        zz.writestr("config.json", "{}")
        zz.writestr("model.weights.h5", b"x" * 100)
    raw = bytearray(buf.getvalue())
    raw = raw[:40] + raw[60:]  # drop 20 bytes of the first member's data
    k.write_bytes(bytes(raw))
    assert classify(k).outcome == "unreadable" and classify(k).reason.startswith(("truncated: zip", "corrupt zip"))
    # text not claiming Keras: unrelated
    t = tmp_path / "notes.txt"
    t.write_text("hello")
    assert classify(t).outcome == "not_keras"
    assert integrity_problem(K3 / "seed.keras") is None
