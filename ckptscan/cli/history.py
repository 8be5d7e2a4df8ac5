"""CLI commands ``diff`` and ``timeline`` (registered on :data:`ckptscan.cli._app.app`).

Exit codes: ``diff`` 0 identical, 1 different, 2 unreadable; ``timeline`` 0 all
healthy, 1 a bad checkpoint found, 2 a checkpoint could not be read (and none bad),
4 usage error.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import CkptscanError
from ..render import OutputFormat
from ._app import NEEDS_OUTPUT, app, error_line, exit_code, write_output


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="Checkpoint A (the reference): file, folder or URI.")],
    b: Annotated[str, typer.Argument(help="Checkpoint B, in any format ckptscan reads.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also compare optimizer state.")] = False,
    layer: Annotated[str | None, typer.Option("--layer", help="Only layers whose path matches this glob.")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Absolute difference below which finite values count as unchanged.")] = 0.0,
    show_same: Annotated[bool, typer.Option("--all", help="Also list identical variables.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or html (html needs -o).")] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the report to this file.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="config.json naming the variables of a side without its own config (a bare .weights.h5, a TensorFlow save_weights checkpoint).")] = None,
) -> int:
    """Compare two checkpoints variable by variable (layer-aware, NaN-aware, across formats)."""
    from ..history import diff as run_diff
    from ..history import render_diff

    report_fmt = _format(fmt, output, json_out)
    if report_fmt is None:
        return exit_code(usage=True)
    try:
        result = run_diff(a, b, config=config, include_optimizer=include_optimizer, tolerance=tolerance, layer_glob=layer)
    except CkptscanError as exc:
        error_line(exc)
        return exit_code(unreadable=True)
    if report_fmt is OutputFormat.HTML:
        from ..render.html import render_diff as html_diff

        text = html_diff(result, show_same)
    elif report_fmt is OutputFormat.JSON:
        text = json.dumps(result.to_dict(), indent=2) + "\n"
    else:
        text = render_diff(result, show_same) + "\n"
    if not write_output(text, output):
        return exit_code(usage=True)
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
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or html (html needs -o).")] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the report to this file.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="config.json naming the variables of checkpoints without their own config (a bare .weights.h5, a TensorFlow save_weights checkpoint).")] = None,
) -> int:
    """Health of a series of checkpoints: the first bad one, the last good one, and how to restore."""
    from ..discover import with_uris
    from ..history import render_timeline
    from ..history import timeline as run_timeline

    report_fmt = _format(fmt, output, json_out)
    if report_fmt is None:
        return exit_code(usage=True)
    checkpoints = with_uris(checkpoints)  # s3://bucket/run/epoch_*.keras
    try:
        tl = run_timeline(checkpoints, include_optimizer=include_optimizer, sort=not keep_order,
                          method="nonfinite" if nonfinite_only else "auto", jobs=jobs, executor=executor,
                          config=config)
    except CkptscanError as exc:  # an unusable executor
        error_line(exc)
        return exit_code(usage=True)
    for h in tl.entries:
        if h.status == "error":
            error_line(f"{h.path}: {h.reason}")
    if report_fmt is OutputFormat.HTML:
        from ..render.html import render_timeline as html_timeline

        text = html_timeline(tl)
    elif report_fmt is OutputFormat.JSON:
        text = json.dumps(tl.to_dict(), indent=2) + "\n"
    else:
        text = render_timeline(tl) + "\n"
    if not write_output(text, output):
        return exit_code(usage=True)
    # the first bad checkpoint is the answer asked for: an unreadable one does not change it
    return exit_code(findings=tl.first_bad is not None, unreadable=any(h.status == "error" for h in tl.entries),
                     findings_first=True)


#: ``diff`` and ``timeline`` ``--format`` choices (members of the one :class:`OutputFormat`).
HISTORY_FORMATS = (OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.HTML)


def _format(name: str, output: str | None, json_out: bool) -> OutputFormat | None:
    """``--format`` checked (``--json`` is ``--format json``; html needs ``-o``); None after
    the one usage error line."""
    name = "json" if json_out else name.lower()
    fmt = next((f for f in HISTORY_FORMATS if f.value == name), None)
    if fmt is None:
        error_line(f"unknown --format {name!r} (choose {', '.join(f.value for f in HISTORY_FORMATS)})")
    elif fmt.needs_file and not output:
        error_line(NEEDS_OUTPUT)
        return None
    return fmt
