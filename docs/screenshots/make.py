"""Regenerate the README screenshots of the HTML reports (``docs/screenshots/*.png``).

    python docs/screenshots/make.py            # needs the dev extra and Debian's chromium

Runs the CLI from the repository root on the committed fixtures (the seed scenario's
scan, the diverged run's timeline, the diff of its last good and first bad epochs),
opens each page in the system Chromium through Playwright with the network blocked,
and saves a full-page PNG. Then writes ``stamp.json``: a hash of everything the
pictures depend on (the report code, the fixtures, the commands, the version).
``tests/render/test_screenshots.py`` recomputes it, so a change to the report code without
new screenshots fails the tests.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STAMP = HERE / "stamp.json"
#: name -> CLI arguments (run from the repository root, so the pages show relative paths)
SHOTS = {
    "scan-seed-broken": ["scan", "fixtures/k3/seed_broken.keras"],
    "timeline-diverge": ["timeline"] + [f"fixtures/diverge/epoch_{i:02d}.keras" for i in range(1, 7)],
    "diff-diverge": ["diff", "fixtures/diverge/epoch_04.keras", "fixtures/diverge/epoch_05.keras"],
}
#: what the pictures depend on, besides the fixtures the commands name
CODE = ["ckptscan/render/html.py", "ckptscan/render/svg.py", "ckptscan/bnprofile.py", "docs/screenshots/make.py"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1100


def inputs_digest() -> str:
    """sha256 over the report code, the fixtures shot and the commands."""
    h = hashlib.sha256()
    h.update(json.dumps(SHOTS, sort_keys=True).encode())
    files = CODE + sorted({a for args in SHOTS.values() for a in args if a.startswith("fixtures/")})
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update((ROOT / rel).read_bytes().replace(b"\r\n", b"\n"))
    return h.hexdigest()


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for name, args in SHOTS.items():
            page_file = Path(tmp) / f"{name}.html"
            cmd = [sys.executable, "-m", "ckptscan", *args, "--format", "html", "-o", str(page_file)]
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if not page_file.exists():
                sys.stderr.write(run.stderr)
                return 1
            ctx = browser.new_context(viewport={"width": WIDTH, "height": 800}, color_scheme="light")
            page = ctx.new_page()
            url = page_file.as_uri()
            page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
            page.goto(url, wait_until="load")
            page.screenshot(path=str(HERE / f"{name}.png"), full_page=True)
            ctx.close()
            print(f"docs/screenshots/{name}.png")
        browser.close()
    STAMP.write_text(json.dumps({"inputs_sha256": inputs_digest(), "shots": sorted(SHOTS)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
