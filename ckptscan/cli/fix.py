"""CLI command ``fix`` (registered on :data:`ckptscan.cli._app.app`).

Thin: parse options, call :func:`ckptscan.patch.fix`, render, exit with
0 (all fixed or clean), 1 (something left unfixed or refused), 2 (a file unreadable),
4 (usage).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ._app import app, error_line, exit_code, split_values


def _parse_strategies(values: list[str] | None):
    """``--strategy`` values: the default :class:`~ckptscan.patch.strategies.Strategy` and
    the per-rule ones (``RULE=STRATEGY``)."""
    from ..patch.strategies import Strategy

    default, per_rule = Strategy.AUTO, {}
    for item in split_values(values):
        rule, _, name = item.rpartition("=")
        try:
            strategy = Strategy.of(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--strategy") from None
        if rule:
            per_rule[rule] = strategy
        else:
            default = strategy
    return default, per_rule


def _num(x) -> str:
    return x if isinstance(x, str) else f"{x:.7g}"


def _runs(items: list, same) -> list[tuple[int, int]]:
    """``(first, last)`` index of each run of consecutive items where ``same(a, b)`` holds."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and same(items[j], items[j + 1]):
            j += 1
        out.append((i, j))
        i = j + 1
    return out


def _collapse_ranges(indices: list[int]) -> list[str]:
    """Runs of three or more consecutive indices as a range: ``0, 1, 2, 3`` → ``0–3``."""
    out: list[str] = []
    for i, j in _runs(indices, lambda a, b: b == a + 1):
        out += [f"{indices[i]}–{indices[j]}"] if j - i >= 2 else [str(x) for x in indices[i : j + 1]]
    return out


def _collapse_repeats(items: list[str]) -> list[str]:
    """Runs of three or more equal items counted: ``x; x; x`` → ``x (×3)``."""
    out: list[str] = []
    for i, j in _runs(items, lambda a, b: a == b):
        out += [f"{items[i]} (×{j - i + 1})"] if j - i >= 2 else items[i : j + 1]
    return out


def _render_change(c, limit: int = 16) -> str:
    where = f"{c.layer_path}/{c.variable}" if c.layer_path else c.variable
    if c.indices is None:
        what = f"whole tensor {c.shape}"
    else:
        idx = list(c.indices)
        shown_idx = _collapse_ranges([int(i) for i in idx[: limit * 4]])
        what = ("channels " if len(c.shape) == 1 else "elements ") + ", ".join(shown_idx[:limit])
        what += f" … ({len(idx)})" if len(shown_idx) > limit or len(idx) > limit * 4 else ""
    pairs = _collapse_repeats([f"{_num(o)} → {_num(n)}" for o, n in zip(c.old, c.new)])
    total = len(c.old)
    shown = "; ".join(pairs[:limit]) + (f"; … ({total} values)" if len(pairs) > limit else "")
    if not pairs and c.indices is None:
        shown = "(values not listed: large tensor)"
    why = f" [{c.strategy}" + (f"; {c.reason}" if c.reason else "") + "]"
    return f"  {where} {what}: {shown}{why}"


def _render_file(f, dry_run: bool) -> list[str]:
    n = len(f.changes)
    if f.status == "fixed":
        where = f" → {f.output}" if f.mode == "copy" else ""
        head = f"{f.path}: fixed {f.mode}{where}, {n} change(s)" + (f", verified ({f.verified})" if f.verified else "")
    elif f.status == "planned":
        head = f"{f.path}: dry run, {n} change(s) planned, nothing written"
    elif f.status == "unchanged":
        head = f"{f.path}: unchanged ({f.reason or 'nothing to fix'})"
    elif f.status == "unfixed":
        head = f"{f.path}: left unfixed" + (f" ({f.reason})" if f.reason else "") + (f", {n} change(s) written" if n else "")
    else:
        head = f"{f.path}: {f.status}: {f.reason}"
    lines = [head] + [_render_change(c) for c in f.changes]
    lines += [f"  unfixed: {u}" for u in f.unfixed]
    notes = list(dict.fromkeys([c.note for c in f.changes if c.note] + list(f.notes)))
    lines += [f"  note: {x}" for x in notes]
    if f.backup:
        lines.append(f"  backup: {f.backup}")
    return lines


