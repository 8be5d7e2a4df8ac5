"""What the app, the scan pipeline (:mod:`.scanning`) and the hooks (:mod:`.hooks`) share:
:class:`HttpError`, the async :class:`Job`, :func:`verdict_of`. Its own module so that
those three import it instead of each other (no import cycle, tests/test_layers.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..report import FileResult, Report, Severity


class HttpError(Exception):
    """An answer other than 2xx, with a one-line reason (and headers)."""

    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def verdict_of(fr: FileResult, fail_on: str = "error") -> str:
    """``pass`` | ``fail`` | ``unreadable`` | ``skipped`` for one file."""
    if fr.status == "error":
        return "unreadable"
    if fr.status != "scanned":
        return "skipped"
    if fail_on != "never":
        bar = Severity(fail_on).rank
        if any(f.severity.rank >= bar for f in fr.findings):
            return "fail"
    return "pass"


@dataclass
class Job:
    """An async scan (``"async": true``)."""

    id: str
    state: str = "queued"
    """``queued``, ``running``, ``done`` or ``failed``."""
    report: Report | None = None
    fail_on: str = "error"
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None


__all__ = ["HttpError", "Job", "verdict_of"]
