"""The memory cap (``--max-memory`` / ``CKPTSCAN_MAX_MEMORY``): bounded memory on every code path.

``tests/data/hdf5_alloc_bomb.weights.h5`` (7 KB, a minimised fuzzer find) and
``tests/data/hdf5_btree_loop.keras`` make libhdf5 allocate without end inside one C call
(~450 MB/s, tens of GB until the kernel's OOM killer without a cap). Every CLI run here is
a real ``python -m ckptscan`` process (supervisor + worker + any pool workers) whose peak
RSS is taken from ``os.wait4`` (the largest of the process and every descendant it
waited for), in a small spawner so that the size of this test process is not counted
(``_SPAWNER``). A safety net (``RLIMIT_DATA`` hard limit of 3 GiB set before exec) keeps a
regression from taking the machine down; the caps under test are all below it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, ROOT

from ckptscan.runtime import memory as limits

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA bounds mmap on Linux")

DATA = ROOT / "tests" / "data"
BOMB = DATA / "hdf5_alloc_bomb.weights.h5"
BOMB_KERAS = DATA / "hdf5_btree_loop.keras"
GOOD = FIXTURES / "k3" / "seed.keras"
BROKEN = FIXTURES / "k3" / "seed_broken.keras"
#: The cap the tests run under, and the bound on every run's peak RSS (cap + reserve).
CAP = "768M"
RSS_BOUND = 1 << 30
SAFETY_NET = 3 << 30
BAD_OUTPUT = ("Traceback", "Exception ignored", "MemoryError", "HDF5-DIAG", "internal error", "Segmentation")


def _net() -> None:  # pragma: no cover - runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (SAFETY_NET, SAFETY_NET))


#: Runs the command from a small process, so that its peak RSS is the command's own: a child
#: forked straight from pytest counts pytest's whole image (hundreds of MiB once Keras and JAX
#: are loaded) in ``ru_maxrss`` even after ``exec``. argv: safety net, result file, command...
_SPAWNER = """
import json, os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[1]), int(sys.argv[1])))
p = subprocess.Popen(sys.argv[3:])
_, status, usage = os.wait4(p.pid, 0)
p.returncode = 0  # reaped by wait4: keep Popen from waiting again
with open(sys.argv[2], "w") as fh:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024], fh)
"""


def _cli(*args, env: dict | None = None, timeout: float = 120) -> tuple[int, str, str, int]:
    """Run ``python -m ckptscan ARGS`` (under the :data:`SAFETY_NET`); returns (exit code,
    stdout, stderr, peak RSS bytes of the command and the processes it started)."""
    environ = {k: v for k, v in os.environ.items() if k != limits.MEMORY_ENV}
    environ.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        subprocess.run([sys.executable, "-c", _SPAWNER, str(SAFETY_NET), result.name, sys.executable, "-m",
                        "ckptscan", *map(str, args)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                       env=environ, timeout=timeout * 2, check=True)
        code, rss = json.load(result)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(), err.read().decode(), rss


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reason(cap: str = "768 MiB") -> str:
    return f"memory limit of {cap} exceeded while reading (--max-memory)"


def _clean(text: str) -> None:
    for bad in BAD_OUTPUT:
        assert bad not in text, f"{bad!r} in output:\n{text[-3000:]}"


# --- the fixture ----------------------------------------------------------------------------


def test_bomb_fixture_is_small_and_allocates_past_any_cap():
    """Control: the 7 KB file really makes libhdf5 allocate until the cap stops it
    (in-process, under a 512 MiB cap: the reader reports the cap, not a format error)."""
    assert BOMB.stat().st_size < 16 << 10
    code = f"""
import sys
from ckptscan.runtime import memory as limits
from ckptscan.errors import LimitExceededError
from ckptscan.formats import open_checkpoint
assert limits.apply_memory_cap(512 << 20) == 512 << 20
try:
    open_checkpoint({str(BOMB)!r})
