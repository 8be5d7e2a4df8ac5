"""The exception family, the error translation at the format boundary, and the time limit."""

from __future__ import annotations

import json
import pickle
import signal
import time
import zipfile
import zlib

import h5py
import pytest

from ckptscan import errors
from ckptscan.errors import (
    CkptscanError,
    FileTimeoutError,
    LimitExceededError,
    MalformedArchiveError,
    NotAnArchiveError,
    PatchRefusedError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from ckptscan.formats._errors import Refused, parse_json, translate_errors
from ckptscan.runtime.bounds import MAX_JSON_DEPTH
from ckptscan.runtime.timeout import file_timeout


def test_tree():
    """The tree drawn in the module docstring is the real one."""
    assert issubclass(UnsafeArchiveError, MalformedArchiveError)
    assert issubclass(FileTimeoutError, LimitExceededError)
    for cls in (NotAnArchiveError, UnsupportedFormatError, MalformedArchiveError, LimitExceededError, PatchRefusedError):
        assert cls.__bases__ == (CkptscanError,)
        assert cls.__name__ in errors.__doc__
    assert "UnsafeArchiveError" in errors.__doc__ and "FileTimeoutError" in errors.__doc__


def test_message_is_path_colon_reason_and_survives_pickling():
    exc = UnsafeArchiveError("/data/m.keras", "x is a soft link to /y; links are never followed")
    assert str(exc) == "/data/m.keras: x is a soft link to /y; links are never followed"
    back = pickle.loads(pickle.dumps(exc))  # process pools send errors back to the parent
    assert type(back) is UnsafeArchiveError and str(back) == str(exc)
    assert (back.path, back.reason) == (exc.path, exc.reason)


def _raise(exc):
    def f():
        raise exc
    return f


def _h5_missing():
    h5py.File("/nonexistent/ckptscan/x.h5", "r")


MAPPED = [
    # raised below the boundary                             class                    exact reason
    (_raise(zipfile.BadZipFile("File is not a zip file")), MalformedArchiveError, "corrupt zip archive (File is not a zip file)"),
    (_raise(zlib.error("Error -3 while decompressing data: invalid block type")), MalformedArchiveError,
     "corrupt zip archive (Error -3 while decompressing data: invalid block type)"),
    (_raise(EOFError()), MalformedArchiveError, "corrupt zip archive (EOFError)"),
    (lambda: json.loads("{"), MalformedArchiveError,
     "invalid JSON (Expecting property name enclosed in double quotes, line 1 column 2)"),
    (lambda: b"\xff".decode("utf-8"), MalformedArchiveError, "text that is not UTF-8 (invalid start byte)"),
    (lambda: json.loads("[" * 100000 + "]" * 100000), MalformedArchiveError, "structure nested too deeply"),
    (_raise(MemoryError()), LimitExceededError, "out of memory while reading; refusing this file"),
    (_raise(Refused("x declares 9 bytes (too large)")), UnsafeArchiveError, "x declares 9 bytes (too large)"),
    (_raise(Refused("bad nesting", unsafe=False)), MalformedArchiveError, "bad nesting"),
    (_raise(OSError("Unable to synchronously open file (truncated file: eof = 96, sblock->base_addr = 0)")),
     MalformedArchiveError, "truncated HDF5 file (data ends before the structures it declares)"),
    (_raise(OSError("Unable to synchronously open file (file signature not found)")), MalformedArchiveError,
     "corrupt HDF5 file (superblock signature not found)"),
    (_raise(KeyError("Unable to synchronously open object (bad symbol table node signature)")), MalformedArchiveError,
     "corrupt HDF5 metadata (bad symbol table node signature)"),
    (_raise(OSError("Can't read data (addr overflow, addr = 1234, size = 8, eoa = 100)")), MalformedArchiveError,
     "truncated HDF5 file (data ends before the structures it declares)"),
    (_raise(TypeError("No NumPy equivalent for TypeBitfieldID exists")), MalformedArchiveError,
     "corrupt HDF5 metadata (No NumPy equivalent for TypeBitfieldID exists)"),
    (_raise(ValueError("Invalid dataspace")), MalformedArchiveError, "corrupt HDF5 metadata (Invalid dataspace)"),
]


@pytest.mark.parametrize("raiser,cls,reason", MAPPED, ids=[m[2][:40] for m in MAPPED])
def test_translate_errors_maps_each_lower_error(raiser, cls, reason):
    with pytest.raises(cls) as info:
        with translate_errors("f.h5"):
            raiser()
    assert type(info.value) is cls
    assert str(info.value) == f"f.h5: {reason}"


def test_translate_errors_real_h5py_error():
    with pytest.raises(MalformedArchiveError) as info, translate_errors("x.h5"):
        _h5_missing()
    assert str(info.value).startswith("x.h5: corrupt HDF5 metadata (")


def test_translate_errors_keeps_ckptscan_errors_and_ignores_others():
    original = UnsupportedFormatError("a", "b")
    with pytest.raises(UnsupportedFormatError) as info, translate_errors("other"):
        raise original
    assert info.value is original
    with pytest.raises(KeyboardInterrupt), translate_errors("x"):
        raise KeyboardInterrupt


def test_parse_json_depth_limit():
    ok = '{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    assert isinstance(parse_json(ok), dict)
    deep = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(Refused, match=f"config.json is nested more than {MAX_JSON_DEPTH} levels deep"):
        parse_json(deep, "config.json")


# --- file_timeout ----------------------------------------------------------------------------

def test_file_timeout_fires():
    t0 = time.monotonic()
    with pytest.raises(FileTimeoutError) as info:
        with file_timeout(0.2, "slow.keras"):
            while True:
                time.sleep(0.01)
    assert 0.15 < time.monotonic() - t0 < 2
    assert str(info.value) == "slow.keras: timed out after 0.2 s (--timeout)"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_file_timeout_restores_handler_and_disarms():
    before = signal.getsignal(signal.SIGALRM)
    with file_timeout(5, "a"):
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.01)


@pytest.mark.parametrize("seconds", [None, 0, -1])
def test_file_timeout_disabled(seconds):
    with file_timeout(seconds, "a"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_file_timeout_nested_keeps_outer_deadline():
    with pytest.raises(FileTimeoutError, match="outer"):
        with file_timeout(0.3, "outer"):
            with file_timeout(0.1, "inner-1"):
                pass  # finishes in time; the outer timer must be re-armed
            with file_timeout(10, "inner-2"):  # longer than what is left: outer still fires
                time.sleep(1)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_file_timeout_outside_main_thread_is_a_no_op():
    import threading

    seen = []

    def run():
        with file_timeout(0.01, "t"):
            time.sleep(0.05)
        seen.append(True)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [True]
