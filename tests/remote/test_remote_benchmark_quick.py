"""benchmarks/remote.py still runs (``--quick``: a tiny .keras, one run per command).

No timing is asserted; the figures in docs/benchmarks.md come from a full run on demand.
Under ``CI=true`` every server must be there (``--require``), as for the remote tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from conftest import need_module

need_module("fsspec")


def test_remote_benchmark_quick(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "remote.py"), "--quick", "--out", str(tmp_path)]
    if os.environ.get("CI", "").lower() == "true":
        cmd.append("--require")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "remote.json").read_text())
    size = res["size"]
    ran = {k: v for k, v in res["servers"].items() if "skipped" not in v}
    if not ran:
        pytest.skip("no remote test server installed")
    for name, row in ran.items():
        ins, scan = row["inspect"], row["scan"]
        assert 0 < ins["fetched"] < scan["fetched"], name  # inspect reads only part of the file
        assert size <= scan["fetched"] < 1.15 * size, name  # scan reads every value once
        assert ins["code"] == 0 and scan["code"] == 0, name
        if "sent" in ins:  # the server's own count agrees with the client's
            assert (ins["sent"], scan["sent"]) == (ins["fetched"], scan["fetched"]), name
    assert any("sent" in r["inspect"] for r in ran.values()) or "nginx (http://)" not in ran
    md = (tmp_path / "remote.md").read_text()
    assert "| local file | `scan` |" in md and all(f"| {n} | `inspect` |" in md for n in ran)
