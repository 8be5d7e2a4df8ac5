"""Report renderers, one module per output: ``render(report, fail_on) -> str``.

=========  ======================================================================
format     module
=========  ======================================================================
table      :mod:`ckptscan.render.table`  (people: grouped by file and layer)
json       :mod:`ckptscan.render.json`   (``schema_version``; ``schema/report.schema.json``)
sarif      :mod:`ckptscan.render.sarif`  (SARIF 2.1.0 with logical locations)
junit      :mod:`ckptscan.render.junit`  (JUnit XML, one testcase per layer)
jsonl      :mod:`ckptscan.render.jsonl`  (one JSON record per file, written as it finishes)
html       :mod:`ckptscan.render.html`   (one self-contained page with charts; needs the
                                         scan's BN profile: ``ScanOptions(profile="charts")``)
=========  ======================================================================
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

from .._compat import assert_never
from ..report import Report


class OutputFormat(str, Enum):
    """``scan --format`` choices."""

    TABLE = "table"
    JSON = "json"
    SARIF = "sarif"
    JUNIT = "junit"
    JSONL = "jsonl"
    """One JSON record per file; ``scan`` writes each as its file finishes (:mod:`ckptscan.bulk`)."""
    HTML = "html"
    """One self-contained page with charts (:mod:`ckptscan.render.html`); ``scan`` refuses it
    without ``-o`` and asks the scan for the BN profile (:attr:`needs_file`, :attr:`profile`)."""

    @property
    def needs_file(self) -> bool:
        """True when the output cannot go to a terminal: ``-o FILE`` is required."""
        return self is OutputFormat.HTML

    @property
    def profile(self) -> str:
        """The ``ScanOptions.profile`` level this format needs (``""``: none)."""
        return "charts" if self is OutputFormat.HTML else ""

    @property
    def streams(self) -> bool:
        """True when ``scan`` writes the output file by file as they finish, not at the end."""
        return self is OutputFormat.JSONL

    def renderer(self) -> Callable[..., str]:
        """The ``render(report, fail_on=...)`` function of this format."""
        if self is OutputFormat.TABLE:
            from .table import render
        elif self is OutputFormat.JSON:
            from .json import render
        elif self is OutputFormat.SARIF:
            from .sarif import render
        elif self is OutputFormat.JUNIT:
            from .junit import render
        elif self is OutputFormat.JSONL:
            from .jsonl import render
        elif self is OutputFormat.HTML:
            from .html import render
        else:
            assert_never(self)
        return render


def render(report: Report, fmt: str | OutputFormat = OutputFormat.TABLE, fail_on: str = "error") -> str:
    """Render ``report`` in ``fmt``."""
    return OutputFormat(fmt).renderer()(report, fail_on=fail_on)
