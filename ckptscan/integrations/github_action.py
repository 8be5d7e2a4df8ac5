"""The script of the composite GitHub Action (``action.yml`` at the repository root).

Runs ``ckptscan scan`` as a child process, the very program a user runs (settings from
the nearest ``.ckptscan.toml`` / ``[tool.ckptscan]``, ``--timeout``, the memory cap
``--max-memory``, the supervisor that stops a file stuck in C code, the worker pool of
``--jobs``), takes its exit code as the verdict and reads its JSON report back to write
what the later steps of the Action and the GitHub UI read:

* the SARIF report (``INPUT_SARIF_FILE``), uploaded by ``github/codeql-action/upload-sarif``;
* a Markdown job summary appended to ``$GITHUB_STEP_SUMMARY``;
* step outputs in ``$GITHUB_OUTPUT``: ``exit-code``, ``sarif-file``, ``errors``,
  ``warnings``, ``infos``, ``files``, ``files-scanned``, ``files-skipped``,
  ``files-unreadable`` (each declared in ``action.yml``'s ``outputs``).

It always exits 0 after writing them (unless the inputs are unusable, exit 4) so the
upload step runs; the Action's last step fails the job with ``exit-code``.

Inputs come as environment variables (``INPUT_PATHS``, ``INPUT_FAIL_ON``,
``INPUT_SELECT``, ``INPUT_IGNORE``, ``INPUT_INCLUDE_OPTIMIZER``, ``INPUT_CONFIG``,
``INPUT_SETTINGS``, ``INPUT_TIMEOUT``, ``INPUT_MAX_MEMORY``, ``INPUT_JOBS``,
``INPUT_SARIF_FILE``); an empty one is not passed, so the settings file decides. Exactly as ``action.yml`` passes them. Run it locally with the
same variables to reproduce a CI result: ``python -m ckptscan.integrations.github_action``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

from ..report import ExitCode, FileResult, Report, Severity

USAGE = int(ExitCode.USAGE)

#: Findings listed in the job summary (the SARIF report has all of them).
SUMMARY_FINDINGS = 50


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _codes(value: str) -> list[str]:
    return [c for c in value.replace(",", " ").split() if c]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(report, fail_on: str, sarif_file: str, code: int | None = None) -> str:
    """The job summary: verdict, one row per file, the first findings."""
    if code is None:
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


def _argv(inputs: dict[str, str], paths: list[str], report_file: str) -> list[str]:
    """The ``ckptscan scan`` command line the Action runs (the program, as a user would)."""
    argv = [sys.executable, "-m", "ckptscan"]
    if inputs["max-memory"]:
        argv += ["--max-memory", inputs["max-memory"]]
    argv += ["scan", *paths, "--format", "json", "--output", report_file]
    if inputs["fail-on"]:
        argv += ["--fail-on", inputs["fail-on"]]
    for code in _codes(inputs["select"]):
        argv += ["--select", code]
    for code in _codes(inputs["ignore"]):
        argv += ["--ignore", code]
    if inputs["include-optimizer"]:
        argv.append("--include-optimizer" if inputs["include-optimizer"] == "true" else "--no-include-optimizer")
    for name in ("config", "settings", "timeout", "jobs"):
        if inputs[name]:
            argv += [f"--{name}", inputs[name]]
    return argv


def _inputs() -> dict[str, str]:
    """The Action's inputs (``INPUT_<NAME>`` variables); raises ``ValueError`` for a bad one."""
    names = ("fail-on", "select", "ignore", "include-optimizer", "config", "settings", "timeout", "max-memory", "jobs")
    inputs = {n: _env("INPUT_" + n.upper().replace("-", "_")) for n in names}
    inputs["include-optimizer"] = inputs["include-optimizer"].lower()
    if inputs["fail-on"] not in ("", "error", "warning", "info", "never") or inputs["include-optimizer"] not in ("", "true", "false"):
        raise ValueError(f"bad input fail-on={inputs['fail-on']!r} include-optimizer={inputs['include-optimizer']!r}")
    return inputs


def report_from_doc(doc: dict) -> Report:
    """The :class:`~ckptscan.report.Report` of a ``scan --format json`` document."""
    from ..render.jsonl import file_result_from_dict

    files = []
    for fd in doc["files"]:
        fd = {**fd, "findings": [{**f, "file": fd["path"]} for f in fd.get("findings", ())]}
        fd["impact"] = fd.get("impact") or {}
        files.append(file_result_from_dict(fd))
    return Report(files=tuple(files))


_ERROR_LINE = re.compile(r"^ckptscan: error: (.+?): (.+)$")


def report_from_errors(stderr: str) -> Report:
    """Without a JSON report (the supervisor stopped a scan stuck in C code with ``--jobs 1``):
    one unreadable file per ``ckptscan: error: FILE: REASON`` line."""
    files = []
    for line in stderr.splitlines():
        m = _ERROR_LINE.match(line)
        if m:
            files.append(FileResult(path=m.group(1), status="error", reason=m.group(2)))
    return Report(files=tuple(files))


def main() -> int:
    """Run ``ckptscan scan`` on ``INPUT_PATHS``; write SARIF, the job summary and the step outputs."""
    paths = shlex.split(_env("INPUT_PATHS", ".")) or ["."]
    sarif_file = _env("INPUT_SARIF_FILE", "ckptscan.sarif") or "ckptscan.sarif"
    try:
        inputs = _inputs()
    except ValueError as exc:
        sys.stderr.write(f"ckptscan: error: {exc}\n")
        return USAGE
    with tempfile.TemporaryDirectory(prefix="ckptscan-action-") as tmp:
        report_file = os.path.join(tmp, "report.json")
        # the program itself: settings files, --timeout, the memory cap, the supervisor and
        # the worker pool (a file stuck in C code or crashing is reported, the others scanned)
        proc = subprocess.run(_argv(inputs, paths, report_file), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace", check=False)
        sys.stderr.write(proc.stderr)
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        doc = None
        try:
            with open(report_file, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            pass
    if code == USAGE:  # bad input (an unknown rule, a bad --timeout, ...): the step fails
        return USAGE
    if doc is not None:
        report, fail_on = report_from_doc(doc), doc["summary"]["fail_on"]
    else:
        report, fail_on = report_from_errors(proc.stderr), inputs["fail-on"] or "error"
        if code == 0 or not report.files:  # no report and no reason: never a silent pass
            sys.stderr.write(f"ckptscan: error: the scan ended with exit code {code} and wrote no report\n")
            code = code if code not in (0, 1, 3) else 2
    from ..render import render

    with open(sarif_file, "w", encoding="utf-8") as fh:
        fh.write(render(report, "sarif", fail_on=fail_on))
    sys.stdout.write(render(report, "table", fail_on=fail_on))
    outputs = {
        "exit-code": code,
        "sarif-file": sarif_file,
        "errors": report.count(Severity.ERROR),
        "warnings": report.count(Severity.WARNING),
        "infos": report.count(Severity.INFO),
        "files": len(report.files),
        "files-scanned": len(report.files_with("scanned")),
        "files-skipped": len(report.files_with("skipped")),
        "files-unreadable": len(report.files_with("error")),
    }
    out_path = os.environ.get("GITHUB_OUTPUT")
    if out_path:
        with open(out_path, "a", encoding="utf-8") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in outputs.items())
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(summary_markdown(report, fail_on, sarif_file, code))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in tests
    sys.exit(main())
