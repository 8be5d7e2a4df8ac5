"""The program ends without Python's teardown, unless skipping it could lose something.

``ckptscan.cli.main()`` run as the program calls :func:`ckptscan.cli._leave`: flush,
run ``atexit`` handlers, ``os._exit``. Each case runs the real entry point in a fresh
interpreter whose ``__main__`` holds an object that prints ``teardown`` when Python's
finalization frees it, so the output shows which way the process ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from conftest import FIXTURES

BROKEN = FIXTURES / "k3" / "seed_broken.keras"


def _program(setup: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        """
        import atexit, sys

        class Sentinel:
            def __del__(self):
                print("teardown", flush=True)

        sentinel = Sentinel()
        atexit.register(lambda: print("atexit handler", flush=True))
        """
    ) + textwrap.dedent(setup) + textwrap.dedent(
        """
        from ckptscan.cli import main
        sys.argv = ["ckptscan", *sys.argv[1:]]
        sys.exit(main())
        """
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("supervisor", ["1", "0"])
def test_scan_leaves_without_teardown_and_keeps_its_output(tmp_path, supervisor):
    out = tmp_path / "report.json"
    res = _program("", "scan", str(BROKEN), "--format", "json", "-o", str(out), env={"CKPTSCAN_SUPERVISOR": supervisor})
    assert res.returncode == 1, res.stderr
    assert "atexit handler" in res.stdout
    assert "teardown" not in res.stdout
    doc = json.loads(out.read_text())
    assert doc["files"][0]["findings"]
    assert "1 file scanned" in res.stderr


def test_stdout_report_is_complete_when_leaving_fast():
    res = _program("", "scan", str(BROKEN), "--format", "json")
    assert res.returncode == 1, res.stderr
    assert "teardown" not in res.stdout
    report = res.stdout.replace("atexit handler\n", "")
    assert json.loads(report)["files"][0]["findings"]


def test_open_hdf5_file_gets_the_normal_exit(tmp_path):
    """The HDF5 library's own exit handler flushes files left open: never skipped."""
    left_open = tmp_path / "left_open.h5"
    setup = f"""
        import h5py, numpy as np
        f = h5py.File({str(left_open)!r}, "w")
        f["x"] = np.arange(1000.0)
    """
    res = _program(setup, "scan", str(BROKEN), "--format", "json", "-o", str(tmp_path / "r.json"))
    assert res.returncode == 1, res.stderr
    assert "teardown" in res.stdout
    with h5py.File(left_open, "r") as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(1000.0))


def test_running_thread_is_waited_for(tmp_path):
    # unsupervised: a thread started before main() would stay in the supervisor, not the forked worker
    marker = tmp_path / "thread_done"
    setup = f"""
        import threading, time
        def late():
            time.sleep(3.0)  # still running when the scan ends, even on a loaded machine
            open({str(marker)!r}, "w").write("done")
        threading.Thread(target=late).start()
    """
    res = _program(setup, "scan", str(BROKEN), "-o", str(tmp_path / "r.txt"), env={"CKPTSCAN_SUPERVISOR": "0"})
    assert res.returncode == 1, res.stderr
    assert marker.read_text() == "done"
    assert "teardown" in res.stdout


def test_in_process_main_returns():
    """``main(argv)`` called by a host program never exits the host."""
    code = textwrap.dedent(
        f"""
        from ckptscan.cli import main
        rc = main(["scan", {str(BROKEN)!r}, "-o", "/dev/null"])
        print("returned", rc)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "returned 1" in res.stdout, res.stderr


_CRASH_ON = """
import ctypes, os
import ckptscan.formats.layouts as layouts

_open = layouts.open_source

def _crashing(src, cfg, *rest):
    if os.path.basename(str(src.where)) == "boom.h5":
        ctypes.string_at(0)  # a real SIGSEGV, as libhdf5 gives on some malformed files
    return _open(src, cfg, *rest)

layouts.open_source = _crashing
"""


@pytest.mark.parametrize("command", [["scan"], ["inspect"], ["fix", "--dry-run"]], ids=" ".join)
def test_a_reader_crash_is_one_error_line_and_exit_2(tmp_path, command):
    """A file the reader does not survive (SIGSEGV in C code) is reported like any
    unreadable file: the supervisor names it in one line and exits 2, where it used to die
    of the same signal (exit 139, nothing said)."""
    boom = tmp_path / "boom.h5"
    boom.write_bytes((FIXTURES / "tf2" / "seed.h5").read_bytes())
    res = _program(_CRASH_ON, *command, str(boom))
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert lines[0] == f"ckptscan: error: {boom}: the reader crashed (SIGSEGV) on this file; stopped"
    if command == ["scan"]:
        assert lines[1:] == ["ckptscan: scan stopped: no report written; scan with --jobs 2 to report this file "
                             "and the others"]
    else:
        assert lines[1:] == []
    assert "Traceback" not in res.stderr


def test_a_reader_crash_with_jobs_reports_the_file_and_scans_the_others(tmp_path):
    """What the crash line points to: with ``--jobs`` the pool reports the dead worker's
    file and goes on (already so before the supervisor named crashes; kept as a guard)."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "boom.h5").write_bytes((FIXTURES / "tf2" / "seed.h5").read_bytes())
    (folder / "ok.h5").write_bytes((FIXTURES / "tf2" / "seed.h5").read_bytes())
    out = tmp_path / "report.json"
    res = _program(_CRASH_ON, "scan", "--jobs", "2", "--format", "json", "-o", str(out), str(folder))
    assert res.returncode == 2, res.stderr
    files = {os.path.basename(f["path"]): f for f in json.loads(out.read_text())["files"]}
    assert files["ok.h5"]["status"] == "scanned"
    assert files["boom.h5"]["status"] != "scanned"
