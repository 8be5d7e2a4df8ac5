"""ckptscan must never import a model runtime (TensorFlow, Keras, JAX, torch)."""

import subprocess
import sys

import pytest

from conftest import FIXTURES, cli_imports

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "jax", "torch")


def _imported(args):
    mods, _ = cli_imports(args)
    if args[0] in ("inspect", "scan", "fix"):  # the probe saw the command really read a file
        assert "h5py" in mods
    return sorted(m for m in mods if m.split(".")[0] in FORBIDDEN)


def test_import_ckptscan_imports_no_runtime():
    code = ("import sys, ckptscan, ckptscan.cli, ckptscan.formats; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [
    ["--version"], ["--help"], ["inspect", FIXTURES / "k3" / "seed.keras"],
    ["inspect", "--json", FIXTURES / "k3" / "seed_legacy.h5"], ["scan", FIXTURES / "k3" / "seed_broken.keras"],
    ["fix", "--dry-run", FIXTURES / "k3" / "seed_broken.keras"],
], ids=["version", "help", "inspect", "inspect-legacy", "scan", "fix-dry-run"])
def test_cli_imports_no_runtime(args):
    assert _imported(args) == []


def test_source_has_no_runtime_import_statement():
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parent.parent / "ckptscan"
    pat = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf_keras|jax|torch)\b", re.M)
    offenders = [str(p) for p in src.rglob("*.py") if pat.search(p.read_text())]
    assert offenders == []
