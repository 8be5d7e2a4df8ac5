"""CLI commands ``diff`` and ``timeline`` (registered on :data:`ckptscan.cli._app.app`).

Exit codes: ``diff`` 0 identical, 1 different, 2 unreadable; ``timeline`` 0 all
healthy, 1 a bad checkpoint found, 2 a checkpoint could not be read (and none bad),
4 usage error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..errors import CkptscanError
from ._app import app, error_line, exit_code


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="Checkpoint A (the reference): file, folder or URI.")],
    b: Annotated[str, typer.Argument(help="Checkpoint B, in any format ckptscan reads.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also compare optimizer state.")] = False,
    layer: Annotated[str | None, typer.Option("--layer", help="Only layers whose path matches this glob.")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Absolute difference below which finite values count as unchanged.")] = 0.0,
    show_same: Annotated[bool, typer.Option("--all", help="Also list identical variables.")] = False,
) -> int:
    """Compare two checkpoints variable by variable (layer-aware, NaN-aware, across formats)."""
    from ..history import diff as run_diff
    from ..history import render_diff

    try:
        result = run_diff(a, b, include_optimizer=include_optimizer, tolerance=tolerance, layer_glob=layer)
    except CkptscanError as exc:
        error_line(exc)
        return exit_code(unreadable=True)
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        typer.echo(render_diff(result, show_same))
    return exit_code(findings=not result.identical)


@app.command()
def timeline(
    checkpoints: Annotated[list[str], typer.Argument(help="Per-epoch checkpoints (any order; sorted naturally: epoch_2 < epoch_10).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also judge optimizer state.")] = False,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Use the order given instead of natural sort.")] = False,
    nonfinite_only: Annotated[bool, typer.Option("--nonfinite-only", help="Judge health by NaN/Inf only, not the full rule set.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Judge checkpoints in this many processes (0: one per CPU).")] = 1,
    executor: Annotated[str | None, typer.Option("--executor", help="Judge them on dask://HOST:PORT.")] = None,
) -> int:
    """Health of a series of checkpoints: the first bad one, the last good one, and how to restore."""
    from ..discover import with_uris
    from ..history import render_timeline
    from ..history import timeline as run_timeline

    checkpoints = with_uris(checkpoints)  # s3://bucket/run/epoch_*.keras
    try:
        tl = run_timeline(checkpoints, include_optimizer=include_optimizer, sort=not keep_order,
                          method="nonfinite" if nonfinite_only else "auto", jobs=jobs, executor=executor)
    except CkptscanError as exc:  # an unusable executor
        error_line(exc)
        return exit_code(usage=True)
    for h in tl.entries:
        if h.status == "error":
            error_line(f"{h.path}: {h.reason}")
    if json_out:
        sys.stdout.write(json.dumps(tl.to_dict(), indent=2) + "\n")
    else:
        typer.echo(render_timeline(tl))
    # the first bad checkpoint is the answer asked for: an unreadable one does not change it
    return exit_code(findings=tl.first_bad is not None, unreadable=any(h.status == "error" for h in tl.entries),
                     findings_first=True)
