"""Fault injection: SIGKILL ``ckptscan fix`` at random moments, then recover.

``CKPTSCAN_FAULT_PAUSE`` makes the fix announce every write step on stderr and pause
there (and split each region write in two), so a kill lands before the journal, while
it is written, between and inside region writes, before the CRC update, after the
fsync, before the journal is removed, or after the end. The next ckptscan call on the
file (``open_checkpoint``, or the ``inspect`` CLI) must leave it byte-identical to the
original or to the fully patched result, and it must open cleanly.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor


import ckptscan
from ckptscan.formats import open_checkpoint
from ckptscan import journal
from ckptscan.journal import journal_path
from conftest import run_cli
from test_patch_models import fixmodels, fresh, sha256  # noqa: F401

PAUSE = 0.015
TRIALS = {"legacy": 17, "keras": 17, "sharded": 17, "deflated": 6}

#: A worker that imports ckptscan once, then per job forks a child running
#: ``ckptscan fix`` (the real CLI entry point) and SIGKILLs it at the chosen moment.
#: Forking keeps ~60 trials fast; each child is a separate process killed by the kernel.
SERVER = r"""
import os, signal, sys, time
import ckptscan.cli.program, ckptscan.engine, ckptscan.patch  # noqa: imported before forking
from ckptscan.cli import main
pause = float(sys.argv[1])
for line in sys.stdin:
    path, stop, delay = line.rstrip("\n").split("\t")
    stop, delay = int(stop), float(delay)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 2)
        nul = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nul, 1)
        os.environ["CKPTSCAN_FAULT_PAUSE"] = str(pause)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        code = 99
        try:
            code = main(["fix", path])
        finally:
            os._exit(code)
    os.close(w)
    rd = os.fdopen(r, "r")
    seen, where = -1, "start"
    while seen < stop:
        ln = rd.readline()
        if not ln:
            break
        if ln.startswith("ckptscan-fault-point: "):
            seen += 1
            where = ln.strip().split(": ", 1)[1]
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    rd.close()
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    print(where if killed else "finished:%d:%d" % (os.WEXITSTATUS(status), seen + 1), flush=True)
"""


def _run_server(jobs) -> list[str]:
    """Feed ``(path, stop, delay)`` jobs to one fork server; return where each was killed."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(PAUSE)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    out = []
    try:
        for path, stop, delay in jobs:
            proc.stdin.write(f"{path}\t{stop}\t{delay}\n")
            proc.stdin.flush()
            out.append(proc.stdout.readline().strip())
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return out


def test_sigkill_at_random_moments_leaves_original_or_patched(fixmodels, tmp_path):
    rng = random.Random(20261127)
    jobs, calib = [], []
    for layout, n in TRIALS.items():
        src = fixmodels[(layout, "bn")]
        ref = fresh(src, tmp_path / layout / "patched")
        (f,) = ckptscan.fix(str(ref)).files
        assert f.status == "fixed"
        original, patched = sha256(src), sha256(ref)
        assert original != patched
        calib.append((layout, src, n, original, patched))
    # one uninterrupted run per layout counts its fault points
    done = _run_server([(fresh(c[1], tmp_path / c[0] / "calib"), 10**6, 0.0) for c in calib])
    for (layout, src, n, original, patched), res in zip(calib, done):
        code, count = res.split(":")[1:]
        assert code == "0" and int(count) >= 4, res
        # kill before the first step, after the last one (patched), and at random steps between
        stops = [-1, int(count)] + [rng.randint(-1, int(count)) for _ in range(n - 2)]
        for i, stop in enumerate(stops):
            jobs.append((layout, src, fresh(src, tmp_path / layout / f"t{i}"), stop, rng.uniform(0, 1.5 * PAUSE),
                         original, patched))
    assert len(jobs) >= 50

    halves = [jobs[0::2], jobs[1::2]]
    with ThreadPoolExecutor(2) as pool:
        wheres = list(pool.map(lambda js: _run_server([(j[2], j[3], j[4]) for j in js]), halves))
    results = list(zip(halves[0], wheres[0])) + list(zip(halves[1], wheres[1]))

    outcomes = {"original": 0, "patched": 0}
    killed_mid_write = 0
    seen = []
    for i, (job, where) in enumerate(results):
        seen.append((job[0], job[3], round(job[4], 4), where))
        layout, src, path, stop, delay, original, patched = job
        if where.startswith("region") or where in ("journal-committed", "regions-synced", "rewrite-written",
                                                   "rewrite-zipped", "rewrite-copied", "rewrite-extracted"):
            killed_mid_write += 1
        # the recovery path: `ckptscan recover` (or fix); readers never write
        assert where and not where.startswith("finished:") or where.startswith("finished:0:"), where
        if i % 30 == 0:
            out = run_cli("recover", path)
            assert out.returncode == 0, out.stderr
        else:
            journal.recover(path)
        with open_checkpoint(path) as ck:
            assert ck.variables
        assert not os.path.exists(journal_path(path)), (layout, where)
        leftovers = [n for n in os.listdir(os.path.dirname(path) if not os.path.isdir(path) else path)
                     if n.endswith(".tmp")]
        assert leftovers == [], (layout, where, leftovers)
        digest = sha256(path)
        assert digest in (original, patched), (layout, where, stop, delay, seen)
        outcomes["original" if digest == original else "patched"] += 1
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                assert zf.testzip() is None
    # the kills really landed everywhere: both outcomes, many of them inside the write
    print(f"{len(results)} kills: {outcomes}, {killed_mid_write} inside the write")
    assert outcomes["original"] >= 5 and outcomes["patched"] >= len(TRIALS), (outcomes, seen)
    assert killed_mid_write >= 15, (killed_mid_write, seen)
