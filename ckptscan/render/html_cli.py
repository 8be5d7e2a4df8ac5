"""The CLI side of ``--format html`` shared by ``scan``, ``timeline`` and ``diff``.

An HTML page is refused on a terminal: ``--format html`` needs ``-o FILE`` (a page
of markup on stdout helps no one, and a report meant to be attached to a ticket or
CI artifact wants a file).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, NoReturn

NEEDS_OUTPUT = "--format html writes a file: add -o report.html"


def check_output(output: str | None, usage: Callable[[str], NoReturn]) -> None:
    """Refuse ``--format html`` without ``-o`` (one error line, exit 4)."""
    if not output:
        usage(NEEDS_OUTPUT)


def html_options(options, output: str | None, usage: Callable[[str], NoReturn]):
    """``options`` asking the scan for the BN profile the charts need; checks ``-o``."""
    check_output(output, usage)
    return dataclasses.replace(options, profile="charts")


def write_page(text: str, output: str) -> bool:
    """Write the page to ``output``; False after one error line."""
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        sys.stderr.write(f"ckptscan: error: {output}: cannot write report ({exc.strerror or exc})\n")
        return False
    return True
