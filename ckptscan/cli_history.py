"""CLI commands ``diff`` and ``timeline`` (registered on :data:`ckptscan.cli.app`).

Exit codes: ``diff`` 0 identical, 1 different, 2 unreadable; ``timeline`` 0 all
healthy, 1 a bad checkpoint found, 2 a checkpoint could not be read (and none bad),
4 usage error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, List, Optional

import typer

from .cli import EXIT_FINDINGS, EXIT_OK, EXIT_READ_ERROR, app, error_line
from .errors import CkptscanError


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="Checkpoint A (the reference): file, folder or URI.")],
    b: Annotated[str, typer.Argument(help="Checkpoint B, in any format ckptscan reads.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also compare optimizer state.")] = False,
    layer: Annotated[Optional[str], typer.Option("--layer", help="Only layers whose path matches this glob.")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Absolute difference below which finite values count as unchanged.")] = 0.0,
    show_same: Annotated[bool, typer.Option("--all", help="Also list identical variables.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or html (html needs -o).")] = "table",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to this file.")] = None,
) -> None:
    """Compare two checkpoints variable by variable (layer-aware, NaN-aware, across formats)."""
    from .cli import finish
    from .history import diff as run_diff, render_diff

    fmt = _format(fmt, output, json_out)
    try:
        result = run_diff(a, b, include_optimizer=include_optimizer, tolerance=tolerance, layer_glob=layer)
    except CkptscanError as exc:
        error_line(exc)
        finish(EXIT_READ_ERROR)
    if fmt == "html":
        from .render.html import render_diff as html_diff

        _write(html_diff(result, show_same), output)
    elif fmt == "json":
        _write(json.dumps(result.to_dict(), indent=2) + "\n", output)
    else:
        _write(render_diff(result, show_same) + "\n", output)
    finish(EXIT_OK if result.identical else EXIT_FINDINGS)


@app.command()
def timeline(
    checkpoints: Annotated[List[str], typer.Argument(help="Per-epoch checkpoints (any order; sorted naturally: epoch_2 < epoch_10).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also judge optimizer state.")] = False,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Use the order given instead of natural sort.")] = False,
    nonfinite_only: Annotated[bool, typer.Option("--nonfinite-only", help="Judge health by NaN/Inf only, not the full rule set.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Judge checkpoints in this many processes (0: one per CPU).")] = 1,
    executor: Annotated[Optional[str], typer.Option("--executor", help="Judge them on dask://HOST:PORT.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or html (html needs -o).")] = "table",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to this file.")] = None,
) -> None:
    """Health of a series of checkpoints: the first bad one, the last good one, and how to restore."""
    from .cli import finish
    from .history import render_timeline, timeline as run_timeline

    fmt = _format(fmt, output, json_out)
    if any("://" in c for c in checkpoints):  # s3://bucket/run/epoch_*.keras
        from .remote import expand_uris

        checkpoints = expand_uris(checkpoints)
    try:
        tl = run_timeline(checkpoints, include_optimizer=include_optimizer, sort=not keep_order,
                          method="nonfinite" if nonfinite_only else "auto", jobs=jobs, executor=executor)
    except CkptscanError as exc:  # an unusable executor
        error_line(exc)
        finish(4)
    for h in tl.entries:
        if h.status == "error":
            error_line(f"{h.path}: {h.reason}")
    if fmt == "html":
        from .render.html import render_timeline as html_timeline

        _write(html_timeline(tl), output)
    elif fmt == "json":
        _write(json.dumps(tl.to_dict(), indent=2) + "\n", output)
    else:
        _write(render_timeline(tl) + "\n", output)
    if tl.first_bad is not None:
        finish(EXIT_FINDINGS)
    if any(h.status == "error" for h in tl.entries):
        finish(EXIT_READ_ERROR)
    finish(EXIT_OK)


def _format(fmt: str, output: str | None, json_out: bool) -> str:
    """``--format`` checked (``--json`` is ``--format json``); html needs ``-o``."""
    from .cli import finish

    fmt = "json" if json_out else fmt.lower()
    if fmt not in ("table", "json", "html"):
        error_line(f"unknown --format {fmt!r} (choose table, json or html)")
        finish(4)
    if fmt == "html":
        from .render.html_cli import NEEDS_OUTPUT

        if not output:
            error_line(NEEDS_OUTPUT)
            finish(4)
    return fmt


def _write(text: str, output: str | None) -> None:
    """The report to stdout, or to ``output`` (exit 4 after one error line if it cannot be written)."""
    from .cli import finish

    if not output:
        sys.stdout.write(text)
        return
    from .render.html_cli import write_page

    if not write_page(text, output):
        finish(4)
