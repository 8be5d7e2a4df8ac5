"""``ckptscan.bulk.run_scan``: the one path behind every ``scan`` (in process for ``--jobs 1``, a pool otherwise)."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import multiprocessing
import os
from pathlib import Path

import pytest

from ckptscan.runtime import executor
from ckptscan.bulk import run_scan
from ckptscan.runtime.executor import run_many
from ckptscan.report import FileResult
from ckptscan.discover import discover
from ckptscan.engine import make_options

from conftest import FIXTURES, run_cli

K3 = FIXTURES / "k3"
FILES = [K3 / "seed.keras", K3 / "faults.keras", K3 / "misc_legacy.h5", K3 / "seed.config.json"]


def test_jobs1_scans_in_this_process_in_order_with_byte_progress(monkeypatch):
    scan_mod = importlib.import_module("ckptscan.engine")
    real = scan_mod.scan_file
    calls = []

    def spy(path, options=None, progress=None):
        calls.append((path, os.getpid()))
        return real(path, options, progress)

    monkeypatch.setattr(scan_mod, "scan_file", spy)
    events = []
    cands = discover([K3])
    report = run_scan(cands, make_options(), jobs=1, progress=lambda ev, **kw: events.append((ev, kw)))
    scanned = [c.path for c in cands if c.skip_reason is None]
    assert [p for p, _ in calls] == scanned  # no pool: every file here, in discovery order
    assert {pid for _, pid in calls} == {os.getpid()}
    assert [r.path for r in report.files] == [c.path for c in cands]
    files = [kw for ev, kw in events if ev == "file"]
    assert [(f["index"], f["total"], f["path"]) for f in files] == [(i + 1, len(scanned), p) for i, p in enumerate(scanned)]
    first_bytes = next(i for i, (ev, _) in enumerate(events) if ev == "bytes")
    assert events[first_bytes - 1][0] == "file"  # byte events follow the file they belong to


def test_jobs1_internal_error_is_that_files_error_like_a_pool(monkeypatch):
    scan_mod = importlib.import_module("ckptscan.engine")
    real = scan_mod.scan_file
    victim = str(K3 / "faults.keras")

    def flaky(path, options=None, progress=None):
        if path == victim:
            raise RuntimeError("boom\nsecond line")
        return real(path, options, progress)

    monkeypatch.setattr(scan_mod, "scan_file", flaky)
    seen = []
    report = run_scan(discover(map(str, FILES[:3])), make_options(), jobs=1, on_result=seen.append)
    by = {r.path: r for r in report.files}
    assert by[victim] == FileResult(path=victim, status="error", reason="internal error: RuntimeError: boom")
    assert by[str(K3 / "seed.keras")].status == "scanned" and by[str(K3 / "misc_legacy.h5")].status == "scanned"
    assert [r.path for r in seen] == [str(p) for p in FILES[:3]]


def test_pool_workers_start_before_discovery_runs():
    """With ``cands`` a function, the pool's workers exist (warming up) while it runs."""
    during = []
    before = {p.pid for p in multiprocessing.active_children()}  # left by earlier tests, if any

    def late_discovery():
        during.append(len({p.pid for p in multiprocessing.active_children()} - before))
        return discover(map(str, FILES))

    report = run_scan(late_discovery, make_options(), jobs=2)
    assert during == [2]
    serial = run_scan(discover(map(str, FILES)), make_options(), jobs=1)
    assert [_timeless(r) for r in report.files] == [_timeless(r) for r in serial.files]
    assert [r.status for r in report.files] == ["scanned", "scanned", "scanned", "error"]


def _timeless(r: FileResult) -> FileResult:
    return dataclasses.replace(r, seconds=0.0)


def _marker_warm_up(folder: str) -> None:
    Path(folder, str(os.getpid())).write_text("warm")


def _warmed(folder: str, _item) -> bool:
    return Path(folder, str(os.getpid())).exists()


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_warm_up_runs_in_every_worker_before_the_items_are_read(tmp_path, monkeypatch, start):
    """Both start methods: fork pools start every worker at once, forkserver ones on demand."""
    monkeypatch.setenv("CKPTSCAN_MP_START", start)
    import functools
    import time

    def items():
        deadline = time.monotonic() + 30
        while len(list(tmp_path.iterdir())) < 2:  # both workers warmed up before the first item exists
            assert time.monotonic() < deadline, "the workers did not start before the items were read"
            time.sleep(0.01)
        yield from range(20)

    outs = list(run_many(functools.partial(_warmed, str(tmp_path)), items(), jobs=2,
                         warm_up=functools.partial(_marker_warm_up, str(tmp_path))))
    assert sorted(o.index for o in outs) == list(range(20))
    assert all(o.ok and o.value is True for o in outs)


def test_cli_jobs1_and_jobs2_print_the_same_errors_and_verdict(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    args = ["scan", "--format", "json", bad, K3 / "seed.keras", tmp_path / "missing.keras"]
    one, two = run_cli(*args), run_cli(*args[:1], "--jobs", "2", *args[1:])
    assert one.returncode == two.returncode == 2
    assert sorted(one.stderr.splitlines()[:-1]) == sorted(two.stderr.splitlines()[:-1])
    assert one.stderr.splitlines()[-1] == two.stderr.splitlines()[-1] == "ckptscan: 1 file scanned, 2 files unreadable: no findings"
    assert any(line.startswith(f"ckptscan: error: {bad}: truncated: zip end-of-central-directory record not found")
               for line in one.stderr.splitlines())
    assert f"ckptscan: error: {tmp_path / 'missing.keras'}: no such file or directory" in one.stderr.splitlines()


def _recording_call_batch(fn, batch):
    with open(os.environ["CKPTSCAN_TEST_BATCHES"], "a") as fh:
        fh.write(f"{batch[0][0]} {len(batch)}\n")
    return [executor.call_item(fn, i, item) for i, item in batch]


def _double(x: int) -> int:
    return 2 * x


def test_pool_batches_ramp_then_shrink_at_the_end(tmp_path, monkeypatch):
    log = tmp_path / "batches"
    monkeypatch.setenv("CKPTSCAN_TEST_BATCHES", str(log))
    monkeypatch.setattr(executor, "_call_batch", _recording_call_batch)
    monkeypatch.setenv("CKPTSCAN_MP_START", "fork")  # the workers see the recording batch runner
    n = executor.POOL_RAMP + 12 * executor.POOL_BATCH + 5
    outs = list(run_many(_double, iter(range(n)), jobs=2, ordered=True))
    assert [o.value for o in outs] == [2 * i for i in range(n)]
    batches = sorted(tuple(map(int, line.split())) for line in log.read_text().splitlines())
    sizes = [size for _, size in batches]
    assert sum(sizes) == n and [start for start, _ in batches] == list(itertools.accumulate([0] + sizes[:-1]))
    assert sizes[:executor.POOL_RAMP] == [1] * executor.POOL_RAMP
    assert executor.POOL_BATCH in sizes
    assert sizes[-1] == 1 and sizes[-2] == 1 and max(sizes[-4:]) < executor.POOL_BATCH  # no long last task
