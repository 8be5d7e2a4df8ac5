"""ckptscan must never import a model runtime (TensorFlow, Keras, JAX, torch)."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "jax", "torch")

PROBE = """
import sys, json, runpy
sys.argv = ["ckptscan"] + json.loads(sys.argv[1])
try:
    runpy.run_module("ckptscan", run_name="__main__")
except SystemExit:
    pass
bad = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print("IMPORTED:" + json.dumps(bad))
""" % (FORBIDDEN,)


def _imported(args):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=120)
    line = [l for l in out.stdout.splitlines() if l.startswith("IMPORTED:")][-1]
    return json.loads(line[len("IMPORTED:"):])


def test_import_ckptscan_imports_no_runtime():
    code = "import sys, ckptscan, ckptscan.cli, ckptscan.formats; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (FORBIDDEN,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["inspect", "fixtures/k3/seed.keras"], ["inspect", "--json", "fixtures/k3/seed_legacy.h5"]])
def test_cli_imports_no_runtime(args):
    assert _imported(args) == []


def test_source_has_no_runtime_import_statement():
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parent.parent / "ckptscan"
    pat = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf_keras|jax|torch)\b", re.M)
    offenders = [str(p) for p in src.rglob("*.py") if pat.search(p.read_text())]
    assert offenders == []