except LimitExceededError as exc:
    print(exc.reason)
    sys.exit(0)
sys.exit(9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         preexec_fn=_net)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _reason("512 MiB")


# --- every command: exit 2, one line, no traceback, file unchanged, bounded RSS -------------------


@pytest.mark.parametrize("bomb", [BOMB, BOMB_KERAS], ids=["weights_h5", "keras"])
@pytest.mark.parametrize("command", [["inspect"], ["scan"], ["fix", "--dry-run"], ["fix"]], ids=" ".join)
def test_alloc_bomb_exit_2_one_line_bounded_rss(tmp_path, bomb, command):
    path = tmp_path / bomb.name
    shutil.copyfile(bomb, path)
    before = _sha(path)
    rc, out, err, rss = _cli("--max-memory", CAP, *command, path)
    assert rc == 2, err
    lines = err.splitlines()
    assert lines[0] == f"ckptscan: error: {path}: {_reason()}"
    if command == ["inspect"]:
        assert lines == lines[:1] and out == ""
    else:  # scan and fix add their one summary line
        assert len(lines) == 2 and lines[1].startswith("ckptscan") and not lines[1].startswith("ckptscan: error")
    _clean(out + err)
    assert _sha(path) == before
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no journal, backup or temporary file
    assert rss < RSS_BOUND, f"peak RSS {rss >> 20} MiB"
    assert rss > 512 << 20  # it was the cap that ended it (the bomb ran into it)


def test_default_cap_is_2_gib(tmp_path):
    """No option, no environment: the default cap (2 GiB) ends the bomb; RSS stays below
    cap + reserve."""
    rc, out, err, rss = _cli("inspect", BOMB)
    assert rc == 2
    assert err == f"ckptscan: error: {BOMB}: {_reason('2.0 GiB')}\n"
    assert limits.DEFAULT_MAX_MEMORY == 2 << 30
    assert rss < limits.DEFAULT_MAX_MEMORY + limits.MEMORY_RESERVE, f"peak RSS {rss >> 20} MiB"


def test_environment_variable_sets_the_cap():
    rc, _, err, rss = _cli("inspect", BOMB, env={limits.MEMORY_ENV: "640M"})
    assert rc == 2
    assert err == f"ckptscan: error: {BOMB}: {_reason('640 MiB')}\n"
    assert rss < (640 << 20) + limits.MEMORY_RESERVE


@pytest.mark.parametrize("value, why", [("lots", "not a size: 'lots'"), ("10M", "below the minimum of 256 MiB")])
def test_bad_max_memory_is_a_usage_error(value, why):
    rc, _, err, _ = _cli("--max-memory", value, "inspect", GOOD)
    assert rc == 4
    assert why in err
    rc, _, err, _ = _cli("inspect", GOOD, env={limits.MEMORY_ENV: value})
    assert rc == 4
    assert why in err


def test_compressed_member_bomb_leaves_no_temporary_file(tmp_path):
    """The .keras path that inflates a compressed member to a temporary file first: the
    bomb inside it is stopped the same way and the temporary file is removed."""
    d = _folder(tmp_path)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    path = d / "c_bomb_deflated.keras"
    for command in (["inspect"], ["scan"], ["fix"]):
        rc, out, err, rss = _cli("--max-memory", CAP, *command, path, env={"TMPDIR": str(tmp)})
        assert rc == 2 and err.splitlines()[0] == f"ckptscan: error: {path}: {_reason()}"
        _clean(out + err)
        assert os.listdir(tmp) == [], command
        assert rss < RSS_BOUND


