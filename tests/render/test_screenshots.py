"""The README's screenshots of the HTML reports come from the current code.

``docs/screenshots/make.py`` writes ``stamp.json`` with a hash of everything the
pictures depend on (report code, fixtures, commands); this recomputes it. After a
change to the report, run ``python docs/screenshots/make.py`` and commit the PNGs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"


def _make():
    spec = importlib.util.spec_from_file_location("screenshots_make", SHOTS / "make.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_screenshots_are_not_stale():
    make = _make()
    stamp = json.loads((SHOTS / "stamp.json").read_text())
    assert stamp["inputs_sha256"] == make.inputs_digest(), (
        "the HTML report changed since the screenshots were taken: run python docs/screenshots/make.py")
    assert stamp["shots"] == sorted(make.SHOTS)


def test_readme_shows_every_screenshot():
    make = _make()
    readme = (ROOT / "README.md").read_text()
    assert "## What it looks like" in readme
    for name in make.SHOTS:
        png = SHOTS / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"docs/screenshots/{name}.png" in readme
