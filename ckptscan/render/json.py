"""The JSON report: one document, ``schema_version`` first, valid against
``ckptscan/schema/report.schema.json``. Non-finite numbers become ``null``."""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Any

from .._version import __version__
from ..report import SCHEMA_VERSION, FileResult, Finding, Report, Severity


def _clean(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finding_doc(f: Finding) -> dict:
    """The JSON form of one finding."""
    return {
        "rule_id": f.rule_id,
        "rule_name": f.rule_name,
        "severity": f.severity.value,
        "category": f.category,
        "message": f.message,
        "layer_path": f.layer_path,
        "variable": f.variable,
        "path": f.path,
        "indices": list(f.indices),
        "count": f.count,
        "patchable": f.patchable,
        "inference_only": f.inference_only,
        "fix_hint": f.fix_hint,
        "details": _clean(f.details),
    }


def file_doc(r: FileResult) -> dict:
    """The JSON form of one file result."""
    return {
        "path": r.path,
        "status": r.status,
        "reason": r.reason,
        "format": r.format,
        "keras_version": r.keras_version,
        "variables_scanned": r.variables_scanned,
        "variables_skipped": r.variables_skipped,
        "bytes_scanned": r.bytes_scanned,
        "seconds": round(r.seconds, 6),
        "counts": {s.value: r.count(s) for s in Severity},
        "findings": [finding_doc(f) for f in r.findings],
        "impact": _clean(r.impact) if r.impact else None,
        "notes": list(r.notes),
    }


def report_doc(report: Report, fail_on: str = "error") -> dict:
    """The whole JSON document as data."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ckptscan", "version": __version__},
        "summary": {
            "files": len(report.files),
            "scanned": len(report.files_with("scanned")),
            "skipped": len(report.files_with("skipped")),
            "errors": len(report.files_with("error")),
            "findings": {s.value: report.count(s) for s in Severity},
            "fail_on": fail_on,
            "exit_code": report.exit_code(fail_on),
        },
        "files": [file_doc(r) for r in report.files],
    }


def render(report: Report, fail_on: str = "error") -> str:
    """The JSON document (ends with a newline)."""
    return json.dumps(report_doc(report, fail_on), indent=2, allow_nan=False) + "\n"