# --- bulk runs go on after a file hits the cap ------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    shutil.copyfile(BOMB, d / "a_bomb.weights.h5")
    shutil.copyfile(BOMB_KERAS, d / "b_bomb.keras")
    with zipfile.ZipFile(GOOD) as zin, zipfile.ZipFile(d / "c_bomb_deflated.keras", "w") as zout:
        for info in zin.infolist():  # the bomb as a compressed member: inflated to a temp file
            data = BOMB.read_bytes() if info.filename == "model.weights.h5" else zin.read(info.filename)
            zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    shutil.copyfile(GOOD, d / "d_good.keras")
    shutil.copyfile(BROKEN, d / "e_broken.keras")
    shutil.copyfile(BOMB, d / "f_bomb_again.weights.h5")
    shutil.copyfile(GOOD, d / "g_good.keras")
    return d


BOMBS = ("a_bomb.weights.h5", "b_bomb.keras", "c_bomb_deflated.keras", "f_bomb_again.weights.h5")


def _findings(doc: dict) -> list:
    return sorted((f["rule_id"], f["path"], f["severity"], f["message"]) for f in doc.get("findings") or [])


@functools.cache
def _scanned_alone(src: Path) -> dict:
    """The report entry of ``scan --format json SRC`` under the same cap, in its own process
    (a committed fixture, never modified: run once for the module)."""
    rc, out, err, _ = _cli("--max-memory", CAP, "scan", "--format", "json", src)
    _clean(out + err)
    return json.loads(out)["files"][0]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_directory_scan_reports_each_bomb_and_scans_the_rest(tmp_path, jobs):
    """Each bomb is one error line with the cap reason; every healthy file (before, between
    and after the bombs) gets the result it gets alone; pool workers are capped too."""
    d = _folder(tmp_path)
    digests = {p.name: _sha(p) for p in d.iterdir()}
    rc, out, err, rss = _cli("--max-memory", CAP, "scan", "--jobs", jobs, "--format", "json", d)
    assert rc == 2, err
    _clean(out + err)
    errors = sorted(ln for ln in err.splitlines() if ln.startswith("ckptscan: error:"))
    assert errors == sorted(f"ckptscan: error: {d / n}: {_reason()}" for n in BOMBS)
    doc = json.loads(out)
    files = {Path(f["path"]).name: f for f in doc["files"]}
    assert sorted(files) == sorted(digests)
    for name in BOMBS:
        assert (files[name]["status"], files[name]["reason"]) == ("error", _reason())
    for name, src in (("d_good.keras", GOOD), ("e_broken.keras", BROKEN), ("g_good.keras", GOOD)):
        alone = _scanned_alone(src)
        assert files[name]["status"] == alone["status"] == "scanned"
        assert _findings(files[name]) == _findings(alone)
        assert files[name]["variables_scanned"] == alone["variables_scanned"]
    assert _findings(files["e_broken.keras"])  # the broken fixture really has findings
    assert {p.name: _sha(p) for p in d.iterdir()} == digests
    assert rss < RSS_BOUND, f"peak RSS {rss >> 20} MiB"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_directory_fix_fails_the_bomb_and_fixes_the_broken_file(tmp_path, jobs):
    d = tmp_path / "run"
    d.mkdir()
    shutil.copyfile(BOMB, d / "a_bomb.weights.h5")
    shutil.copyfile(BROKEN, d / "b_broken.keras")
    bomb_sha, broken_sha = _sha(d / "a_bomb.weights.h5"), _sha(d / "b_broken.keras")
    rc, out, err, rss = _cli("--max-memory", CAP, "fix", "--jobs", jobs, d)
    _clean(out + err)
    assert [ln for ln in err.splitlines() if ln.startswith("ckptscan: error:")] == [
        f"ckptscan: error: {d / 'a_bomb.weights.h5'}: {_reason()}"]
    assert rc == 2
    assert _sha(d / "a_bomb.weights.h5") == bomb_sha
    assert _sha(d / "b_broken.keras") != broken_sha  # patched after the bomb, in the same process
    rc2, out2, err2, _ = _cli("--max-memory", CAP, "scan", "--format", "json", d / "b_broken.keras")
    assert rc2 == 0, out2 + err2  # and the patched file now scans clean
    assert rss < RSS_BOUND


