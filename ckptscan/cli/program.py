"""Running the command line as a program: the supervisor, the exit code, a quick exit."""

from __future__ import annotations

import sys

import typer

from ..errors import CkptscanError
from ._app import STATE, ExitCode, app, error_line, exit_code

# isort: off
# each command module registers its commands on `app`, in this order (that of `ckptscan --help`)
from . import inspect  # noqa: F401,E402
from . import fix, scan  # noqa: F401,E402
from . import history  # noqa: F401,E402
from . import journal  # noqa: F401,E402
from . import serve  # noqa: F401,E402
# isort: on


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (usage errors → 4).

    Run as the program (``argv`` None) it first forks a supervisor
    (:func:`ckptscan.runtime.supervisor.supervise`) that turns a file stuck in C code
    past ``--timeout`` into exit 2 and one error line, and it ends without the
    interpreter's teardown (:func:`_leave`); ``main(argv)`` called in-process does neither.
    """
    if argv is None:
        from ..runtime.supervisor import supervise

        command = _command_name(sys.argv[1:])
        supervise(command, on_hard_stop=_drop_fix_lock if command == "fix" else None)
    STATE["program"] = argv is None
    code = _run(argv)
    if argv is None:
        _leave(code)
    return code


def _drop_fix_lock(path: str) -> None:
    """``fix`` was stopped while reading ``path`` (a write is never timed): drop its lock file."""
    from ..journal import remove_stale_lock

    remove_stale_lock(path)


def _run(argv: list[str] | None) -> int:
    """The app on ``argv``: each command returns its :class:`ExitCode`; Typer's usage
    errors and ckptscan errors that escape a command are mapped here."""
    try:
        code = app(args=argv, prog_name="ckptscan", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors: bad option, missing argument
        _show_usage_error(exc)
        return exit_code(usage=True)
    except SystemExit as exc:  # a broken stdout pipe (Typer exits 1)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CkptscanError as exc:
        error_line(exc)
        return exit_code(unreadable=True)
    except KeyboardInterrupt:
        sys.stderr.write("ckptscan: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: still one line, never a traceback for the user
        sys.stderr.write(f"ckptscan: error: internal error: {type(exc).__name__}: {exc} (please report)\n")
        return exit_code(unreadable=True)
    return int(code) if isinstance(code, int) else ExitCode.OK


def _show_usage_error(exc: Exception) -> None:
    """Print a usage error as Typer's standalone mode does (a Rich panel when Rich is there)."""
    from typer import core

    if core.HAS_RICH and app.rich_markup_mode is not None:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
    else:
        exc.show()


def _leave(code: int) -> None:
    """End the program now, without Python's interpreter teardown.

    Freeing every module and object of numpy, h5py and ckptscan after a scan takes as
    long as reading a mid-sized checkpoint (measured in docs/benchmarks.md, "exit"), and
    the user waits for it. Output streams are flushed and ``atexit`` handlers run
    (temporary files, the watchdog, pools) first. Returns, leaving the normal exit to
    the caller, whenever skipping teardown could lose anything: a flush that fails (its
    error is reported as usual), a non-daemon thread still running, or an HDF5 file
    still open (the HDF5 library flushes open files in its own C exit handler).

    The handlers are run with ``atexit._run_exitfuncs``: Python has no public way to run
    them before ``os._exit`` (``sys.exit`` runs them only as part of the teardown this
    skips); the call exists in every CPython since 2.x and in PyPy, and if it ever went
    away the program would fall back to the normal exit.
    """
    import atexit
    import os
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None:  # pragma: no cover - see the docstring
        return
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
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)


def _command_name(args: list[str]) -> str | None:
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
