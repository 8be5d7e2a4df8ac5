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
    out = _run(f"import sys, ckptscan; print(sorted(m for m in {HEAVY + ('typer',)!r} if m in sys.modules))")
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
    """Each public name is unbound after ``import ckptscan`` and resolves on first use to
    the object of that name (not the submodule, not a stand-in)."""
    code = (
        "import ckptscan, sys, types\n"
        "names = [n for n in ckptscan.__all__ if n != '__version__']\n"
        "print('BOUND', sorted(n for n in names if n in vars(ckptscan)))\n"
        "print('NUMPY', 'numpy' in sys.modules)\n"
        "from ckptscan.discover import discover\n"
        "from ckptscan import engine\n"
        "assert callable(ckptscan.scan) and ckptscan.scan.__module__ == 'ckptscan.bulk', ckptscan.scan\n"
        "for n in names:\n"
        "    v = getattr(ckptscan, n)\n"
        "    assert not isinstance(v, types.ModuleType) and v.__name__ == n, (n, v)\n"
        "    assert v.__module__.startswith('ckptscan.'), (n, v.__module__)\n"
        "    print('OK', n)\n"
        "print('NUMPY', 'numpy' in sys.modules)\n"
        "try:\n    ckptscan.nope\nexcept AttributeError as e:\n    print('AE', e)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    import ckptscan

    names = [n for n in ckptscan.__all__ if n != "__version__"]
    assert len(names) >= 8
    assert out.stdout.splitlines() == [
        "BOUND []", "NUMPY False", *(f"OK {n}" for n in names), "NUMPY True",
        "AE module 'ckptscan' has no attribute 'nope'",
    ]
