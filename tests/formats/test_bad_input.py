"""Unreadable input: exit 2, one line ``ckptscan: error: <file>: <reason>``, no traceback."""

import zipfile

import h5py
import numpy as np
import pytest

from conftest import FIXTURES, run_cli


def _make(tmp_path, kind):
    p = tmp_path / f"bad_{kind}"
    if kind == "truncated_keras":
        data = (FIXTURES / "k3" / "seed.keras").read_bytes()
        p.write_bytes(data[: len(data) // 3])
    elif kind == "truncated_h5":
        data = (FIXTURES / "k3" / "seed_legacy.h5").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "zip_without_weights":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("config.json", "{}")
            zf.writestr("metadata.json", "{}")
    elif kind == "zip_not_keras":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("hello.txt", "hi")
    elif kind == "npz_weights":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("config.json", "{}")
            zf.writestr("model.weights.npz", b"PK")
    elif kind == "non_keras_h5":
        with h5py.File(p, "w") as f:
            f["data"] = np.arange(10)
    elif kind == "missing":
        pass
    return p


EXPECTED = {
    "truncated_keras": "truncated: zip end-of-central-directory record not found",
    "truncated_h5": "truncated",
    "random": "not a Keras weight archive",
    "empty": "empty file",
    "zip_without_weights": "without model.weights.h5",
    "zip_not_keras": "not a .keras model",
    "npz_weights": "pickled model.weights.npz",
    "non_keras_h5": "not a Keras weight archive",
    "missing": "no such file or directory",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bad_input_one_line_exit_2(tmp_path, kind):
    p = _make(tmp_path, kind)
    before = p.read_bytes() if p.exists() else None
    out = run_cli("inspect", p)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"ckptscan: error: {p}: ")
    assert EXPECTED[kind] in lines[0]
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    if before is not None:
        assert p.read_bytes() == before


def test_usage_error_exit_4():
    out = run_cli("inspect", "--no-such-option", "x")
    assert out.returncode == 4
