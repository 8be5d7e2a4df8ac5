"""The benchmark scripts still run (``--quick``: tiny inputs, one repeat). No timing
is asserted here; the figures come from ``python benchmarks/run.py`` on demand."""

from __future__ import annotations

import json
import os
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


def test_tf_scan_copies_measures_each_fresh_copy_and_removes_it(tmp_path):
    # benchmarks/tf_scan.py --copies: one line per copy, then the range; the copies are
    # made in (and removed from) the temporary directory, never beside the checkpoint
    prefix = ROOT / "fixtures" / "tfckpt" / "misc_sw" / "ckpt"
    before = sorted(p.name for p in prefix.parent.iterdir())
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tf_scan.py"), str(prefix), "--repeat", "1",
                          "--copies", "2"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("2 fresh copies") and "screening pass: " in lines[0] and "scan / floor" in lines[1]
    assert [ln.split()[0] for ln in lines[2:-1]] == ["1", "2"]
    assert "scan / floor over the copies:" in lines[-1]
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in prefix.parent.iterdir()) == before
