"""CLI command ``recover``: roll back a ``ckptscan fix`` that was interrupted mid-write.

Recovery writes to the checkpoint, so readers (``scan``, ``inspect``, ``diff``) never
run it; ``scan`` reports a pending journal as finding JRN001 and points here.
``fix`` recovers on its own before it patches.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import CkptscanError
from ._app import ExitCode, app, error_line, exit_code


@app.command()
def recover(
    path: Annotated[str, typer.Argument(help="The checkpoint an interrupted `ckptscan fix` left a journal for.")],
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for another ckptscan fix.")] = 60.0,
) -> int:
    """Roll back an interrupted `ckptscan fix` (its journal sits next to the file)."""
    from ..formats import journal_unit
    from ..journal import needs_recovery
    from ..journal import recover as run_recover

    unit = journal_unit(path)  # a TensorFlow checkpoint (folder, prefix, SavedModel): its .index
    if not needs_recovery(unit):
        typer.echo(f"{path}: nothing to recover")
        return ExitCode.OK
    try:
        note = run_recover(unit, timeout=lock_timeout)
    except (CkptscanError, OSError) as exc:
        error_line(exc if isinstance(exc, CkptscanError) else f"{path}: {exc.strerror or exc}")
        return exit_code(unreadable=True)
    typer.echo(f"{path}: {note or 'nothing to recover'}")
    return ExitCode.OK
