"""TensorFlow + tf-keras as the oracle for the TensorFlow-format fixtures (issue 14).

ckptscan never imports TensorFlow; the tests that check it against TensorFlow run
``tests/tf_child.py`` under a separate interpreter: ``$CKPTSCAN_TF_PYTHON``, else
``<repo>/.tfvenv/bin/python`` (``.ci/run`` creates ``.tfvenv`` with ``tensorflow-cpu`` and
``tf-keras`` 2.21). Missing: a skip locally, a failure under ``CI=true``.

:func:`tf_session` runs ONE child for the whole run, shared by the pytest-xdist workers
(importing TensorFlow costs seconds): for every fixture in :data:`FIXTURES_TF` it restores the committed checkpoint
and, for those with faults, a copy repaired by ``ckptscan fix`` (run here, in process,
before the child starts) and reports what tf-keras sees (see ``tf_child.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

TF = FIXTURES / "tfckpt"
CHILD = Path(__file__).resolve().parent / "tf_child.py"
CHILD_TIMEOUT = 600  # seconds for all jobs; about 25 s on a 2-core machine


@dataclass(frozen=True)
class TfFixture:
    """One committed TensorFlow-format fixture and how tf-keras restores it (as
    ``fixtures/gen_tfckpt.py`` built it)."""

    name: str
    kind: str
    """``save_weights``, ``checkpoint`` (tf.train.Checkpoint), ``savedmodel`` or ``tf1``."""
    folder: str
    """The fixture's folder in ``fixtures/tfckpt/`` (copied whole for the fix)."""
    prefix: str = ""
    """The checkpoint inside the folder (a prefix), or "" for the folder itself."""
    config: str = ""
    """The model config (``model.to_json()``) tf-keras builds the model from and ckptscan names with."""
    optimizer: str | None = None
    policy: str | None = None
    input: dict = field(default_factory=dict)
    fix_args: tuple[str, ...] | None = None
    """``ckptscan fix`` options for a fixture with faults; None for a clean one."""
    predict_broken: str = ""
    """What ``predict`` shows on the unrepaired file: ``nonfinite`` or ``collapsed`` (every
    input gives the same output: NaN BN statistics feeding a ReLU, which TF maps to 0 on
    some CPUs; on others the output is NaN)."""

    def path(self, root: Path) -> Path:
        return root / self.folder / self.prefix if self.prefix else root / self.folder

    def config_path(self) -> str:
        return str(TF / self.config) if self.config else ""


IMG8 = {"shape": [4, 8, 8, 3]}
FIXTURES_TF = [
    TfFixture("seed_broken_sw", "save_weights", "seed_broken_sw", "ckpt", "seed.config.json", "adam",
              input={"shape": [4, 32, 32, 3]}, predict_broken="collapsed",
              fix_args=("--include-optimizer", "--config", str(TF / "seed.config.json"))),
    TfFixture("nested_broken_sm", "savedmodel", "nested_broken_sm", input=IMG8, predict_broken="nonfinite",
              fix_args=("--value", "0")),
    TfFixture("mgr", "checkpoint", "mgr", "", "nested.config.json", "adam", input=IMG8, predict_broken="nonfinite",
              fix_args=("--value", "0")),
    TfFixture("mgr_ckpt1", "checkpoint", "mgr", "ckpt-1", "nested.config.json", "adam", input=IMG8),
    TfFixture("bidi_sw", "save_weights", "bidi_sw", "ckpt", "bidi_sw.config.json", "adam",
              input={"shape": [4, 6], "dtype": "int32", "high": 20}),
    TfFixture("misc_sw", "save_weights", "misc_sw", "ckpt", "misc_sw.config.json", input={"shape": [4, 4, 6]}),
    TfFixture("mixed16_sw", "save_weights", "mixed16_sw", "ckpt", "mixed16_sw.config.json", "adam",
              "mixed_float16", input=IMG8),
    TfFixture("tf1", "tf1", "tf1", "model.ckpt", input=IMG8, predict_broken="nonfinite", fix_args=()),
]
BY_NAME = {f.name: f for f in FIXTURES_TF}
BROKEN = [f.name for f in FIXTURES_TF if f.fix_args is not None]


# --- the interpreter -------------------------------------------------------------------------------


def tf_python() -> str | None:
    """``$CKPTSCAN_TF_PYTHON``, else ``.tfvenv/bin/python`` of the repository, if it exists."""
    env = os.environ.get("CKPTSCAN_TF_PYTHON")
    cand = Path(env) if env else ROOT / ".tfvenv" / "bin" / "python"
    return str(cand) if cand.is_file() and os.access(cand, os.X_OK) else None


def need_tf() -> str:
    """The TF interpreter; a skip locally, a failure under ``CI=true`` when there is none."""
    py = tf_python()
    if py is not None:
        return py
    where = os.environ.get("CKPTSCAN_TF_PYTHON") or str(ROOT / ".tfvenv" / "bin" / "python")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"TensorFlow interpreter {where} is missing on CI (.ci/run creates .tfvenv with "
                    "tensorflow-cpu + tf-keras)", pytrace=False)
    pytest.skip(f"no TensorFlow interpreter ({where}; python3 -m venv .tfvenv && .tfvenv/bin/pip install "
                "tensorflow-cpu==2.21.0 tf-keras==2.21.0, or set CKPTSCAN_TF_PYTHON)")


