"""A ``timeout`` that fires leaves nothing behind in the process that asked for it.

Found by running the CLI tests through ``main(argv)`` in one process: after a scan with
``timeout=1e-6`` every later file of the process failed with that same timeout, and the
process was SIGKILLed 5 s later (``HARD_GRACE``) by its own watchdog, still armed for
the first file. The alarm fired inside ``signal.setitimer`` in ``file_timeout``
(now :mod:`ckptscan.runtime.timeout`), before the ``try`` whose ``finally`` restores the
deadline and the SIGALRM handler and disarms the watchdog; the arming now happens inside
that ``try``. Run in a fresh interpreter so a leak cannot hurt the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import fixture_path

PROBE = """
import sys, time
import ckptscan
path = sys.argv[1]
first = ckptscan.scan([path], timeout=1e-6)
print("first", [(f.status, f.reason) for f in first.files], flush=True)
second = ckptscan.scan([path])
print("second", [(f.status, f.reason) for f in second.files], flush=True)
time.sleep(1.5)  # past the watchdog's grace for the first file (CKPTSCAN_HARD_GRACE=1)
print("alive", flush=True)
"""


def test_a_fired_timeout_does_not_leak_into_later_work():
    path = str(fixture_path("k3", "seed.keras"))
    out = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CKPTSCAN_HARD_GRACE": "1"})
    assert out.stdout.splitlines() == [
        "first [('error', 'timed out after 1e-06 s (--timeout)')]",
        "second [('scanned', '')]",
        "alive",
    ], (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.returncode == 0
