"""The ``ckptscan`` command line: parse, call the library, render, return the exit code.

The console script (``ckptscan = ckptscan.cli:main``) and ``python -m ckptscan`` both
enter :func:`main`; ``ckptscan --version`` answers before Typer, numpy or h5py are
imported. Modules: :mod:`._app` (the app, exit codes, the error line),
:mod:`.program` (running it as a program: supervisor, exit), one module per command
group (:mod:`.inspect`, :mod:`.scan`, :mod:`.fix`, :mod:`.history`, :mod:`.journal`).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (see :mod:`ckptscan.cli._app`).

    Run as the program (``argv`` None) it first forks a supervisor and ends without the
    interpreter's teardown (:func:`ckptscan.cli.program.main`); ``main(argv)`` called
    in-process does neither.
    """
    if (sys.argv[1:] if argv is None else list(argv)) == ["--version"]:  # fast path: no typer, numpy, h5py
        from .._version import __version__

        sys.stdout.write(f"ckptscan {__version__}\n")
        return 0
    from .program import main as run_main

    return run_main(argv)


def __getattr__(name: str):
    if name == "app":  # the Typer app with every command registered
        from .program import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
