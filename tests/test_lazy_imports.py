"""Start-up stays cheap: heavy modules are imported only when a command needs them.

No timing here (timings live in ``benchmarks/``); these tests check *which* modules
get imported, which is what makes ``ckptscan --version`` and ``--help`` fast.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import cli_imports

HEAVY = ("numpy", "h5py", "ckptscan.formats", "ckptscan.engine", "ckptscan.rules", "ckptscan.patch", "ckptscan.stats")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def _imported_by_cli(args: list[str]) -> tuple[list[str], str]:
    mods, stdout = cli_imports(args)
    return sorted(m for m in mods if m in HEAVY or m == "typer"), stdout


def test_import_ckptscan_loads_nothing_heavy():
    out = _run("import sys, ckptscan; print(sorted(m for m in %r if m in sys.modules))" % (HEAVY + ("typer",),))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_version_fast_path_skips_typer_numpy_h5py():
    mods, stdout = _imported_by_cli(["--version"])
    assert stdout.startswith("ckptscan 0.1.0\n")
    assert mods == []


def test_help_loads_the_cli_but_no_numeric_stack():
    mods, stdout = _imported_by_cli(["--help"])
    assert "Usage" in stdout
    assert mods == ["typer"]


def test_public_names_still_resolve_lazily():
    code = (
        "import ckptscan, sys\n"
        "from ckptscan.discover import discover\n"
        "from ckptscan import engine\n"
        "assert callable(ckptscan.scan) and ckptscan.scan.__module__ == 'ckptscan.bulk', ckptscan.scan\n"
        "from ckptscan import open_checkpoint, fix, Severity, CkptscanError, Variable\n"
        "assert 'numpy' in sys.modules\n"
        "assert set(ckptscan.__all__) <= set(dir(ckptscan))\n"
        "try:\n    ckptscan.nope\nexcept AttributeError as e:\n    print('AE', e)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "AE module 'ckptscan' has no attribute 'nope'"
