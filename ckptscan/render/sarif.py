"""SARIF 2.1.0: one run, every rule in ``tool.driver.rules``, one result per finding.

A weight has no line number: each result names the file as its physical location
(with the ``region`` code-scanning services require: line 1 of the artifact) and the
layer path and variable as ``logicalLocations`` (``kind`` ``module`` for the layer,
``variable`` for the tensor, ``fullyQualifiedName`` ``layer/variable``). Unreadable
files are ``toolExecutionNotifications`` of level ``error``.

Artifact URIs are relative to the working directory, declared as the ``SRCROOT`` entry
of ``originalUriBaseIds`` (``uriBaseId`` on every location); a file outside it keeps
an absolute ``file://`` URI.

Every rule names its page in the repository, ``docs/rules/<ID>.md``, as the
repository-relative ``properties.helpPath`` (its text is in ``help.markdown`` too).
SARIF's ``helpUri`` must be an absolute URI, and ckptscan has no published docs site
to invent one for, so it is written only when the pages' address is known:
``CKPTSCAN_RULE_DOCS_URL`` (e.g. ``https://github.com/ORG/ckptscan/blob/main/docs/rules/``),
else :data:`RULE_DOCS_URL` when an embedding program sets it; the rule ID and ``.md``
are appended to it.
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
#: The rule pages, relative to the repository root.
RULE_DOCS_PATH = "docs/rules/"
#: Absolute address the rule pages are published at (``helpUri``); None: no ``helpUri``.
#: ``CKPTSCAN_RULE_DOCS_URL`` overrides it.
RULE_DOCS_URL: str | None = None
SRCROOT = "SRCROOT"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def artifact_uri(path: str) -> str:
    """A file path as a SARIF artifact URI (relative paths stay relative)."""
    posix = path.replace(os.sep, "/")
    if os.path.isabs(path):
        return "file://" + quote(posix if posix.startswith("/") else "/" + posix)
    return quote(posix)


def artifact_location(path: str) -> dict:
    """``artifactLocation``: relative to ``SRCROOT`` (the working directory) when inside it."""
    if "://" in path:
        return {"uri": path}
    rel = os.path.relpath(os.path.abspath(path)) if os.path.isabs(path) else os.path.normpath(path)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        return {"uri": artifact_uri(os.path.abspath(path))}
    return {"uri": artifact_uri(rel), "uriBaseId": SRCROOT}


def _srcroot() -> dict:
    root = os.getcwd().replace(os.sep, "/").rstrip("/") + "/"
    return {SRCROOT: {"uri": "file://" + quote(root if root.startswith("/") else "/" + root)}}


def help_uri(rule_id: str) -> str | None:
    """The absolute address of the rule's page, or None when none is configured."""
    base = os.environ.get("CKPTSCAN_RULE_DOCS_URL") or RULE_DOCS_URL
    if not base:
        return None
    return (base if base.endswith("/") else base + "/") + f"{rule_id}.md"


def rule_doc(r: Rule) -> dict:
    """``reportingDescriptor`` of one rule."""
    doc = {
        "id": r.id,
        "name": r.name,
        "shortDescription": {"text": r.summary},
        "fullDescription": {"text": r.doc.split("## Why is this bad?")[0].replace("## What it does", "").strip()},
        "help": {"text": r.fix_hint, "markdown": r.doc},
        "defaultConfiguration": {"level": LEVEL[r.severity]},
        "properties": {"category": r.category, "patchable": r.patchable, "inferenceOnly": r.inference_only,
                       "tags": [r.category], "helpPath": f"{RULE_DOCS_PATH}{r.id}.md"},
    }
    uri = help_uri(r.id)
    if uri:
        doc["helpUri"] = uri
    return doc


def _result(f: Finding, index: dict[str, int]) -> dict:
    logical = []
    if f.layer_path:
        logical.append({"name": f.layer_path.rpartition("/")[2], "fullyQualifiedName": f.layer_path, "kind": "module"})
    if f.variable:
        logical.append({"name": f.variable, "fullyQualifiedName": f.path, "kind": "variable"})
    loc: dict = {"physicalLocation": {"artifactLocation": artifact_location(f.file), "region": {"startLine": 1}}}
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
         "locations": [{"physicalLocation": {"artifactLocation": artifact_location(fr.path)}}]}
        for fr in report.files_with("error")
    ]
    artifacts = [{"location": artifact_location(fr.path), "properties": {"status": fr.status, "reason": fr.reason}}
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
            "originalUriBaseIds": _srcroot(),
            "artifacts": artifacts,
            "results": [_result(f, index) for f in report.findings],
            "columnKind": "unicodeCodePoints",
        }],
    }


def render(report: Report, fail_on: str = "error") -> str:
    """The SARIF document (ends with a newline)."""
    return json.dumps(sarif_doc(report, fail_on), indent=2, allow_nan=False) + "\n"
