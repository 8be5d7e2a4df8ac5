"""Scan results (:class:`Finding`, :class:`FileResult`, :class:`Report`) and their renderers.

Results are frozen dataclasses; an unreadable file is a :class:`FileResult` with
``status="error"``, never an exception, so a bulk run reports it and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

#: Version of the JSON report layout (``ckptscan scan --format json``).
SCHEMA_VERSION = 1


class ExitCode(IntEnum):
    """The exit status of every ``ckptscan`` command (also the JSON report's ``exit_code``)."""

    OK = 0
    """Clean, success, identical."""
    FINDINGS = 1
    """Findings at or above ``--fail-on``; something left unfixed; different; a bad checkpoint."""
    READ_ERROR = 2
    """A file could not be read (``ckptscan: error: <file>: <reason>`` on stderr)."""
    NOTHING = 3
    """Nothing scannable found."""
    USAGE = 4
    """Usage error (bad option, bad settings, unusable executor)."""
    INTERRUPTED = 130
    """Ctrl-C."""


def exit_code(*, usage: bool = False, unreadable: bool = False, nothing: bool = False, findings: bool = False,
              findings_first: bool = False) -> ExitCode:
    """The one place that decides an exit status, from what a command found.

    Precedence: usage error, then an unreadable file, then nothing found, then findings.
    ``findings_first`` puts findings before an unreadable file: ``timeline``'s answer is
    the first bad checkpoint, which an unreadable later one does not change. It lives
    here, not in :mod:`ckptscan.cli`, because the JSON report carries the code and the
    renderers sit below the CLI; :mod:`ckptscan.cli` re-exports it and every command ends
    through it.
    """
    if usage:
        return ExitCode.USAGE
    if findings_first and findings:
        return ExitCode.FINDINGS
    if unreadable:
        return ExitCode.READ_ERROR
    if nothing:
        return ExitCode.NOTHING
    if findings:
        return ExitCode.FINDINGS
    return ExitCode.OK


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
    variables_skipped: int = 0
    """Variables not value-checked (integer dtypes, optimizer state when excluded)."""
    seconds: float = 0.0
    """Wall-clock time spent on the file."""
    notes: tuple[str, ...] = ()
    """Remarks about the scan (names inferred without a config, no model graph…)."""
    layers: tuple[str, ...] = ()
    """Every layer path with a scanned variable, in file order (JUnit: one testcase each)."""
    profile: dict = field(default_factory=dict, hash=False, compare=False)
    """Per-BN-layer summaries and chart data when asked (``ScanOptions.profile``;
    :mod:`ckptscan.bnprofile`); empty otherwise. Not part of the JSON report."""

    @property
    def worst(self) -> Severity | None:
        """The highest severity among the findings, or None."""
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)

    def count(self, severity: Severity) -> int:
        """How many findings have ``severity``."""
        return sum(1 for f in self.findings if f.severity == severity)


@dataclass(frozen=True)
class Report:
    """All file results of one scan."""

    files: tuple[FileResult, ...] = ()

    @property
    def findings(self) -> list[Finding]:
        """Every finding of every file."""
        return [f for r in self.files for f in r.findings]

    def count(self, severity: Severity) -> int:
        """How many findings of every file have ``severity``."""
        return sum(r.count(severity) for r in self.files)

    def files_with(self, status: str) -> list[FileResult]:
        """The file results with ``status`` (``scanned``, ``skipped``, ``error``)."""
        return [r for r in self.files if r.status == status]

    def fails(self, fail_on: str = "error") -> bool:
        """True when a finding is at or above ``fail_on`` (``error``, ``warning``, ``info``;
        ``never``: never)."""
        if fail_on == "never":
            return False
        bar = Severity(fail_on).rank
        return any(f.severity.rank >= bar for f in self.findings)

    def exit_code(self, fail_on: str = "error") -> int:
        """The CLI exit code (:func:`exit_code`): 2 if a file could not be read, else 3 if
        nothing was scanned, else 1 if a finding is at or above ``fail_on`` (``error``,
        ``warning``, ``info``, ``never``), else 0."""
        return int(exit_code(unreadable=bool(self.files_with("error")), nothing=not self.files_with("scanned"),
                             findings=self.fails(fail_on)))

    def verdict(self) -> str:
        """The one-line summary printed on stderr."""
        scanned = self.files_with("scanned")
        errs, warns, infos = (self.count(s) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO))
        bad = sum(1 for r in scanned if r.count(Severity.ERROR))
        parts = [f"{_n(len(scanned), 'file')} scanned"]
        if scanned:
            parts[0] += f", {bad} with errors" if bad else ""
        if self.files_with("skipped"):
            parts.append(f"{len(self.files_with('skipped'))} skipped")
        if self.files_with("error"):
            parts.append(f"{_n(len(self.files_with('error')), 'file')} unreadable")
        counts = ", ".join(_n(n, w) for n, w in ((errs, "error"), (warns, "warning"), (infos, "info")) if n)
        return "ckptscan: " + ", ".join(parts) + ": " + (counts or "no findings")


def _n(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s" if word != "info" else f"{n} info"
