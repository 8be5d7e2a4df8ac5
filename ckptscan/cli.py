"""The ``ckptscan`` command line: parse, call the library, render, exit code.

Exit codes (every command):

  0  clean / success
  1  findings at or above ``--fail-on`` (scan), or something left unfixed (fix)
  2  a file could not be read (``ckptscan: error: <file>: <reason>`` on stderr)
  3  nothing scannable found
  4  usage error
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, List, Optional

import typer

from . import __version__
from .errors import CkptscanError

EXIT_OK, EXIT_FINDINGS, EXIT_READ_ERROR, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2, 3, 4

app = typer.Typer(
    name="ckptscan",
    help="Find and repair NaN/Inf weights and broken BatchNormalization statistics in Keras "
    "weight archives (.keras, .weights.h5, legacy .h5) without TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def error_line(exc: CkptscanError | str) -> None:
    """Print the one-line error format on stderr."""
    sys.stderr.write(f"ckptscan: error: {exc}\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ckptscan {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    max_memory: Annotated[
        Optional[str], typer.Option("--max-memory", envvar="CKPTSCAN_MAX_MEMORY", metavar="SIZE",
                                    help="Memory cap of the process reading the files, e.g. 2G, 1536M "
                                    "(0: no cap; default 2G). A file that needs more fails with exit 2.")
    ] = None,
) -> None:
    """ckptscan: static health checks and repairs for Keras checkpoints."""
    _memory_cap(max_memory)


def _memory_cap(value: Optional[str]) -> None:
    """Apply ``--max-memory`` (run as the program: always, default 2 GiB; in-process
    ``main(argv)``: only when given, the host process's limits are its own)."""
    if value is None and not _STATE.get("program"):
        return
    from .limits import apply_memory_cap, parse_size

    try:
        apply_memory_cap(None if value is None else parse_size(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--max-memory' / CKPTSCAN_MAX_MEMORY") from None


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="A .keras, .weights.h5, .weights.json or legacy .h5 file (or a saved-model folder).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")] = False,
    layer: Annotated[Optional[str], typer.Option("--layer", help="Only layers whose path matches this glob, e.g. '*_bn'.")] = None,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also list optimizer state.")] = False,
    config: Annotated[Optional[str], typer.Option("--config", help="config.json naming the variables of a bare .weights.h5.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up on the file after this many seconds (0: no limit).")] = 300.0,
) -> None:
    """List every variable with the layer path and name Keras uses for it."""
    from .formats import open_checkpoint
    from .inventory import inventory, render_table
    from .limits import file_timeout

    try:
        with file_timeout(timeout, path), open_checkpoint(path, config=config) as ckpt:
            doc = inventory(ckpt, layer, include_optimizer)
    except CkptscanError as exc:
        error_line(exc)
        finish(EXIT_READ_ERROR)
    if json_out:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        typer.echo(render_table(doc))


# the other commands register themselves on `app`
from . import cli_fix, cli_scan  # noqa: E402,F401
from . import cli_history  # noqa: E402,F401
from . import cli_serve  # noqa: E402,F401

_STATE = {"own_exit": False}


def finish(code: int) -> None:
    """Leave a command with ``code`` (distinguishes our exit 2 from Typer's usage error)."""
    _STATE["own_exit"] = True
    raise typer.Exit(code)


def main(argv: List[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (usage errors → 4).

    Run as the program (``argv`` None) it first forks a supervisor
    (:func:`ckptscan.limits.supervise`) that turns a file stuck in C code past
    ``--timeout`` into exit 2 and one error line, and it ends without the interpreter's
    teardown (:func:`_leave`); ``main(argv)`` called in-process does neither.
    """
    if argv is None:
        from .limits import supervise

        supervise(_command_name(sys.argv[1:]))
    _STATE["own_exit"] = False
    _STATE["program"] = argv is None
    code = _run(argv)
    if argv is None:
        _leave(code)
    return code


def _run(argv: List[str] | None) -> int:
    try:
        app(args=argv, prog_name="ckptscan")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 2 and not _STATE["own_exit"]:
            return EXIT_USAGE
        return code
    except CkptscanError as exc:
        error_line(exc)
        return EXIT_READ_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("ckptscan: interrupted\n")
        return 130
    except Exception as exc:  # a bug: still one line, never a traceback for the user
        sys.stderr.write(f"ckptscan: error: internal error: {type(exc).__name__}: {exc} (please report)\n")
        return EXIT_READ_ERROR
    return 0


def _leave(code: int) -> None:
    """End the program now, without Python's interpreter teardown.

    Freeing every module and object of numpy, h5py and ckptscan costs 25-45 ms after a
    scan, as long as reading a 179 MB checkpoint, and the user waits for it. Output streams
    are flushed and ``atexit`` handlers run (temporary files, the watchdog, pools)
    first. Returns, leaving the normal exit to the caller, whenever skipping teardown
    could lose anything: a flush that fails (its error is reported as usual), a
    non-daemon thread still running, or an HDF5 file still open (the HDF5 library
    flushes open files in its own C exit handler).
    """
    import atexit
    import os
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    h5py = sys.modules.get("h5py")
    if h5py is not None and h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)


def _command_name(args: List[str]) -> Optional[str]:
    """The command word of ``args`` (skips global options and the value of ``--max-memory``)."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--max-memory":
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def run() -> None:  # pragma: no cover - thin wrapper
    """``python -m ckptscan``."""
    sys.exit(main())