def run_child(python: str, jobs: list[dict]) -> dict:
    """Run ``tf_child.py`` once over ``jobs``; its ``results`` by job id."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.run([python, str(CHILD)], input=json.dumps({"jobs": jobs}), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"tf_child.py exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    doc = json.loads(proc.stdout)
    assert doc["versions"]["tf_keras"].startswith("2."), doc["versions"]
    return doc["results"]


# --- the two sides, as comparable records ------------------------------------------------------------


def tf_records(result: dict) -> dict[tuple, str]:
    """``{(kind, names..., shape, dtype): sha256}`` of what tf-keras reported."""
    out = {}
    for v in result["variables"]:
        shape = tuple(v["shape"])
        if v["kind"] == "weight":
            key = ("weight", v["layer_path"], v["name"], shape, v["dtype"])
        elif v["kind"] == "slot":
            key = ("slot", v["slot_of"], v["slot"], shape, v["dtype"])
        elif v["kind"] == "state":
            key = ("state", v["path"], shape, v["dtype"])
        else:
            key = (v["kind"], v.get("path", ""), shape, v["dtype"])
        assert key not in out, f"tf-keras reported {key} twice"
        out[key] = v["sha256"]
    return out


def ckptscan_records(path, config: str = "") -> tuple[dict[tuple, str], dict[str, tuple]]:
    """ckptscan's inventory (``ckptscan.open_checkpoint``) as the same records, each with
    the sha256 of the tensor ckptscan reads under that name; and ``{variable path: record key}``."""
    from ckptscan import open_checkpoint

    out, by_path = {}, {}
    with open_checkpoint(path, config=config or None) as ck:
        for v in ck.variables:
            shape = tuple(v.shape)
            if v.kind == "weight":
                key = ("weight", v.layer_path, v.name, shape, v.dtype)
            elif v.kind == "optimizer" and v.path in ck.slots:
                key = ("slot", *ck.slots[v.path], shape, v.dtype)
            elif v.kind == "optimizer":
                key = ("state", v.path, shape, v.dtype)
            else:
                key = (v.kind, v.path, shape, v.dtype)
            assert key not in out, f"ckptscan reported {key} twice"
            out[key] = hashlib.sha256(ck.read(v).tobytes()).hexdigest()
            by_path[v.path] = key
        assert ck.integrity_failures == []
    return out, by_path


# --- the session -------------------------------------------------------------------------------------


@dataclass
class Fixed:
    """A fixture copy after ``ckptscan fix``."""

    folder: Path
    exit_code: int
    output: str
    manifest: dict


@dataclass
class TfSession:
    """What the one TF child reported: ``original[name]`` for the committed fixture,
    ``fixed[name]`` for its repaired copy; ``repairs[name]`` is that copy."""

    original: dict[str, dict]
    fixed: dict[str, dict]
    repairs: dict[str, Fixed]


_SESSION: dict[str, TfSession] = {}


def _fix(fx: TfFixture, workdir: Path) -> Fixed:
    from ckptscan.cli import main

    folder = workdir / fx.folder
    if not folder.exists():
        shutil.copytree(TF / fx.folder, folder)
    manifest = workdir / f"{fx.name}.manifest.json"
    buf = StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        code = main(["fix", *fx.fix_args, "--manifest", str(manifest), str(fx.path(workdir))])
    doc = json.loads(manifest.read_text()) if manifest.exists() else {}
    return Fixed(folder, int(code), buf.getvalue(), doc)


def _job(fx: TfFixture, job_id: str, root: Path) -> dict:
    return {"id": job_id, "kind": fx.kind, "path": str(fx.path(root)), "config": fx.config_path(),
            "optimizer": fx.optimizer, "policy": fx.policy, "input": fx.input}


def _shared_root(tmp_path_factory) -> Path:
    """The run's temporary root, shared by every pytest-xdist worker (as for ``hook_repo``)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def tf_session(tmp_path_factory) -> TfSession:
    """Fix a copy of every broken fixture, then one TF child over originals and copies.

    Once per run: the first pytest-xdist worker to need it computes it under a lock in the
    run's shared temporary root and writes what the child reported (and where the repaired
    copies are, which the tests only read) to ``tf_session.json``; the other workers read
    that instead of fixing the copies and starting TensorFlow again."""
    python = need_tf()
    if "s" not in _SESSION:
        import fcntl
        import tempfile

        root = _shared_root(tmp_path_factory)
        done = root / "tf_session.json"
        with open(root / "tf_session.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if done.is_file():
                doc = json.loads(done.read_text())
            else:
                workdir = Path(tempfile.mkdtemp(prefix="tf_fixed", dir=root))
                repairs = {name: _fix(BY_NAME[name], workdir) for name in BROKEN}
                jobs = [_job(fx, "orig:" + fx.name, TF) for fx in FIXTURES_TF]
                jobs += [_job(BY_NAME[name], "fixed:" + name, workdir) for name in BROKEN]
                results = run_child(python, jobs)
                doc = {"original": {fx.name: results["orig:" + fx.name] for fx in FIXTURES_TF},
                       "fixed": {name: results["fixed:" + name] for name in BROKEN},
                       "repairs": {name: {"folder": str(r.folder), "exit_code": r.exit_code, "output": r.output,
                                          "manifest": r.manifest} for name, r in repairs.items()}}
                tmp = done.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc))
                tmp.replace(done)
        _SESSION["s"] = TfSession(
            original=doc["original"],
            fixed=doc["fixed"],
            repairs={name: Fixed(Path(r["folder"]), r["exit_code"], r["output"], r["manifest"])
                     for name, r in doc["repairs"].items()},
        )
    return _SESSION["s"]
