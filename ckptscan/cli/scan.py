"""CLI commands ``scan``, ``rules`` and ``explain`` (registered on :data:`ckptscan.cli._app.app`).

Thin: parse, call :func:`ckptscan.bulk.run_scan` (in process for ``--jobs 1``, else a
pool or dask), render, exit with :meth:`ckptscan.report.Report.exit_code`. The report
goes to stdout (or ``--output``, written at the end; ``--format jsonl`` writes each
file's line as it finishes); everything else (progress bar, one-line errors, the verdict) goes
to stderr, so ``--format json`` leaves stdout holding the JSON document only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from enum import Enum
from typing import Annotated

import typer

from ..render import OutputFormat
from ._app import NEEDS_OUTPUT, ExitCode, app, error_line, exit_code, split_values, usage_error


class FailOn(str, Enum):
    """``--fail-on`` choices: the lowest severity that makes the exit code 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    NEVER = "never"


class ProgressBar:
    """A hand-rolled progress line on stderr (only when stderr is a terminal)."""

    def __init__(self, stream=None, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.index = self.total = 0
        self.path = ""
        self.frac = 0.0
        self.last = 0.0
        self.min_interval = min_interval
        self.drawn = False

    def __call__(self, event: str, **kw) -> None:
        if not self.enabled:
            return
        if event == "file":
            self.index, self.total, self.path, self.frac = kw["index"], kw["total"], str(kw["path"]), 0.0
        elif event == "bytes":
            self.frac = kw["done"] / max(kw["total"], 1)
        now = time.monotonic()
        if now - self.last < self.min_interval and event != "file":
            return
        self.last = now
        overall = (self.index - 1 + self.frac) / max(self.total, 1)
        width = 24
        filled = int(round(overall * width))
        name = self.path if len(self.path) <= 40 else "…" + self.path[-39:]
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.index}/{self.total} {name} {self.frac:4.0%}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """Erase the line."""
        if self.enabled and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(help="Files, directories (recursive, recognised by content) or globs.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.TABLE,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")] = None,
    fail_on: Annotated[FailOn | None, typer.Option("--fail-on", help="Exit 1 when a finding is at or above this severity (default: error, or fail-on in the settings).")] = None,
    select: Annotated[list[str] | None, typer.Option("--select", help="Only these rule IDs or prefixes (repeat or comma-separate), e.g. BN,NUM001.")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="Skip these rule IDs or prefixes.")] = None,
    include_optimizer: Annotated[bool | None, typer.Option("--include-optimizer/--no-include-optimizer", help="Check optimizer state too (rule OPT001; default: include).")] = None,
    config: Annotated[str | None, typer.Option("--config", help="config.json naming the variables of bare .weights.h5 files.")] = None,
    settings_file: Annotated[str | None, typer.Option("--settings", help="Settings file for every file (default: the nearest .ckptscan.toml or pyproject.toml [tool.ckptscan] upward from each scanned file).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up on a file after this many seconds (0: no limit).")] = 300.0,
    # --- many files (ckptscan.bulk) ---
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Worker processes (0: one per CPU).")] = 1,
    executor: Annotated[str | None, typer.Option("--executor", help="Run the per-file work on dask://HOST:PORT (pip install 'ckptscan\\[dask]').")] = None,
    cache: Annotated[str | None, typer.Option("--cache", help="Content-hash cache folder: unchanged files are not read again.")] = None,
    all_checkpoints: Annotated[bool, typer.Option("--all-checkpoints", help="In a TensorFlow checkpoint folder with a `checkpoint` state file, scan every checkpoint it lists, not only the latest.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="A well-formed HDF5 file or zip in a folder that is not a Keras archive is unreadable (exit 2), not skipped.")] = False,
    # --- gates (the pre-commit hook) ---
    shard_sets: Annotated[bool, typer.Option("--shard-sets", help="Scan a named shard as part of its sharded set (the *.weights.json index beside it that lists it).")] = False,
    skip_non_keras: Annotated[bool, typer.Option("--skip-non-keras", help="A named file that is well-formed HDF5 or zip but not a Keras archive is skipped (listed), as in a folder.")] = False,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Exit 0, not 3, when nothing scannable was found (a commit without checkpoints).")] = False,
) -> int:
    """Find non-finite tensors and unhealthy BatchNormalization statistics; say what they break."""
    from ..discover import discover, mlflow_paths, with_uris
    from ..engine import make_options
    from ..errors import CkptscanError
    from ..settings import load_settings

    try:
        # --settings: one file for all; else the nearest to each scanned file (ckptscan.filesettings),
        # and fail-on from the one nearest to the first path named
        first = next((p for p in paths if "://" not in p), None)
        start = None if first is None else (first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first)))
        settings = load_settings(settings_file, start=start if start and os.path.isdir(start) else None)
    except CkptscanError as exc:
        return usage_error(str(exc))
    try:
        options = make_options(select=list(split_values(select)) or None, ignore=list(split_values(ignore)), include_optimizer=include_optimizer,
                               config=config, settings=settings, timeout=timeout,
                               per_file_settings=settings_file is None)
    except ValueError as exc:
        return usage_error(str(exc))
    level = (fail_on.value if fail_on else None) or settings.fail_on or "error"
    if fmt.needs_file and not output:
        return usage_error(NEEDS_OUTPUT)
    if fmt.profile:  # the charts need the BN vectors the scan reads anyway
        options = dataclasses.replace(options, profile=fmt.profile)
    with contextlib.ExitStack() as stack:
        try:  # models:/, runs:/ resolved through MLFLOW_TRACKING_URI; downloads removed on exit
            paths, labels = stack.enter_context(mlflow_paths(paths))
        except CkptscanError as exc:
            error_line(exc)
            return exit_code(unreadable=True)
        if shard_sets:
            from ..integrations.shardsets import resolve_shards

            paths = resolve_shards(paths)
        code = _run(lambda: discover(with_uris(paths), strict=strict, named_verdicts=skip_non_keras,
                                          all_checkpoints=all_checkpoints), options, fmt, output, level, jobs, executor, cache, labels)
    return ExitCode.OK if allow_empty and code == ExitCode.NOTHING else code


