"""The Typer app every command registers on, the exit codes, and the one-line error format.

Exit codes (every command), decided by :func:`exit_code` alone:

  0  clean / success
  1  findings at or above ``--fail-on`` (scan), something left unfixed (fix), different
     (diff), a bad checkpoint (timeline)
  2  a file could not be read (``ckptscan: error: <file>: <reason>`` on stderr)
  3  nothing scannable found
  4  usage error
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import CkptscanError
from ..report import ExitCode, exit_code

__all__ = ["NEEDS_OUTPUT", "ExitCode", "STATE", "app", "error_line", "exit_code", "split_values", "usage_error",
           "write_output"]

app = typer.Typer(
    name="ckptscan",
    help="Find and repair NaN/Inf weights and broken BatchNormalization statistics in Keras "
    "weight archives (.keras, .weights.h5, legacy .h5) without TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: ``program``: run as the program (``main()`` with no argv), not ``main(argv)`` in-process.
STATE = {"program": False}


def error_line(exc: CkptscanError | str) -> None:
    """Print the one-line error format on stderr."""
    sys.stderr.write(f"ckptscan: error: {exc}\n")


def usage_error(msg: str) -> ExitCode:
    """Print ``msg`` as the one error line; the usage exit code (for ``return usage_error(...)``)."""
    error_line(msg)
    return exit_code(usage=True)


#: ``--format html`` (scan, timeline, diff) refused without ``-o``: a page of markup on a
#: terminal helps no one, and a report meant for a ticket or a CI artifact wants a file.
NEEDS_OUTPUT = "--format html writes a file: add -o report.html"


def write_output(text: str, output: str | None) -> bool:
    """``text`` to stdout, or to the file ``output``; False after one error line if it cannot be written."""
    if not output:
        sys.stdout.write(text)
        return True
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        error_line(f"{output}: cannot write report ({exc.strerror or exc})")
        return False
    return True


def split_values(values: list[str] | None) -> tuple[str, ...]:
    """A repeatable option's values, each also comma-separated: ``-s a,b -s c`` → ``(a, b, c)``."""
    return tuple(p.strip() for v in values or () for p in v.split(",") if p.strip())


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ckptscan {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option("--max-memory", envvar="CKPTSCAN_MAX_MEMORY", metavar="SIZE",
                                    help="Memory cap of the process reading the files, e.g. 2G, 1536M "
                                    "(0: no cap; default 2G). A file that needs more fails with exit 2.")
    ] = None,
) -> None:
    """ckptscan: static health checks and repairs for Keras checkpoints."""
    _memory_cap(max_memory)
    _hard_grace()


def _hard_grace() -> None:
    """Refuse a malformed ``CKPTSCAN_HARD_GRACE`` before any file is read (exit 4)."""
    from ..runtime.watchdog import HARD_GRACE_ENV, hard_grace

    try:
        hard_grace(strict=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=HARD_GRACE_ENV) from None


def _memory_cap(value: str | None) -> None:
    """Apply ``--max-memory`` (run as the program: always, default 2 GiB; in-process
    ``main(argv)``: only when given, the host process's limits are its own)."""
    if value is None and not STATE["program"]:
        return
    from ..runtime.memory import apply_memory_cap, parse_size

    try:
        apply_memory_cap(None if value is None else parse_size(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--max-memory' / CKPTSCAN_MAX_MEMORY") from None
