"""CLI command ``inspect``: every variable with the layer path and name Keras uses for it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..errors import CkptscanError
from ._app import ExitCode, app, error_line, exit_code


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="A .keras, .weights.h5, .weights.json or legacy .h5 file (or a saved-model folder).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")] = False,
    layer: Annotated[str | None, typer.Option("--layer", help="Only layers whose path matches this glob, e.g. '*_bn'.")] = None,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also list optimizer state.")] = False,
    config: Annotated[str | None, typer.Option("--config", help="config.json naming the variables of a bare .weights.h5.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up on the file after this many seconds (0: no limit).")] = 300.0,
) -> int:
    """List every variable with the layer path and name Keras uses for it."""
    from ..formats import open_checkpoint
    from ..inventory import inventory, render_table
    from ..runtime.timeout import file_scope

    try:
        with file_scope(timeout, path), open_checkpoint(path, config=config) as ckpt:
            doc = inventory(ckpt, layer, include_optimizer)
    except CkptscanError as exc:
        error_line(exc)
        return exit_code(unreadable=True)
    if json_out:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        typer.echo(render_table(doc))
    return ExitCode.OK
