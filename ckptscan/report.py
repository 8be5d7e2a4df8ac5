"""Scan results (:class:`Finding`, :class:`FileResult`, :class:`Report`) and their renderers.

Results are frozen dataclasses; an unreadable file is a :class:`FileResult` with
``status="error"``, never an exception, so a bulk run reports it and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

#: Version of the JSON report layout (``ckptscan scan --format json``).
SCHEMA_VERSION = 1


class Severity(str, Enum):
    """How bad a finding is; ordering: error > warning > info."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """3 for error, 2 for warning, 1 for info."""
        return {"error": 3, "warning": 2, "info": 1}[self.value]


@dataclass(frozen=True)
class Finding:
    """One problem in one variable (or the config) of one file."""

    rule_id: str
    """Stable rule ID, e.g. ``BN002``."""
    rule_name: str
    """Kebab-case rule name, e.g. ``bn-variance-outlier``."""
    severity: Severity
    message: str
    """One line naming the layer path, variable and counts."""
    file: str
    layer_path: str = ""
    variable: str = ""
    """Variable name (``moving_variance``); empty for config findings."""
    indices: tuple[int, ...] = ()
    """Flat indices (channels for 1-D tensors) of the offending values, possibly truncated."""
    count: int = 0
    """How many values are affected in total."""
    category: str = "weight"
    """``weight``, ``optimizer`` or ``config``."""
    patchable: bool = False
    """True when ``ckptscan fix`` has a strategy for it."""
    inference_only: bool = False
    """True when only inference reads the values (BN moving statistics)."""
    fix_hint: str = ""
    details: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def path(self) -> str:
        """``layer_path/variable``."""
        return f"{self.layer_path}/{self.variable}" if self.variable else self.layer_path


@dataclass(frozen=True)
class FileResult:
    """The outcome for one input file: scanned, skipped (why) or error (why)."""

    path: str
    status: str
    """``scanned``, ``skipped`` or ``error``."""
    reason: str = ""
    format: str = ""
    keras_version: str | None = None
    findings: tuple[Finding, ...] = ()
    impact: dict = field(default_factory=dict, hash=False, compare=False)
    variables_scanned: int = 0
    bytes_scanned: int = 0


@dataclass(frozen=True)
class Report:
    """All file results of one scan."""

    files: tuple[FileResult, ...] = ()

    @property
    def findings(self) -> list[Finding]:
        """Every finding of every file."""
        return [f for r in self.files for f in r.findings]
