"""Shared test helpers: fixture paths, running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m ckptscan ARGS`` in a subprocess; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "ckptscan", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


_IMPORTS_PROBE = """
import atexit, sys, json, runpy
sys.argv = ["ckptscan"] + json.loads(sys.argv[1])
# at exit: the program ends through os._exit after running atexit handlers (cli._leave)
atexit.register(lambda: print("IMPORTED:" + json.dumps(sorted(sys.modules)), flush=True))
runpy.run_module("ckptscan", run_name="__main__")
"""


def cli_imports(args: list[str]) -> tuple[set[str], str]:
    """Run the CLI with ``args`` in a fresh interpreter; (every module it imported, its stdout)."""
    import json

    out = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE, json.dumps([str(a) for a in args])],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("IMPORTED:")][-1]
    return set(json.loads(line[len("IMPORTED:"):])), out.stdout


@pytest.fixture
def cli():
    """The :func:`run_cli` helper as a fixture."""
    return run_cli