def _open_report(output: str | None):
    """``output`` opened for writing (stdout without one); None, after the error line, if it cannot be."""
    if not output:
        return sys.stdout
    try:
        return open(output, "w", encoding="utf-8")
    except OSError as exc:
        error_line(f"{output}: cannot write report ({exc.strerror or exc})")
        return None


def _run(cands, options, fmt: OutputFormat, output: str | None, fail_on: str, jobs: int,
         executor: str | None, cache_dir: str | None, labels: dict[str, str] | None = None) -> int:
    """Scan (:func:`ckptscan.bulk.run_scan`), render, print the verdict; the exit code.

    ``cands`` is a function (discovery): with ``--jobs N`` the pool starts while it runs.

    ``jsonl`` writes each file's record (flushed) the moment it is ready; the other
    formats render the whole report at the end. One-line errors go to stderr as the
    files finish. ``labels`` (``{scanned path: label}``, from
    :func:`ckptscan.discover.mlflow_paths`) replace those paths in every output.
    """
    from ..bulk import BulkStats, run_scan
    from ..runtime.executor import ExecutorError

    out = None
    if fmt.streams:
        from ..render.jsonl import render_jsonl

        out = _open_report(output)
        if out is None:
            return exit_code(usage=True)
    bar = ProgressBar()
    if labels:
        from ..mlflow_store import relabel, relabel_file

    def emit(fr) -> None:
        if labels:
            fr = relabel_file(fr, labels)
        if fr.status == "error":
            bar.close()
            error_line(f"{fr.path}: {fr.reason}")
        if out is not None:
            out.write(render_jsonl(fr))
            out.flush()

    stats = BulkStats()
    try:
        report = run_scan(cands, options, jobs=jobs, executor=executor, cache_dir=cache_dir,
                          on_result=emit, progress=bar, stats=stats)
    except ExecutorError as exc:  # the executor itself is unusable
        return usage_error(str(exc))
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
        bar.close()
    if labels:
        report = relabel(report, labels)
    if not fmt.streams:
        text = fmt.renderer()(report, fail_on=fail_on)
        fh = _open_report(output)
        if fh is None:
            return exit_code(usage=True)
        fh.write(text)
        fh.flush()
        if fh is not sys.stdout:
            fh.close()
    code = report.exit_code(fail_on)
    verdict = report.verdict()
    if code == ExitCode.NOTHING:
        verdict += " (nothing scannable found)"
    if cache_dir:
        sys.stderr.write(f"ckptscan: cache: {stats.cache_hits} of {stats.files} files unchanged (not read again)\n")
    sys.stderr.write(verdict + "\n")
    return code


@app.command()
def rules(
    json_out: Annotated[bool, typer.Option("--json", help="Print the rules as one JSON document.")] = False,
) -> None:
    """List every rule: ID, name, default severity, category, summary."""
    from ..rules import ALL_RULES

    if json_out:
        doc = [{"id": r.id, "name": r.name, "severity": r.severity.value, "category": r.category, "scope": r.scope.value,
                "patchable": r.patchable, "inference_only": r.inference_only, "summary": r.summary,
                "message": r.message, "fix_hint": r.fix_hint} for r in ALL_RULES]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    rows = [("ID", "name", "severity", "category", "fix", "summary")]
    rows += [(r.id, r.name, r.severity.value, r.category, "yes" if r.patchable else "", r.summary) for r in ALL_RULES]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for i, row in enumerate(rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
        if i == 0:
            typer.echo("  ".join("-" * w for w in widths) + "  " + "-" * 7)


@app.command()
def explain(
    rule_id: Annotated[str, typer.Argument(help="Rule ID (BN002) or name (bn-variance-outlier).")],
) -> int:
    """Print one rule's documentation."""
    from ..rules import get_rule
    from ..rules.docs import rule_text

    try:
        r = get_rule(rule_id)
    except KeyError:
        return usage_error(f"unknown rule {rule_id!r} (see `ckptscan rules`)")
    typer.echo(rule_text(r))
    return ExitCode.OK
