"""Backports for the oldest Python ckptscan supports (3.10)."""

from __future__ import annotations

import sys
from typing import NoReturn

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover - Python 3.10

    def assert_never(arg: NoReturn, /) -> NoReturn:
        """Fail if reached: a type checker proves every case of an Enum was handled."""
        raise AssertionError(f"Expected code to be unreachable, but got: {arg!r}")

__all__ = ["assert_never"]
