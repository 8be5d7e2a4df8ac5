"""The table for people: grouped by file and layer, worst first, with the impact."""

from __future__ import annotations

from ..report import FileResult, Finding, Report, Severity

LABEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "info"}


def _layers(findings: tuple[Finding, ...]) -> list[tuple[str, list[Finding]]]:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.layer_path or "(model)", []).append(f)
    # worst layer first; findings are already worst-first in model order
    return sorted(groups.items(), key=lambda kv: -max(f.severity.rank for f in kv[1]))


def impact_lines(fr: FileResult) -> list[str]:
    """The impact summary of one file, as text lines.

    A layer is *broken* only for an error; a layer with warnings alone is *suspicious*.
    """
    imp = fr.impact or {}
    if not imp.get("origin"):
        return []
    layers = imp.get("broken_layers", [])
    broken = [b for b in layers if b["severity"] == "error"]
    suspicious = [b for b in layers if b["severity"] != "error"]
    first = broken[0] if broken else suspicious[0]
    rules = f" ({', '.join(first['rules'])})"
    label = "first broken layer" if broken else "first suspicious layer (warnings only)"
    lines = [f"  impact: {label} {first['layer_path']}{rules}"]
    if imp.get("graph"):
        heads = imp.get("reached_heads") or []
        all_heads = imp.get("heads") or []
        if heads:
            lines.append(f"          reaches {len(heads)} of {len(all_heads)} outputs: {', '.join(heads)}")
        else:
            lines.append("          reaches no model output")
    else:
        lines.append(f"          {imp.get('note', 'no model graph')}")

    def shown(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f", … ({len(items)} in all)" if len(items) > 6 else "")

    others = [b["layer_path"] for b in broken[1:]]
    if others:
        lines.append(f"          also broken downstream: {shown(others)}")
    susp = [f"{b['layer_path']} ({', '.join(b['rules'])})" for b in suspicious if b is not first]
    if susp:
        lines.append(f"          suspicious (warnings): {shown(susp)}")
    if imp.get("inference_only"):
        lines.append("          inference-only: BatchNormalization moving statistics (training mode never reads "
                     f"them, so training metrics look fine while predict() {'is' if broken else 'may be'} wrong)")
    return lines


def _file(fr: FileResult, out: list[str]) -> None:
    if fr.status == "error":
        out.append(f"{fr.path}: error: {fr.reason}")
        return
    if fr.status == "skipped":
        out.append(f"{fr.path}: skipped: {fr.reason}")
        return
    counts = ", ".join(f"{fr.count(s)} {LABEL[s]}{'s' if fr.count(s) != 1 and s != Severity.INFO else ''}"
                       for s in Severity if fr.count(s))
    head = f"{fr.path}  ({fr.format}{', Keras ' + fr.keras_version if fr.keras_version else ''})"
    out.append(f"{head}: {counts or 'clean'}")
    for layer, fs in _layers(fr.findings):
        out.append(f"  {layer}")
        for f in fs:
            out.append(f"    {LABEL[f.severity]:<7}  {f.rule_id:<6}  {f.message}")
    out += impact_lines(fr)
    seen: dict[str, str] = {}
    for f in fr.findings:
        if f.severity != Severity.INFO and f.rule_id not in seen:
            seen[f.rule_id] = f.fix_hint
    for rid, hint in seen.items():
        out.append(f"  fix {rid}: {hint}")
    for note in fr.notes:
        out.append(f"  note: {note}")


def render(report: Report, fail_on: str = "error") -> str:
    """The human-readable report (ends with a newline)."""
    out: list[str] = []
    shown = [r for r in report.files if r.status != "skipped"]
    skipped = report.files_with("skipped")
    for i, fr in enumerate(shown):
        if i:
            out.append("")
        _file(fr, out)
    if skipped:
        if shown:
            out.append("")
        out.append(f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''}:")
        for fr in skipped[:20]:
            out.append(f"  {fr.path}: {fr.reason}")
        if len(skipped) > 20:
            out.append(f"  … and {len(skipped) - 20} more (see --format json)")
    return "\n".join(out) + "\n" if out else ""