# --- the cap does not hurt legitimate use ------------------------------------------------------------


def test_every_fixture_scans_the_same_under_the_minimum_cap():
    """All committed fixtures under the smallest cap accepted (256 MiB) give exactly the
    results they give with no cap (the 2 GB benchmark checkpoint: docs/fuzzing.md)."""
    folder = FIXTURES / "k3"
    rc0, out0, err0, _ = _cli("--max-memory", "0", "scan", "--format", "json", folder, timeout=600)
    rc1, out1, err1, rss = _cli("--max-memory", "256M", "scan", "--jobs", "2", "--format", "json", folder,
                                timeout=600)
    assert rc0 == rc1
    assert "memory limit" not in err1
    a = {f["path"]: (f["status"], _findings(f)) for f in json.loads(out0)["files"]}
    b = {f["path"]: (f["status"], _findings(f)) for f in json.loads(out1)["files"]}
    assert a == b and len(a) > 10
    assert rss < (256 << 20) + limits.MEMORY_RESERVE


# --- the mechanism -----------------------------------------------------------------------------------


def test_apply_memory_cap_sets_soft_and_hard_and_children_inherit():
    code = """
import os, resource, sys
from ckptscan.runtime import memory as limits
R = resource.RLIMIT_DATA
cap = limits.apply_memory_cap(1 << 30)
print(cap, *resource.getrlimit(R), os.environ[limits.MEMORY_ENV])
pid = os.fork()
if pid == 0:
    print("child", *resource.getrlimit(R), limits.memory_cap(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
limits.memory_exhausted()
print("exhausted", *resource.getrlimit(R))
limits.memory_recover()
print("recovered", *resource.getrlimit(R))
print("again", limits.apply_memory_cap(2 << 30), *resource.getrlimit(R))  # never above the hard limit
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    g, r = 1 << 30, limits.MEMORY_RESERVE
    assert out.stdout.splitlines() == [
        f"{g} {g} {g + r} {g}",
        f"child {g} {g + r} {g}",
        f"exhausted {g + r} {g + r}",
        f"recovered {g} {g + r}",
        f"again {g} {g} {g + r}",
    ]


def test_zero_means_no_cap():
    code = ("import resource\nfrom ckptscan.runtime import memory as limits\nbefore = resource.getrlimit(resource.RLIMIT_DATA)\n"
            "print(limits.apply_memory_cap(0), limits.memory_cap(), resource.getrlimit(resource.RLIMIT_DATA) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "None", "True"], out.stderr


def test_in_process_main_leaves_the_host_uncapped():
    code = (f"import resource\nfrom ckptscan.cli import main\nbefore = resource.getrlimit(resource.RLIMIT_DATA)\n"
            f"rc = main(['inspect', {str(GOOD)!r}])\nprint('RC', rc, resource.getrlimit(resource.RLIMIT_DATA) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != limits.MEMORY_ENV})
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("RC")] == ["RC 0 True"], out.stderr


def test_parse_and_format_sizes():
    assert limits.parse_size("2G") == limits.parse_size("2GiB") == limits.parse_size("2048m") == 2 << 30
    assert limits.parse_size("1.5G") == 3 << 29
    assert limits.parse_size(str(1 << 30)) == 1 << 30
    assert limits.parse_size("0") == 0
    for bad in ("", "-1G", "2X", "1e9", "100M"):
        with pytest.raises(ValueError):
            limits.parse_size(bad)
    assert [limits.format_size(n) for n in (2 << 30, 3 << 29, 768 << 20)] == ["2.0 GiB", "1.5 GiB", "768 MiB"]


def test_command_name_skips_the_max_memory_value():
    from ckptscan.cli.program import _command_name

    assert _command_name(["--max-memory", "1G", "scan", "x"]) == "scan"
    assert _command_name(["--max-memory=1G", "inspect", "x"]) == "inspect"
    assert _command_name(["fix", "--dry-run", "x"]) == "fix"


def test_heap_returns_to_the_cap_after_each_bomb():
    """libhdf5's free lists used to pin the freed heap after a bomb: the soft limit then
    ratcheted up by MEMORY_HEADROOM per bomb until ~1 MiB was left for the next healthy
    file (VmData 959 MiB under a 960 MiB soft limit after three bombs at a 768 MiB cap).
    Now each recovery gives the heap back and re-arms at the cap itself."""
    code = f"""
