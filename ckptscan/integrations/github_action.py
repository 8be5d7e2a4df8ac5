"""The script of the composite GitHub Action (``action.yml`` at the repository root).

Runs one scan with the library, then writes what the later steps of the Action and
the GitHub UI read:

* the SARIF report (``INPUT_SARIF_FILE``), uploaded by ``github/codeql-action/upload-sarif``;
* a Markdown job summary appended to ``$GITHUB_STEP_SUMMARY``;
* step outputs in ``$GITHUB_OUTPUT``: ``exit-code``, ``sarif-file``, ``errors``,
  ``warnings``, ``files-scanned``, ``files-unreadable``.

It always exits 0 after writing them (unless the inputs are unusable, exit 4) so the
upload step runs; the Action's last step fails the job with ``exit-code``.

Inputs come as environment variables (``INPUT_PATHS``, ``INPUT_FAIL_ON``,
``INPUT_SELECT``, ``INPUT_IGNORE``, ``INPUT_INCLUDE_OPTIMIZER``, ``INPUT_CONFIG``,
``INPUT_SARIF_FILE``), exactly as ``action.yml`` passes them. Run it locally with the
same variables to reproduce a CI result: ``python -m ckptscan.integrations.github_action``.
"""

from __future__ import annotations

import os
import shlex
import sys

#: Findings listed in the job summary (the SARIF report has all of them).
SUMMARY_FINDINGS = 50


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _codes(value: str) -> list[str]:
    return [c for c in value.replace(",", " ").split() if c]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(report, fail_on: str, sarif_file: str) -> str:
    """The job summary: verdict, one row per file, the first findings."""
    from ..report import Severity

    code = report.exit_code(fail_on)
    icon = {0: "✅", 1: "❌", 2: "⚠️", 3: "➖"}.get(code, "❔")
    lines = [f"## {icon} ckptscan", "", f"`{report.verdict()}` (fail on: {fail_on}; exit code {code})", ""]
    lines += ["| file | status | format | errors | warnings | info |", "|---|---|---|---:|---:|---:|"]
    for fr in report.files:
        status = fr.status if fr.status != "error" else f"unreadable: {_md(fr.reason)}"
        lines.append(f"| `{_md(fr.path)}` | {status} | {fr.format} | {fr.count(Severity.ERROR)} | "
                     f"{fr.count(Severity.WARNING)} | {fr.count(Severity.INFO)} |")
    findings = sorted(report.findings, key=lambda f: -f.severity.rank)
    if findings:
        lines += ["", "| severity | rule | file | variable | message |", "|---|---|---|---|---|"]
        for f in findings[:SUMMARY_FINDINGS]:
            lines.append(f"| {f.severity.value} | {f.rule_id} | `{_md(f.file)}` | `{_md(f.path)}` | {_md(f.message)} |")
        if len(findings) > SUMMARY_FINDINGS:
            lines.append(f"\n… and {len(findings) - SUMMARY_FINDINGS} more in `{sarif_file}`.")
        fixable = sorted({f.file for f in findings if f.patchable})
        if fixable:
            lines += ["", "Repair (writes a patched copy with `--output`, or in place):", "", "```bash"]
            lines += [f"ckptscan fix {shlex.quote(p)}" for p in fixable[:10]]
            lines.append("```")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Scan ``INPUT_PATHS``; write SARIF, the job summary and the step outputs."""
    from ..discover import discover
    from ..engine import make_options, scan_candidates
    from ..errors import CkptscanError
    from ..render import render

    paths = shlex.split(_env("INPUT_PATHS", ".")) or ["."]
    fail_on = _env("INPUT_FAIL_ON", "error") or "error"
    sarif_file = _env("INPUT_SARIF_FILE", "ckptscan.sarif") or "ckptscan.sarif"
    inc = _env("INPUT_INCLUDE_OPTIMIZER", "true").lower()
    if fail_on not in ("error", "warning", "info", "never") or inc not in ("true", "false"):
        sys.stderr.write(f"ckptscan: error: bad input fail-on={fail_on!r} include-optimizer={inc!r}\n")
        return 4
    try:
        options = make_options(select=_codes(_env("INPUT_SELECT")) or None, ignore=_codes(_env("INPUT_IGNORE")),
                               include_optimizer=inc == "true", config=_env("INPUT_CONFIG") or None)
    except (ValueError, CkptscanError) as exc:
        sys.stderr.write(f"ckptscan: error: {exc}\n")
        return 4
    report = scan_candidates(discover(paths), options)
    for fr in report.files_with("error"):
        sys.stderr.write(f"ckptscan: error: {fr.path}: {fr.reason}\n")
    with open(sarif_file, "w", encoding="utf-8") as fh:
        fh.write(render(report, "sarif", fail_on=fail_on))
    sys.stdout.write(render(report, "table", fail_on=fail_on))
    sys.stderr.write(report.verdict() + "\n")
    from ..report import Severity

    code = report.exit_code(fail_on)
    outputs = {
        "exit-code": code,
        "sarif-file": sarif_file,
        "errors": report.count(Severity.ERROR),
        "warnings": report.count(Severity.WARNING),
        "files-scanned": len(report.files_with("scanned")),
        "files-unreadable": len(report.files_with("error")),
    }
    out_path = os.environ.get("GITHUB_OUTPUT")
    if out_path:
        with open(out_path, "a", encoding="utf-8") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in outputs.items())
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(summary_markdown(report, fail_on, sarif_file))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in tests
    sys.exit(main())
