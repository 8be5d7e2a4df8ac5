"""Shared test helpers: committed fixture paths, running the CLI (in process or as a program)."""

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
# XLA compiles every jitted JAX computation Keras runs here (each initializer's random draw
# per distinct shape: ~1 s apiece for threefry at the default -O2, ~0.15 s at -O0; then the
# predict/train steps). Keras is the test oracle, not the code under test, and its models
# are tiny: optimised machine code never pays back its compile time. Set before JAX starts
# its backend, inherited by every child (Keras subprocesses; TensorFlow ignores it unless it
# JIT-compiles). Seeded initial values may differ from -O2 in the last bit (no FMA fusion).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def need_module(name: str):
    """Import ``name``, a package of the ``dev`` extra: a skip locally when it is missing,
    a failure under ``CI=true`` (`.ci/run` installs the extra, so missing means broken)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is missing on CI (.ci/run installs '.[dev]')", pytrace=False)
        pytest.skip(f"{name} not installed", allow_module_level=True)


def fixture_path(*parts: str | Path) -> Path:
    """The committed fixture ``fixtures/PARTS``; a missing one fails the test.

    Fixtures are committed (written by Keras, ``fixtures/generate.py``), never built by
    the tests: a renamed or deleted one is a broken checkout, not a reason to skip.
    """
    path = FIXTURES.joinpath(*map(str, parts))
    assert path.exists(), f"committed fixture {path.relative_to(ROOT)} is missing (renamed or deleted?)"
    return path


def run_cli(*args: str | Path, cwd: str | Path | None = None, timeout: float = 120,
            process: bool = False) -> subprocess.CompletedProcess:
    """Run ``ckptscan ARGS``; returns a completed process (``returncode``, ``stdout``, ``stderr``).

    By default in this process: ``ckptscan.cli.main(ARGS)`` with its output captured at
    the Python level and at file descriptors 1 and 2 (C libraries write there), in ``cwd``.
    In-process ``main`` applies no default memory cap and forks no supervisor, and
    ``timeout`` does not apply. ``process=True`` runs ``python -m ckptscan ARGS`` in a
    subprocess instead: for what only a real program has (the supervisor, the memory cap,
    signals, the exit and its teardown).
    """
    argv = [str(a) for a in args]
    if process:
        return subprocess.run(
            [sys.executable, "-m", "ckptscan", *argv],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    return _main_in_process(argv, cwd)


def _main_in_process(argv: list[str], cwd: str | Path | None) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import tempfile

    from ckptscan.cli import main

    py_out, py_err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(fd_out.fileno(), 1)
            os.dup2(fd_err.fileno(), 2)
            if cwd is not None:
                os.chdir(cwd)
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                code = main(argv)
        finally:
            os.chdir(here)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        fd_out.seek(0)
        fd_err.seek(0)
        c_out = fd_out.read().decode("utf-8", "replace")
        c_err = fd_err.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(["ckptscan", *argv], code, py_out.getvalue() + c_out, py_err.getvalue() + c_err)


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


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory):
    """This checkout's pre-commit hook as a committed repository, for ``tests/precommit_hook.py``."""
    from precommit_hook import make_hook_repo

    return make_hook_repo(tmp_path_factory)
