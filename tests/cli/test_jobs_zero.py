"""``-j 0`` means one process per CPU for ``scan`` and ``fix`` alike (issue 13, item 9)."""

from __future__ import annotations

import os
import shutil

import ckptscan.runtime.executor as executor

from conftest import FIXTURES, run_cli

K3 = FIXTURES / "k3"


def _spy(monkeypatch) -> list[int]:
    """Record the process count each pool run resolves to; the machine has 3 CPUs."""
    seen: list[int] = []
    real = executor.run_many

    def spy(fn, items, *a, jobs=1, **kw):
        seen.append(jobs or os.cpu_count())  # run_many's own reading of 0
        return real(fn, items, *a, jobs=jobs, **kw)

    monkeypatch.setattr(executor, "run_many", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    return seen


def test_scan_and_fix_jobs_0_mean_one_per_cpu(tmp_path, monkeypatch):
    for name in ("seed.keras", "seed_broken.keras"):
        for d in ("scan1", "scan0", "fix1", "fix0"):
            (tmp_path / d).mkdir(exist_ok=True)
            shutil.copy(K3 / name, tmp_path / d / name)
    seen = _spy(monkeypatch)
    serial = run_cli("scan", "-j", "1", tmp_path / "scan1")
    assert seen == []  # -j 1: in this process
    pooled = run_cli("scan", "-j", "0", tmp_path / "scan0")
    assert seen == [3], seen
    assert pooled.returncode == serial.returncode == 1, pooled.stderr
    assert pooled.stdout.replace("scan0", "scan1") == serial.stdout
    seen.clear()
    fserial = run_cli("fix", "-j", "1", tmp_path / "fix1")
    assert seen == []
    fpooled = run_cli("fix", "-j", "0", tmp_path / "fix0")  # was refused: "0 is not in the range x>=1"
    assert seen == [3], (seen, fpooled.stderr)
    assert fpooled.returncode == fserial.returncode == 0, fpooled.stderr
    assert fpooled.stderr.splitlines()[-1] == fserial.stderr.splitlines()[-1]
    assert "1 fixed" in fpooled.stderr.splitlines()[-1], fpooled.stderr
    assert run_cli("scan", tmp_path / "fix0").returncode == 0  # and the pool really patched it
    assert run_cli("fix", "-j", "-1", tmp_path / "fix0").returncode == run_cli("scan", "-j", "-1", tmp_path).returncode
