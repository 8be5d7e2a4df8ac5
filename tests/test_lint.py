"""Lint as a test, so `.ci/run`'s single pytest command covers it.

``ruff check ckptscan tests`` with the rule set of ``[tool.ruff]`` in pyproject.toml
(each rule there says why it is on or off). Ruff is in the ``dev`` extra: missing, it
skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import ROOT
from servers import need


def test_ruff_finds_nothing():
    need(importlib.util.find_spec("ruff") is not None, "ruff (pip install -e '.[dev]')")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                          "ckptscan", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_reads_the_project_rules(tmp_path):
    """Control: the rules are ruff's own reading of pyproject.toml, and they fire."""
    need(importlib.util.find_spec("ruff") is not None, "ruff (pip install -e '.[dev]')")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(x=[]):\n    return undefined_name\n")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                          "--config", str(ROOT / "pyproject.toml"), str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    codes = sorted({line.split(": ", 1)[1].split()[0] for line in out.stdout.splitlines() if ": " in line
                    and line.startswith(str(bad))})
    assert out.returncode == 1 and codes == ["B006", "F401", "F821"], out.stdout + out.stderr
