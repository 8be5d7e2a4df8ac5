"""Hostile and broken files: never crash, never hang, never write, never execute.

Every hand-made case (``hostile.crafted_cases``, built from the real fixtures) goes
through every reading command (``inspect``, ``scan``, ``fix``; each must be registered)
in a worker under the CLI's memory cap (768 MiB). Each must exit 2 with exactly the one
line ``ckptscan: error: <file>: <reason>`` — the exact reason is asserted — quickly, with
its own peak RSS below 1 GiB, leaving the file byte-identical and no file behind.
"""

from __future__ import annotations

import base64
import marshal
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hostile as H
from conftest import ROOT, fixture_path, run_cli

COMMANDS = ("inspect", "scan", "fix")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """All crafted hostile files, by name."""
    built = H.crafted_cases(tmp_path_factory.mktemp("hostile"))
    return {c.name: c for c in built}


@pytest.fixture(scope="module")
def worker():
    """One memory-limited ckptscan worker for the module."""
    with H.Worker() as w:
        yield w


def test_suite_covers_every_named_malformation(cases):
    """The suite really contains each kind of hostile input the issue names."""
    for needle in ("empty", "random_bytes", "wrong_magic_h5", "wrong_magic_zip", "hdf5_not_keras",
                   "keras_without_weights", "keras_compressed_truncated_h5", "keras_zip_bomb_declared",
                   "keras_traversal_member", "v3_soft_link", "v3_external_link", "v3_external_storage",
                   "v3_virtual_passwd", "v3_virtual_other_h5", "v3_shape_bomb_chunked", "v3_shape_bomb_contiguous",
                   "legacy_external_storage", "keras_dtype_compound", "v3_dtype_vlen_float", "v3_dtype_vlen_string",
                   "v3_huge_attribute", "legacy_huge_layer_names", "v3_deep_groups", "v3_hard_link_cycle",
                   "keras_config_invalid", "keras_config_huge", "keras_config_deep_recursion",
                   "sharded_traversal", "v3_hdf5_alloc_bomb", "keras_hdf5_alloc_bomb",
                   "keras_compressed_hdf5_alloc_bomb", "v3_deep_groups_12000", "keras_deep_groups_12000",
                   "legacy_deep_weight_name", "legacy_deep_unlisted"):
        assert needle in cases, needle
    assert len(cases) >= 70


@pytest.mark.parametrize("command", COMMANDS)
def test_every_hostile_case_exit_2_one_exact_line(cases, worker, command):
    """Exit 2, the exact one-line reason, no traceback, < deadline, file unchanged, and each
    case's own peak RSS below ``hostile.RSS_BOUND`` (checked per input by the contract)."""
    assert command in worker.commands, f"`ckptscan {command}` is not registered"
    failures = []
    for case in cases.values():
        res = worker.run(worker.argv(command, case.path), digest=case.path)
        try:
            if case.reason is None:  # odd but legitimate (integer weights): read, never crash
                H.check_sane(res, case.path, may_write=command == "fix")
                assert res["rc"] in (0, 1), res["stderr"]
                continue
            reason = H.check_error(res, case.path, summary=H.summary_prefix(command))
            assert reason == case.reason, f"reason {reason!r} != {case.reason!r}"
        except AssertionError as exc:
            failures.append(f"{case.name}: {exc}")
    assert not failures, "\n".join(failures)
    assert res["maxrss"] < 1 << 30, f"worker peaked at {res['maxrss'] >> 20} MiB"


def test_real_process_prints_exactly_one_line(cases):
    """A sample through a real ``python -m ckptscan`` process: the true stderr is one line."""
    for name in ("v3_external_link", "legacy_virtual_passwd", "keras_shape_bomb_gzip", "keras_zip_bomb_declared",
                 "keras_config_deep_recursion", "sharded_traversal", "keras_compressed_truncated_h5",
                 "v3_deep_groups_12000", "legacy_deep_weight_name"):
        case = cases[name]
        before = H.sha256(case.path)
        out = run_cli("inspect", case.path, timeout=60, process=True)
        assert out.returncode == 2, (name, out.stderr)
        assert out.stderr == f"ckptscan: error: {case.path}: {case.reason}\n", name
        assert out.stdout == ""
        assert H.sha256(case.path) == before