import importlib, resource, sys
from ckptscan.runtime import memory as limits
limits.apply_memory_cap(768 << 20)
scan = importlib.import_module("ckptscan.engine")
for _ in range(3):
    r = scan.scan_file({str(BOMB)!r})
    assert r.status == "error" and "memory limit" in r.reason, r.reason
good = scan.scan_file({str(BROKEN)!r})
limits.memory_recover()
print(good.status, len(good.findings), limits._mapped(), resource.getrlimit(limits._rlimit())[0])
"""
    env = {k: v for k, v in os.environ.items() if k != limits.MEMORY_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    status, findings, mapped, soft = out.stdout.split()
    assert (status, int(soft)) == ("scanned", 768 << 20)
    assert int(findings) > 0
    assert int(mapped) < 300 << 20, f"VmData {int(mapped) >> 20} MiB after the bombs"


def test_fix_of_a_few_nans_in_a_large_tensor_reads_only_those_elements(tmp_path):
    """Repairing 3 NaNs of a 256 MiB embedding under the smallest cap (256 MiB, of which
    Python, numpy and h5py take ~95): the planner reads the 3 elements, the writer patches
    them in place and verifies by streaming hashes. Reading the tensor whole (as ``fix``
    did until 2026-11-27: raw bits plus a float64 copy) could not fit."""
    import keras

    rows, dim = 65536, 1024  # 64 Mi float32 = 256 MiB
    # the table's values come from numpy (a zeros initializer spares Keras drawing 64 Mi
    # random numbers at build and again at load_model, before the weights replace them)
    model = keras.Sequential([keras.Input((4,), dtype="int32"),
                              keras.layers.Embedding(rows, dim, embeddings_initializer="zeros", name="emb"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, name="head")])
    table = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    bad = [(7, 3), (40000, 0), (65535, 1023)]
    for r, c in bad:
        table[r, c] = np.nan
    model.get_layer("emb").set_weights([table])
    path = tmp_path / "big_embedding.keras"
    model.save(path)
    del model

    # the worker's own peak (VmHWM, per process image): wait4's ru_maxrss would also count
    # this pytest process, whose pages a forked child holds until it execs
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))\n"
             "sys.argv = ['ckptscan', *sys.argv[1:]]\n"
             "from ckptscan.cli import main\n"
             "sys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != limits.MEMORY_ENV}
    res = subprocess.run([sys.executable, "-c", probe, "--max-memory", "256M", "fix", str(path), "--strategy", "value",
                          "--value", "0"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "error" not in res.stderr.lower(), res.stderr
    hwm_kib = int(next(ln for ln in res.stderr.splitlines() if ln.startswith("VmHWM")).split()[1])
    assert hwm_kib < 200 << 10, f"peak RSS {hwm_kib >> 10} MiB"

    fixed = keras.saving.load_model(path)
    after = np.asarray(fixed.get_layer("emb").embeddings)
    for r, c in bad:
        assert after[r, c] == 0.0
        table[r, c] = 0.0
    assert (after.shape, after.dtype) == (table.shape, table.dtype)
    differ = np.count_nonzero(after.view(np.uint32) != table.view(np.uint32))
    assert differ == 0, f"{differ} other values changed"  # every other value bit for bit
    tokens = np.array([[7, 40000, 65535, 1]], dtype="int32")
    assert np.isfinite(fixed.predict(tokens, verbose=0)).all()