@app.command()
def fix(
    paths: Annotated[list[str], typer.Argument(help="Checkpoints (.keras, .h5, .weights.h5, .weights.json) or folders.")],
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", "-s", help="auto|reset|median|clamp|from|value|zero, or RULE=STRATEGY (repeatable).")] = None,
    ref: Annotated[str | None, typer.Option("--from", help="Reference checkpoint to copy from (e.g. the last good epoch).")] = None,
    value: Annotated[float | None, typer.Option("--value", help="Constant for the value strategy.")] = None,
    clamp_min: Annotated[float, typer.Option("--clamp-min", help="Clamp floor for moving_variance.")] = 0.0,
    clamp_max: Annotated[float | None, typer.Option(
        "--clamp-max", help="Clamp ceiling (default: the layer's largest healthy variance).")] = None,
    whole_tensor: Annotated[bool, typer.Option("--whole-tensor", help="Rewrite the whole variable, not only its bad elements.")] = False,
    select: Annotated[list[str] | None, typer.Option("--select", help="Only these rule IDs (comma-separated, prefixes).")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="Skip these rule IDs.")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Only layers whose path matches this glob.")] = None,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Also repair optimizer state (OPT001): non-finite moments -> 0, or --from REF; counters never.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print every change; write nothing.")] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write a patched copy here instead (one input).")] = None,
    backup: Annotated[bool, typer.Option("--backup", help="Keep the original as <file>.bak (never overwritten: .bak.1, .bak.2 … when it exists).")] = False,
    backup_to: Annotated[str | None, typer.Option("--backup-to", help="Keep the original at this path (refused if it exists).")] = None,
    manifest: Annotated[str | None, typer.Option("--manifest", help="Write the JSON patch manifest here.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Files patched in parallel (0: one per CPU).")] = 1,
    verify: Annotated[str, typer.Option(
        "--verify", help="full: re-hash every tensor and check zip CRCs; targets: re-read changed tensors only.")] = "full",
    config: Annotated[str | None, typer.Option("--config", help="config.json naming the variables of a bare .weights.h5.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest JSON on stdout and nothing else.")] = False,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for another ckptscan fix.")] = 60.0,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0, help="Give up on a file after this many seconds of reading and planning (0: no limit; "
        "never interrupts a write).")] = 300.0,
) -> int:
    """Repair NaN/Inf tensors and broken BatchNormalization statistics, in place, safely."""
    from ..discover import expand
    from ..engine import make_options
    from ..patch.api import build_request
    from ..patch.run import fix_request
    from ..patch.strategies import Strategy, Verify

    default, per_rule = _parse_strategies(strategy)
    try:
        verify = Verify.of(verify)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--verify") from None
    if ref is None and Strategy.FROM in (default, *per_rule.values()):
        raise typer.BadParameter(f"the from strategy needs {Strategy.FROM.needs()}", param_hint="--strategy")
    if value is None and default is Strategy.VALUE:
        raise typer.BadParameter(f"the value strategy needs {Strategy.VALUE.needs()}", param_hint="--strategy")
    if backup and backup_to:
        raise typer.BadParameter("use --backup or --backup-to, not both", param_hint="--backup")
    try:
        make_options(select=list(split_values(select)) or None, ignore=list(split_values(ignore)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--select/--ignore") from None
    if output is not None and len(expand(paths)) != 1:
        raise typer.BadParameter("--output needs exactly one input checkpoint", param_hint="--output")
    req = build_request(strategy=default, rule_strategies=per_rule, ref=ref, value=value, clamp_min=clamp_min,
                        clamp_max=clamp_max, whole_tensor=whole_tensor, select=split_values(select),
                        ignore=split_values(ignore), layer=layer, include_optimizer=include_optimizer,
                        dry_run=dry_run, output=output, backup=backup_to if backup_to else backup, verify=verify,
                        config=config, lock_timeout=lock_timeout, timeout=timeout)
    result = fix_request(paths, req, jobs=jobs, manifest=manifest)
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        for f in result.files:
            if f.status == "failed":
                error_line(f"{f.path}: {f.reason}")
                continue
            typer.echo("\n".join(_render_file(f, dry_run)))
    fixed = result.count("fixed") + result.count("planned")
    left = result.count("refused") + result.count("unfixed")
    failed = result.count("failed")
    verb = "planned" if dry_run else "fixed"
    sys.stderr.write(f"ckptscan fix: {len(result.files)} file(s): {fixed} {verb}, {result.count('unchanged')} unchanged, "
                     f"{left} refused or left unfixed, {failed} failed\n")
    return exit_code(unreadable=bool(failed), findings=bool(left or any(f.unfixed for f in result.files)))