def test_integer_weights_are_reported_not_refused(cases, worker):
    """An int32 tensor where a float weight was is read and shown with its dtype."""
    res = worker.run(["inspect", "--json", str(cases["v3_dtype_int"].path)])
    assert res["rc"] == 0, res["stderr"]
    assert '"dtype": "int32"' in res["stdout"]


def test_links_are_never_followed(tmp_path):
    """A virtual dataset over /etc/passwd-like data: ckptscan never reads the target."""
    import h5py
    import numpy as np

    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = np.full(4, 7.0, dtype="float32")
    src = H.seed_files()["weights_h5"]
    hostile = tmp_path / "vds.weights.h5"

    def edit(f, ds):
        del f[ds]
        layout = h5py.VirtualLayout(shape=(4,), dtype="float32")
        layout[:] = h5py.VirtualSource(str(secret), "x", shape=(4,))
        f.create_virtual_dataset(ds, layout)

    H._edit_h5(src, hostile, edit)
    os.chmod(secret, 0)  # any attempt to open the target would now fail loudly
    try:
        from ckptscan import open_checkpoint
        from ckptscan.errors import UnsafeArchiveError

        atime = secret.stat().st_atime_ns
        with pytest.raises(UnsafeArchiveError, match="virtual dataset; links out of the file are never followed"):
            open_checkpoint(hostile)
        assert secret.stat().st_atime_ns == atime
    finally:
        os.chmod(secret, 0o644)


# --- never execute -------------------------------------------------------------------------

def test_lambda_payload_is_live_when_executed(tmp_path):
    """Control: the payload the next test plants really writes its marker when run."""
    marker = tmp_path / "control-marker"
    code = marshal.loads(base64.b64decode(H.lambda_payload(marker)))
    types.FunctionType(code, {"__builtins__": __builtins__})(1)
    assert marker.read_text() == "executed"


@pytest.mark.parametrize("command", COMMANDS)
def test_lambda_in_config_is_never_executed(tmp_path, command):
    """A .keras whose config carries a marshalled Lambda: reading it never runs it."""
    marker = tmp_path / "lambda-was-executed"
    target = H.lambda_keras(H.seed_files()["keras"], tmp_path / "lambda.keras", marker)
    extra = ("--dry-run",) if command == "fix" else ()
    out = run_cli(command, *extra, target, timeout=120)
    assert "Traceback" not in out.stderr
    assert out.returncode in (0, 1, 2), out.stderr
    assert not marker.exists(), "the Lambda payload was executed"


