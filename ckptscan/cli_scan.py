"""CLI commands ``scan``, ``rules`` and ``explain`` (registered on :data:`ckptscan.cli.app`).

Thin: parse, call :func:`ckptscan.bulk.run_scan` (in process for ``--jobs 1``, else a
pool or dask), render, exit with :meth:`ckptscan.report.Report.exit_code`. The report
goes to stdout (or ``--output``, written at the end; ``--format jsonl`` writes each
file's line as it finishes); everything else (progress bar, one-line errors, the verdict) goes
to stderr, so ``--format json`` leaves stdout holding the JSON document only.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Annotated, List, Optional

import typer

from .cli import app

EXIT_USAGE = 4


class FailOn(str, Enum):
    """``--fail-on`` choices: the lowest severity that makes the exit code 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    NEVER = "never"


class Format(str, Enum):
    """``--format`` choices (see :class:`ckptscan.render.OutputFormat`)."""

    TABLE = "table"
    JSON = "json"
    SARIF = "sarif"
    JUNIT = "junit"
    JSONL = "jsonl"
    """One JSON record per file, written as each file finishes (ckptscan.bulk)."""


def _codes(values: Optional[List[str]]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [c.strip() for c in v.split(",") if c.strip()]
    return out


def _finish(code: int) -> None:
    from .cli import finish

    finish(code)


def _usage(msg: str) -> None:
    sys.stderr.write(f"ckptscan: error: {msg}\n")
    _finish(EXIT_USAGE)


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


def _uris(paths: List[str]) -> List[str]:
    """Remote globs and folders (s3://bucket/run/*.keras) expanded by ckptscan.remote."""
    if not any("://" in p for p in paths):
        return paths
    from .remote import expand_uris

    return expand_uris(paths)


@app.command()
def scan(
    paths: Annotated[List[str], typer.Argument(help="Files, directories (recursive, recognised by content) or globs.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.TABLE,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")] = None,
    fail_on: Annotated[Optional[FailOn], typer.Option("--fail-on", help="Exit 1 when a finding is at or above this severity [default: error].")] = None,
    select: Annotated[Optional[List[str]], typer.Option("--select", help="Only these rule IDs or prefixes (repeat or comma-separate), e.g. BN,NUM001.")] = None,
    ignore: Annotated[Optional[List[str]], typer.Option("--ignore", help="Skip these rule IDs or prefixes.")] = None,
    include_optimizer: Annotated[Optional[bool], typer.Option("--include-optimizer/--no-include-optimizer", help="Check optimizer state too (rule OPT001) [default: include].")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="config.json naming the variables of bare .weights.h5 files.")] = None,
    settings_file: Annotated[Optional[str], typer.Option("--settings", help="Settings file (default: nearest .ckptscan.toml or pyproject.toml [tool.ckptscan]).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up on a file after this many seconds (0: no limit).")] = 300.0,
    # --- many files (ckptscan.bulk) ---
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Worker processes (0: one per CPU).")] = 1,
    executor: Annotated[Optional[str], typer.Option("--executor", help="Run the per-file work on dask://HOST:PORT (pip install 'ckptscan[dask]').")] = None,
    cache: Annotated[Optional[str], typer.Option("--cache", help="Content-hash cache folder: unchanged files are not read again.")] = None,
) -> None:
    """Find non-finite tensors and unhealthy BatchNormalization statistics; say what they break."""
    from .errors import CkptscanError
    from .scan import discover, make_options
    from .settings import load_settings

    try:
        settings = load_settings(settings_file)
    except CkptscanError as exc:
        _usage(str(exc))
    try:
        options = make_options(select=_codes(select) or None, ignore=_codes(ignore), include_optimizer=include_optimizer,
                               config=config, settings=settings, timeout=timeout)
    except ValueError as exc:
        _usage(str(exc))
    level = (fail_on.value if fail_on else None) or settings.fail_on or "error"
    paths, labels, folders = _mlflow(paths)
    try:
        _finish(_run(lambda: discover(_uris(paths)), options, fmt.value, output, level, jobs, executor, cache, labels))
    finally:
        from .mlflow_store import cleanup

        for f in folders:
            cleanup(f)


def _mlflow(paths: List[str]) -> tuple[List[str], dict, list]:
    """MLflow URIs (models:/, runs:/) resolved (ckptscan.mlflow_store): (paths, {scanned path: label}, download folders)."""
    from .mlflow_store import expand, is_mlflow_uri

    if not any(is_mlflow_uri(p) for p in paths):
        return paths, {}, []
    from .errors import CkptscanError

    try:
        return expand(paths)
    except CkptscanError as exc:
        sys.stderr.write(f"ckptscan: error: {exc}\n")
        _finish(2)


def _open_report(output: str | None):
    """``output`` opened for writing (stdout without one); None, after the error line, if it cannot be."""
    if not output:
        return sys.stdout
    try:
        return open(output, "w", encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"ckptscan: error: {output}: cannot write report ({exc.strerror or exc})\n")
        return None


def _run(cands, options, fmt: str, output: str | None, fail_on: str, jobs: int,
         executor: str | None, cache_dir: str | None, labels: dict | None = None) -> int:
    """Scan (:func:`ckptscan.bulk.run_scan`), render, print the verdict; the exit code.

    ``cands`` is a function (discovery): with ``--jobs N`` the pool starts while it runs.

    ``jsonl`` writes each file's record (flushed) the moment it is ready; the other
    formats render the whole report at the end. One-line errors go to stderr as the
    files finish.
    """
    from .bulk import BulkStats, run_scan
    from .executor import ExecutorError

    out = None
    if fmt == "jsonl":
        from .jsonl import render_jsonl

        out = _open_report(output)
        if out is None:
            return EXIT_USAGE
    bar = ProgressBar()

    if labels:
        from .mlflow_store import relabel, relabel_file

    def emit(fr) -> None:
        if labels:
            fr = relabel_file(fr, labels)
        if fr.status == "error":
            bar.close()
            sys.stderr.write(f"ckptscan: error: {fr.path}: {fr.reason}\n")
        if out is not None:
            out.write(render_jsonl(fr))
            out.flush()

    stats = BulkStats()
    try:
        report = run_scan(cands, options, jobs=jobs, executor=executor, cache_dir=cache_dir,
                          on_result=emit, progress=bar, stats=stats)
    except ExecutorError as exc:  # the executor itself is unusable
        sys.stderr.write(f"ckptscan: error: {exc}\n")
        return EXIT_USAGE
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
        bar.close()
    if labels:
        report = relabel(report, labels)
    if fmt != "jsonl":
        from .render import OutputFormat

        text = OutputFormat(fmt).renderer()(report, fail_on=fail_on)
        fh = _open_report(output)
        if fh is None:
            return EXIT_USAGE
        fh.write(text)
        fh.flush()
        if fh is not sys.stdout:
            fh.close()
    code = report.exit_code(fail_on)
    verdict = report.verdict()
    if code == 3:
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
    from .rules import ALL_RULES

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
) -> None:
    """Print one rule's documentation."""
    from .rules import get_rule
    from .rules.docs import rule_text

    try:
        r = get_rule(rule_id)
    except KeyError:
        _usage(f"unknown rule {rule_id!r} (see `ckptscan rules`)")
    typer.echo(rule_text(r))
