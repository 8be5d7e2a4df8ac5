"""Report renderers, one module per output: ``render(report, fail_on) -> str``.

=========  ======================================================================
format     module
=========  ======================================================================
table      :mod:`ckptscan.render.table`  (people: grouped by file and layer)
json       :mod:`ckptscan.render.json`   (``schema_version``; ``schema/report.schema.json``)
sarif      :mod:`ckptscan.render.sarif`  (SARIF 2.1.0 with logical locations)
junit      :mod:`ckptscan.render.junit`  (JUnit XML, one testcase per layer)
html       :mod:`ckptscan.render.html`   (one self-contained page with charts; needs the
                                         scan's BN profile: ``ScanOptions(profile="charts")``)
=========  ======================================================================
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

from ..report import Report


class OutputFormat(str, Enum):
    """``scan --format`` choices."""

    TABLE = "table"
    JSON = "json"
    SARIF = "sarif"
    JUNIT = "junit"
    HTML = "html"

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
        elif self is OutputFormat.HTML:
            from .html import render
        else:  # pragma: no cover - exhaustive
            raise AssertionError(self)
        return render


def render(report: Report, fmt: str | OutputFormat = OutputFormat.TABLE, fail_on: str = "error") -> str:
    """Render ``report`` in ``fmt``."""
    return OutputFormat(fmt).renderer()(report, fail_on=fail_on)