def test_inspect_lambda_keras_reads_the_weights(tmp_path):
    """The Lambda case is not refused: its weights are still listed (config is data)."""
    marker = tmp_path / "m"
    target = H.lambda_keras(H.seed_files()["keras"], tmp_path / "lambda.keras", marker)
    out = run_cli("inspect", "--json", target)
    assert out.returncode == 0, out.stderr
    assert '"variables"' in out.stdout
    assert not marker.exists()


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "copyreg"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def test_no_unpickling_or_evaluation_in_source():
    """No module of ckptscan imports a deserialiser of code or calls eval/exec."""
    import ast

    problems = []
    for path in sorted((ROOT / "ckptscan").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            problems += [f"{path.name}:{node.lineno} imports {n}" for n in names if n in FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                builtin = isinstance(fn, ast.Name) or (isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "builtins")
                if name in FORBIDDEN_CALLS and builtin:
                    problems.append(f"{path.name}:{node.lineno} calls {name}()")
                if name in ("load", "loads") and any(k.arg == "allow_pickle" for k in node.keywords):
                    problems.append(f"{path.name}:{node.lineno} loads with allow_pickle")
                reader = "formats" in path.parts or path.name == "naming.py" or "runtime" in path.parts
                if name == "import_module" and reader:  # readers never import what a file names
                    problems.append(f"{path.name}:{node.lineno} imports a module named at run time")
    assert not problems, problems


# --- no leaks after failing opens ------------------------------------------------------------

def test_failing_opens_leave_no_temp_files_or_handles(tmp_path, monkeypatch):
    """100 failing opens of a compressed-member .keras: temp dir stays empty, no fd leaks."""
    import tempfile
    import zipfile

    from ckptscan import open_checkpoint
    from ckptscan.errors import CkptscanError

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seed = H.seed_files()["keras"]
    with zipfile.ZipFile(seed) as z:
        inner = z.read("model.weights.h5")
    bad = []
    # a truncated HDF5 member (fails in h5py), an HDF5 with a link (fails while indexing)
    bad.append(H.rezip(seed, tmp_path / "trunc.keras", replace={"model.weights.h5": inner[:4000]},
                       compress={"model.weights.h5": zipfile.ZIP_DEFLATED}))
    linked = tmp_path / "linked.keras"
    H._keras_with_h5(seed, linked, lambda f, ds: (f.__delitem__(ds), f.__setitem__(ds, __import__("h5py").ExternalLink("/etc/passwd", "/x"))))
    bad.append(H.rezip(linked, tmp_path / "linked_deflated.keras", compress={"model.weights.h5": zipfile.ZIP_DEFLATED}))
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(100):
        with pytest.raises(CkptscanError):
            open_checkpoint(bad[i % 2])
    assert os.listdir(scratch) == []
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    # and a healthy compressed one cleans up on close
    good = H.rezip(seed, tmp_path / "good_deflated.keras", compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
    with open_checkpoint(good) as ckpt:
        assert ckpt.variables and len(os.listdir(scratch)) == 1
    assert os.listdir(scratch) == []


def test_compressed_member_reads_like_stored(tmp_path):
    """A deflated model.weights.h5 is legitimate: same variables as the stored original."""
    import zipfile

    from ckptscan import open_checkpoint

    seed = H.seed_files()["keras"]
    deflated = H.rezip(seed, tmp_path / "deflated.keras", compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
    with open_checkpoint(seed) as a, open_checkpoint(deflated) as b:
        assert [(v.path, v.shape, v.dtype) for v in a.variables] == [(v.path, v.shape, v.dtype) for v in b.variables]
        va, vb = a.variables[0], b.variables[0]
        assert (a.read(va) == b.read(vb)).all()


# --- the time limit ----------------------------------------------------------------------------

def test_inspect_timeout_is_one_clean_line():
    """``--timeout`` fires on a real file: exit 2, one line naming the limit.

    A real process: a timeout this short fires before ``file_timeout`` restores its state,
    which then leaks into later calls of the same process (tests/runtime/test_timeout_state.py)."""
    big = H.seed_files()["legacy_h5"]
    out = run_cli("inspect", "--timeout", "0.000001", big, process=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"ckptscan: error: {big}: timed out after 1e-06 s (--timeout)\n"


def test_hostile_worker_refuses_unbounded_allocation():
    """Control for the memory bound: the worker's cap (the CLI's --max-memory mechanism)
    really stops a huge allocation, and the process goes on after it."""
    code = (f"import sys\nfrom ckptscan.runtime import memory as limits\nassert limits.apply_memory_cap({H.WORKER_MEMORY})\n"
            "import numpy as np\ntry:\n np.ones(10**10, dtype='f4')\nexcept MemoryError:\n"
            " limits.memory_exhausted(); limits.memory_recover(); np.ones(10**7); sys.exit(7)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 7


# --- bulk runs go on -----------------------------------------------------------------------------

def test_directory_scan_reports_broken_and_scans_healthy(cases, tmp_path):
    """A folder mixing hostile and healthy files: each broken one is an error with its
    exact reason; every healthy one gets exactly the result it gets when scanned alone."""
    import json
    import shutil

    folder = tmp_path / "bulk"
    folder.mkdir()
    seeds = H.seed_files()
    healthy = [seeds["keras"], seeds["legacy_h5"]]
    healthy.append(fixture_path("k3", "seed_broken.keras"))  # readable, with findings
    for src in healthy:
        shutil.copyfile(src, folder / src.name)
    hostile = ["v3_external_link", "keras_zip_bomb_declared", "keras_compressed_truncated_h5", "legacy_virtual_passwd"]
    for name in hostile:
        shutil.copyfile(cases[name].path, folder / cases[name].path.name)
    out = run_cli("scan", "--format", "json", folder, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    for name in hostile:
        rec = by_name[cases[name].path.name]
        assert rec["status"] == "error", rec
        assert rec["reason"] == cases[name].reason
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("ckptscan: error:")]
    assert len(errors) == len(hostile)

    def comparable(rec):
        return {k: v for k, v in rec.items() if k not in ("path", "seconds")}

    for src in healthy:
        alone = run_cli("scan", "--format", "json", folder / src.name, timeout=300)
        assert alone.returncode in (0, 1), alone.stderr
        (single,) = json.loads(alone.stdout)["files"]
        assert by_name[src.name]["status"] == "scanned"
        assert comparable(by_name[src.name]) == comparable(single), src.name
