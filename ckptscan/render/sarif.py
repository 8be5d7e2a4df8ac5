"""SARIF 2.1.0: one run, every rule in ``tool.driver.rules``, one result per finding.

A weight has no line number: each result names the file as its physical location and
the layer path and variable as ``logicalLocations`` (``kind`` ``module`` for the layer,
``variable`` for the tensor, ``fullyQualifiedName`` ``layer/variable``). Unreadable
files are ``toolExecutionNotifications`` of level ``error``.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from .._version import __version__
from ..report import Finding, Report, Severity
from ..rules import ALL_RULES, Rule
from .json import _clean

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def artifact_uri(path: str) -> str:
    """A file path as a SARIF artifact URI (relative paths stay relative)."""
    posix = path.replace(os.sep, "/")
    if os.path.isabs(path):
        return "file://" + quote(posix if posix.startswith("/") else "/" + posix)
    return quote(posix)


def rule_doc(r: Rule) -> dict:
    """``reportingDescriptor`` of one rule."""
    return {
        "id": r.id,
        "name": r.name,
        "shortDescription": {"text": r.summary},
        "fullDescription": {"text": r.doc.split("## Why is this bad?")[0].replace("## What it does", "").strip()},
        "help": {"text": r.fix_hint, "markdown": r.doc},
        "defaultConfiguration": {"level": LEVEL[r.severity]},
        "properties": {"category": r.category, "patchable": r.patchable, "inferenceOnly": r.inference_only,
                       "tags": [r.category]},
    }


def _result(f: Finding, index: dict[str, int]) -> dict:
    logical = []
    if f.layer_path:
        logical.append({"name": f.layer_path.rpartition("/")[2], "fullyQualifiedName": f.layer_path, "kind": "module"})
    if f.variable:
        logical.append({"name": f.variable, "fullyQualifiedName": f.path, "kind": "variable"})
    loc: dict = {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(f.file)}}}
    if logical:
        loc["logicalLocations"] = logical
    res = {
        "ruleId": f.rule_id,
        "level": LEVEL[f.severity],
        "message": {"text": f.message},
        "locations": [loc],
        "partialFingerprints": {"ckptscanPath/v1": f"{f.rule_id}:{f.path}"},
        "properties": _clean({"indices": list(f.indices), "count": f.count, "category": f.category,
                              "patchable": f.patchable, "inferenceOnly": f.inference_only, "fix": f.fix_hint}),
    }
    if f.rule_id in index:
        res["ruleIndex"] = index[f.rule_id]
    return res


def sarif_doc(report: Report, fail_on: str = "error") -> dict:
    """The SARIF log as data."""
    index = {r.id: i for i, r in enumerate(ALL_RULES)}
    notes = [
        {"level": "error", "message": {"text": f"{fr.path}: {fr.reason}"},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(fr.path)}}}]}
        for fr in report.files_with("error")
    ]
    artifacts = [{"location": {"uri": artifact_uri(fr.path)}, "properties": {"status": fr.status, "reason": fr.reason}}
                 for fr in report.files]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "ckptscan",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": "https://pypi.org/project/ckptscan/",
                "rules": [rule_doc(r) for r in ALL_RULES],
            }},
            "invocations": [{
                "executionSuccessful": not notes,
                "exitCode": report.exit_code(fail_on),
                "toolExecutionNotifications": notes,
            }],
            "artifacts": artifacts,
            "results": [_result(f, index) for f in report.findings],
            "columnKind": "unicodeCodePoints",
        }],
    }


def render(report: Report, fail_on: str = "error") -> str:
    """The SARIF document (ends with a newline)."""
    return json.dumps(sarif_doc(report, fail_on), indent=2, allow_nan=False) + "\n"
