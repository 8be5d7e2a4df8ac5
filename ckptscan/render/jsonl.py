"""JSON Lines: one self-contained JSON record per scanned file, written as it finishes.

``scan --format jsonl`` prints :func:`render_jsonl` for each
:class:`~ckptscan.report.FileResult` the moment it is ready, so a consumer can read
the output line by line while the run is still going (each line is flushed whole).
Each record is the JSON report's per-file object plus ``schema_version``.
:func:`file_result_to_dict` / :func:`file_result_from_dict` are the lossless form
(every dataclass field) used for the ``--cache`` entries.
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum
from typing import Any

from ..report import FileResult, Finding, Report, Severity
from .json import file_doc

#: Version of the JSON Lines record layout.
JSONL_SCHEMA_VERSION = 1


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):  # not valid JSON numbers
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return value


def file_result_to_dict(result: FileResult) -> dict:
    """Every field of a :class:`FileResult` (and its findings) as plain JSON data."""
    return _plain(result)


def _tupled(cls, kw: dict) -> dict:
    """Lists back to tuples for the fields whose default is a tuple."""
    for f in dataclasses.fields(cls):
        if f.name in kw and isinstance(kw[f.name], list) and isinstance(f.default, tuple):
            kw[f.name] = tuple(kw[f.name])
    return kw


def file_result_from_dict(doc: dict) -> FileResult:
    """Inverse of :func:`file_result_to_dict` (unknown keys ignored)."""
    fr_fields = {f.name for f in dataclasses.fields(FileResult)}
    fi_fields = {f.name for f in dataclasses.fields(Finding)}
    findings = []
    for f in doc.get("findings", ()):
        kw = _tupled(Finding, {k: v for k, v in f.items() if k in fi_fields})
        kw["severity"] = Severity(kw["severity"])
        findings.append(Finding(**kw))
    kw = _tupled(FileResult, {k: v for k, v in doc.items() if k in fr_fields and k != "findings"})
    return FileResult(findings=tuple(findings), **kw)


def render_jsonl(file_result: FileResult) -> str:
    """One JSON Lines record for one file, ending in ``\n`` (no newline inside).

    The record is ``{"schema_version": 1, ...}`` followed by exactly the per-file
    object of the JSON report (``ckptscan/schema/report.schema.json#/$defs/file``),
    so a line reads like one element of ``files`` in ``scan --format json``.
    """
    doc = {"schema_version": JSONL_SCHEMA_VERSION, **file_doc(file_result)}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"


def render(report: Report, fail_on: str = "error") -> str:
    """Every file's record, in report order (what ``scan --format jsonl`` writes as files finish)."""
    return "".join(render_jsonl(fr) for fr in report.files)
