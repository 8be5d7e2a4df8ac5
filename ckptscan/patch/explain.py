"""Why ``fix`` found nothing to fix: one precise sentence.

"nothing to fix" alone hides what a later ``scan`` will still report. :func:`nothing_to_fix`
says what is left, at which severity, and which option would touch it::

    nothing to fix at error severity; left: 1 warning BN002 on resnet101v2/conv5_block3_2_bn
    (--select BN002 repairs it), 1 warning OPT001 on optimizer (--include-optimizer repairs it)

    nothing to fix: --select BN005 matched no finding (the file has: 1 warning BN002)
"""

from __future__ import annotations

import fnmatch

from ..formats.base import Checkpoint

__all__ = ["nothing_to_fix"]


def _matches(rid: str, name: str, codes) -> bool:
    return any(c and (rid == c.upper() or rid.startswith(c.upper()) or name == c.lower()) for c in codes)


def _layer_ok(f, layer: str | None) -> bool:
    if not layer:
        return True
    return fnmatch.fnmatchcase(f.layer_path, layer) or fnmatch.fnmatchcase(f"{f.layer_path}/{f.variable}", layer)


def _sev(f) -> str:
    return getattr(f.severity, "value", str(f.severity))


def _group(findings) -> list[tuple[str, str, list]]:
    """(severity, rule ID, findings) in order of appearance."""
    out: dict[tuple[str, str], list] = {}
    for f in findings:
        out.setdefault((_sev(f), f.rule_id), []).append(f)
    return [(sev, rid, fs) for (sev, rid), fs in out.items()]


def _n(count: int, sev: str) -> str:
    return f"{count} {sev}" + ("" if count == 1 or sev == "info" else "s")


def _summary(findings) -> str:
    return ", ".join(f"{_n(len(fs), sev)} {rid}" for sev, rid, fs in _group(findings))


def nothing_to_fix(ckpt: Checkpoint, select=(), ignore=(), layer: str | None = None,
                   include_optimizer: bool = False) -> str:
    """The sentence ``fix`` prints for a file where it found no target."""
    from .targets import scan_findings

    every = scan_findings(ckpt, (), (), include_optimizer=True)
    if not every:
        return "nothing to fix: no findings"
    select = tuple(s for s in select if s)
    if select and not any(_matches(f.rule_id, f.rule_name, select) for f in every):
        return f"nothing to fix: --select {','.join(select)} matched no finding (the file has: {_summary(every)})"
    if layer and not any(_layer_ok(f, layer) for f in every):
        return f"nothing to fix: --layer {layer} matched no finding's layer (the file has: {_summary(every)})"
    left = [f for f in every if (not select or _matches(f.rule_id, f.rule_name, select)) and _layer_ok(f, layer)]
    parts = []
    for sev, rid, fs in _group(left):
        f0 = fs[0]
        where = sorted({f.layer_path for f in fs})
        on = where[0] + (f" and {len(where) - 1} more" if len(where) > 1 else "")
        if _matches(rid, f0.rule_name, ignore):
            how = f"--ignore {rid} excludes it"
        elif not f0.patchable:
            hint = f0.fix_hint.split(". ")[0].rstrip(".") if f0.fix_hint else f"see ckptscan explain {rid}"
            how = "not repairable by fix: " + hint[:1].lower() + hint[1:]
        elif f0.category == "optimizer" and not include_optimizer:
            how = "--include-optimizer repairs it"
        elif sev != "error" and not select:
            how = f"--select {rid} repairs it"
        else:
            how = "no element left to change"
        parts.append(f"{_n(len(fs), sev)} {rid} on {on} ({how})")
    bar = "the selected rules" if select else "error severity"
    return f"nothing to fix at {bar}; left: " + "; ".join(parts)
