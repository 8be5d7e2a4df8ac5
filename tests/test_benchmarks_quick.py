"""The benchmark scripts still run (``--quick``: tiny inputs, one repeat). No timing
is asserted here; the figures come from ``python benchmarks/run.py`` on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_quick_produces_results(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path),
           "--skip", "big", "--skip", "many", "--skip", "version", "--resnet-ext", ".keras"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    row = res["cases"]["resnet101v2.keras"]
    # the floor, the reader and the scan all read the same tensors
    assert row["bytes"] == row["reader"]["bytes"] > 0
    assert row["scan"]["bytes"] > 0 and row["scan"]["check"] == 0
    assert row["floor"]["check"] == 0
    assert "| resnet101v2.keras | 1 |" in (tmp_path / "results.md").read_text()


def test_floor_counts_nonfinite_datasets(tmp_path):
    import h5py
    import numpy as np

    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.ones(10, np.float32)
        f["b"] = np.array([1.0, np.nan], np.float32)
        f["c"] = np.arange(3, dtype=np.int32)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "floor.py"), str(p), "--json"],
                         capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    assert (doc["datasets"], doc["bytes"], doc["nonfinite_datasets"]) == (3, 40 + 8 + 12, 1)
