"""Report renderers, one module per output: ``render(report, fail_on) -> str``.

=========  ======================================================================
format     module
=========  ======================================================================
table      :mod:`ckptscan.render.table`  (people: grouped by file and layer)
json       :mod:`ckptscan.render.json`   (``schema_version``; ``schema/report.schema.json``)
sarif      :mod:`ckptscan.render.sarif`  (SARIF 2.1.0 with logical locations)
junit      :mod:`ckptscan.render.junit`  (JUnit XML, one testcase per layer)
jsonl      :mod:`ckptscan.render.jsonl`  (one JSON record per file, written as it finishes)
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
        else:
            assert_never(self)
        return render


def render(report: Report, fmt: str | OutputFormat = OutputFormat.TABLE, fail_on: str = "error") -> str:
    """Render ``report`` in ``fmt``."""
    return OutputFormat(fmt).renderer()(report, fail_on=fail_on)
