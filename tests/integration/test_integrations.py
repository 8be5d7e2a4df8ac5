"""The pre-commit hook and the GitHub Action, exercised by running them locally."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, need_module, run_cli
from precommit_hook import run_hook

yaml = need_module("yaml")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A project folder with a healthy and a broken checkpoint (and files the hook must skip)."""
    import keras

    d = tmp_path_factory.mktemp("proj")
    keras.utils.set_random_seed(5)
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    m = keras.Model(inp, x)
    (d / "models").mkdir()
    m.save(d / "models" / "good.keras")
    m.save(d / "models" / "good_legacy.h5")
    w = m.get_layer("bn").get_weights()
    w[3][2] = np.nan
    m.get_layer("bn").set_weights(w)
    m.save(d / "models" / "bad.keras")
    (d / "README.txt").write_text("not a model\n")
    (d / "weights.h5.bak").write_bytes(b"junk")
    return d


# --- pre-commit --------------------------------------------------------------------------------
def _hook() -> dict:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list) and len(hooks) == 1
    return hooks[0]


def test_precommit_manifest():
    hook = _hook()
    assert hook["id"] == "ckptscan" and hook["language"] == "python"
    assert hook["entry"] == "ckptscan scan --shard-sets --skip-non-keras --allow-empty"
    assert hook["require_serial"] is True  # one run sees a shard and its index together
    files = re.compile(hook["files"])
    for name in ("a.h5", "dir/b.hdf5", "c.keras", "x/y.weights.h5", "model.weights.json", "m/model_00001.weights.h5"):
        assert files.search(name), name
    for name in ("a.txt", "a.h5.bak", "package.json", "keras.py", "model.weights.json.bak"):
        assert not files.search(name), name


def _run_hook(repo: Path, staged: list[str]) -> subprocess.CompletedProcess:
    """What pre-commit does: filter the staged files by ``files``, run ``entry`` on them."""
    hook = _hook()
    pattern = re.compile(hook["files"])
    selected = [f for f in staged if pattern.search(f)]
    argv = shlex.split(hook["entry"])
    assert argv[0] == "ckptscan"
    # main(argv) in this process: the hook's behaviour, not its process
    return run_cli(*argv[1:], *hook.get("args", []), *selected, cwd=repo)


def test_precommit_hook_refuses_broken_checkpoint(repo):
    staged = ["README.txt", "weights.h5.bak", "models/good.keras", "models/bad.keras", "models/good_legacy.h5"]
    p = _run_hook(repo, staged)
    assert p.returncode == 1, p.stderr
    assert "models/bad.keras" in p.stdout and "BN001" in p.stdout
    assert p.stderr.strip().splitlines()[-1] == "ckptscan: 3 files scanned, 1 with errors: 1 error"


def test_precommit_hook_passes_healthy_checkpoints(repo):
    p = _run_hook(repo, ["README.txt", "models/good.keras", "models/good_legacy.h5"])
    assert p.returncode == 0, p.stdout + p.stderr


def test_shard_sets_resolve_to_their_index(tmp_path):
    from ckptscan.integrations.shardsets import resolve_shards

    for f in (ROOT / "fixtures" / "k3").glob("seed_broken_sharded*"):
        shutil.copy(f, tmp_path / f.name)
    other = tmp_path / "lone_00001.weights.h5"
    shutil.copy(ROOT / "fixtures" / "k3" / "seed.weights.h5", other)
    (tmp_path / "junk.weights.json").write_text("{not json")  # an unreadable index is not a resolver's business
    idx, s1, s2 = (str(tmp_path / n) for n in ("seed_broken_sharded.weights.json", "seed_broken_sharded_00001.weights.h5",
                                                "seed_broken_sharded_00002.weights.h5"))
    assert resolve_shards([s1]) == [idx]
    assert resolve_shards([s2, idx, s1, str(other)]) == [idx, str(other)]  # each set once, others untouched
    assert resolve_shards([str(tmp_path / "missing_00001.weights.h5")]) == [str(tmp_path / "missing_00001.weights.h5")]


def test_scan_shard_sets_names_the_variable(tmp_path):
    for f in (ROOT / "fixtures" / "k3").glob("seed_broken_sharded*"):
        shutil.copy(f, tmp_path / f.name)
    shards = sorted(p.name for p in tmp_path.glob("seed_broken_sharded_0000*.weights.h5"))
    alone = run_cli("scan", *shards, cwd=tmp_path)
    assert "NUM001  batch_normalization_21/vars/3" in alone.stdout  # what a shard alone says
    p = run_cli("scan", "--shard-sets", *shards, "seed_broken_sharded.weights.json", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "BN001   resnet101v2/post_bn/moving_variance" in p.stdout and "NUM001" not in p.stdout
    assert p.stderr.strip().splitlines()[-1].startswith("ckptscan: 1 file scanned, 1 with errors")


def test_scan_allow_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("no checkpoints here\n")
    assert run_cli("scan", tmp_path).returncode == 3
    assert run_cli("scan", tmp_path, "--allow-empty").returncode == 0


def test_scan_skip_non_keras_named(tmp_path):
    """pre-commit names every staged file: --skip-non-keras gives a named file the folder verdict."""
    data = _data_h5(tmp_path / "data.h5")
    raw = (K3 / "seed_legacy.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) * 999 // 1000])
    assert run_cli("scan", data).returncode == 2
    p = run_cli("scan", "--skip-non-keras", data, K3 / "seed.keras")
    assert p.returncode == 0 and "data.h5: HDF5 file, but not a Keras weight archive" in p.stdout, p.stdout + p.stderr
    p = run_cli("scan", "--skip-non-keras", "--allow-empty", tmp_path / "cut.h5")
    assert p.returncode == 2 and "cut.h5: truncated" in p.stderr, p.stderr


# --- the real pre-commit tool (tests/precommit_hook.py) ---------------------------------------
def _data_h5(path: Path) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f["measurements"] = np.arange(100, dtype="f4")
    return path


K3 = ROOT / "fixtures" / "k3"


def test_precommit_healthy_and_data_file_pass(hook_repo, tmp_path):
    data = _data_h5(tmp_path / "data.h5")
    p = run_hook(hook_repo, tmp_path, {"models/seed.keras": K3 / "seed.keras", "data/data.h5": data},
                  ["models/seed.keras", "data/data.h5"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"ckptscan \(Keras checkpoint health\)\.+Passed", p.stdout), p.stdout


def test_precommit_only_data_file_passes(hook_repo, tmp_path):
    data = _data_h5(tmp_path / "data.h5")
    p = run_hook(hook_repo, tmp_path, {"data.h5": data, "notes.txt": b"hello\n"}, ["data.h5", "notes.txt"])
    assert p.returncode == 0, p.stdout + p.stderr


def test_precommit_broken_shard_named_by_its_set(hook_repo, tmp_path):
    files = {f"ckpt/{f.name}": f for f in K3.glob("seed_broken_sharded*")}
    p = run_hook(hook_repo, tmp_path, files, ["ckpt/seed_broken_sharded_00001.weights.h5"])
    assert p.returncode == 1, p.stdout + p.stderr
    assert "- exit code: 1" in p.stdout
    assert "BN001   resnet101v2/post_bn/moving_variance" in p.stdout and "NUM001" not in p.stdout, p.stdout
    assert "ckpt/seed_broken_sharded.weights.json" in p.stdout


def test_precommit_truncated_h5_fails(hook_repo, tmp_path):
    raw = (K3 / "seed_legacy.h5").read_bytes()
    p = run_hook(hook_repo, tmp_path, {"seed.keras": K3 / "seed.keras", "cut.h5": raw[: len(raw) // 2]},
                  ["seed.keras", "cut.h5"])
    assert p.returncode == 1, p.stdout + p.stderr  # pre-commit's own code for a failed hook
    assert "- exit code: 2" in p.stdout, p.stdout
    assert re.search(r"^ckptscan: error: cut\.h5: .+$", p.stdout, re.M), p.stdout


# --- GitHub Action ---------------------------------------------------------------------------
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def _subst(text: str, ctx: dict) -> str:
    def one(m):
        expr = m.group(1)
        if expr.startswith("steps.") and expr not in ctx:  # GitHub: an unset output is ''
            return ""
        if expr not in ctx:
            raise KeyError(f"expression not supported by the local runner: {expr}")
        return str(ctx[expr])

    return _EXPR.sub(one, text)


def run_action_locally(workdir: Path, tmp: Path, inputs: dict[str, str]) -> dict:
    """Run the Action's shell steps the way the runner would (``uses:`` steps are checked, not run)."""
    action = _action()
    assert action["runs"]["using"] == "composite"
    ctx = {f"inputs.{k}": v.get("default", "") for k, v in action["inputs"].items()}
    ctx.update({f"inputs.{k}": v for k, v in inputs.items()})
    ctx["github.action_path"] = str(ROOT)
    out_file, summary = tmp / "github_output", tmp / "step_summary"
    out_file.write_text("")
    summary.write_text("")
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "python"  # `python` on PATH is this interpreter (a symlink would leave its venv)
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    ran = []
    outputs: dict[str, str] = {}
    for step in action["runs"]["steps"]:
        if "uses" in step:
            ran.append(("uses", step["uses"]))
            continue
        if step.get("id") == "install":  # ckptscan is installed in this environment already
            ran.append(("skipped", "install"))
            continue
        assert step["shell"] == "bash"
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
               "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary)}
        env.update({k: _subst(str(v), ctx) for k, v in (step.get("env") or {}).items()})
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", _subst(step["run"], ctx)], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        ran.append((step.get("id") or step["name"], p))
        if p.returncode != 0:
            break  # a failed step ends the job (later steps are skipped, as on GitHub)
        if step.get("id"):
            outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line)
            ctx.update({f"steps.{step['id']}.outputs.{k}": v for k, v in outputs.items()})
    return {"steps": ran, "outputs": outputs, "summary": summary.read_text()}


def test_action_manifest_wiring():
    action = _action()
    steps = action["runs"]["steps"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["with"]["sarif_file"] == "${{ steps.scan.outputs.sarif-file }}"
    assert "always()" in upload["if"]
    scan = next(s for s in steps if s.get("id") == "scan")
    assert scan["run"].strip() == "python -m ckptscan.integrations.github_action"
    assert set(action["outputs"]) >= {"exit-code", "sarif-file"}
    # no credentials or tokens are passed through inputs
    assert not any("token" in k or "secret" in k for k in action["inputs"])


def test_action_on_broken_checkpoint(repo, tmp_path):
    res = run_action_locally(repo, tmp_path, {"paths": "models"})
    steps = dict((name, p) for name, p in res["steps"] if not isinstance(p, str))
    scan = steps["scan"]
    assert scan.returncode == 0, scan.stderr  # the scan step itself never fails: the upload must run
    assert res["outputs"]["exit-code"] == "1"
    assert res["outputs"]["errors"] == "1" and res["outputs"]["files-scanned"] == "3"
    verdict = steps["Verdict"]
    assert verdict.returncode == 1  # the job fails at the end
    sarif = json.loads((repo / res["outputs"]["sarif-file"]).read_text())
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results
            if r["level"] == "error"] == [("BN001", "models/bad.keras")]
    s = res["summary"]
    assert s.startswith("## ❌ ckptscan\n")
    assert "| `models/bad.keras` | scanned | keras-zip | 1 | 0 | 0 |" in s
    assert "| error | BN001 | `models/bad.keras` | `bn/moving_variance` |" in s
    assert "ckptscan fix models/bad.keras" in s


def test_action_on_healthy_checkpoints(repo, tmp_path):
    res = run_action_locally(repo, tmp_path, {"paths": "models/good.keras models/good_legacy.h5", "sarif-file": "out.sarif"})
    steps = dict((name, p) for name, p in res["steps"] if not isinstance(p, str))
    assert res["outputs"]["exit-code"] == "0" and res["outputs"]["sarif-file"] == "out.sarif"
    assert steps["Verdict"].returncode == 0
    assert res["summary"].startswith("## ✅ ckptscan\n")
    assert json.loads((repo / "out.sarif").read_text())["runs"][0]["results"] == []


def test_action_bad_input_fails_scan_step(repo, tmp_path):
    res = run_action_locally(repo, tmp_path, {"paths": "models", "fail-on": "sometimes"})
    steps = dict((name, p) for name, p in res["steps"] if not isinstance(p, str))
    assert steps["scan"].returncode == 4
    assert "bad input fail-on='sometimes'" in steps["scan"].stderr
    assert "Verdict" not in steps


def test_action_declares_every_output_it_writes(repo, tmp_path):
    res = run_action_locally(repo, tmp_path, {"paths": "models"})
    assert set(res["outputs"]) == set(_action()["outputs"])
    for name, spec in _action()["outputs"].items():
        assert spec["value"] == f"${{{{ steps.scan.outputs.{name} }}}}"
    assert res["outputs"]["files"] == "3" and res["outputs"]["files-skipped"] == "0"
    assert res["outputs"]["files-unreadable"] == "0" and res["outputs"]["infos"] == "0"


def test_action_runs_the_cli_program(repo, tmp_path, monkeypatch):
    """The Action's command line is ``ckptscan scan`` with the inputs as its options."""
    from ckptscan.integrations.github_action import _argv, _inputs

    for k, v in {"FAIL_ON": "warning", "SELECT": "BN, NUM001", "IGNORE": "BN003", "INCLUDE_OPTIMIZER": "false",
                 "TIMEOUT": "7", "MAX_MEMORY": "1G", "JOBS": "2", "SETTINGS": "s.toml", "CONFIG": ""}.items():
        monkeypatch.setenv(f"INPUT_{k}", v)
    argv = _argv(_inputs(), ["a b.keras"], "/tmp/r.json")
    assert argv == [sys.executable, "-m", "ckptscan", "--max-memory", "1G", "scan", "a b.keras", "--format", "json",
                    "--output", "/tmp/r.json", "--fail-on", "warning", "--select", "BN", "--select", "NUM001",
                    "--ignore", "BN003", "--no-include-optimizer", "--settings", "s.toml", "--timeout", "7", "--jobs", "2"]


@pytest.mark.parametrize("jobs", ["2", "1"])
def test_action_on_hang_file_ends_within_timeout(repo, tmp_path, jobs, monkeypatch):
    """tests/data/hdf5_hang_legacy.h5 hangs libhdf5 in C: the supervisor (--jobs 1) or the pool
    (--jobs 2) stops it at --timeout (+ the hard grace, 1 s here); one line says why, the verdict is 2."""
    from ckptscan.runtime.watchdog import HARD_GRACE_ENV

    monkeypatch.setenv(HARD_GRACE_ENV, "1")  # the runner's environment reaches the step
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "hdf5_hang_legacy.h5", work / "hang.h5")
    shutil.copy(repo / "models" / "good.keras", work / "good.keras")
    timeout = 2
    t0 = time.monotonic()
    res = run_action_locally(work, tmp_path, {"paths": "hang.h5 good.keras", "timeout": str(timeout), "jobs": jobs,
                                              "max-memory": "1G"})
    took = time.monotonic() - t0
    assert took < timeout + 1 + 25, took  # + interpreter start-ups of the runner's steps
    steps = dict((name, p) for name, p in res["steps"] if not isinstance(p, str))
    assert steps["scan"].returncode == 0, steps["scan"].stderr
    assert res["outputs"]["exit-code"] == "2" and res["outputs"]["files-unreadable"] == "1"
    assert steps["Verdict"].returncode == 2
    lines = [ln for ln in steps["scan"].stderr.splitlines() if "hang.h5" in ln]
    assert lines == ["ckptscan: error: hang.h5: timed out after 2 s (--timeout); stuck in the HDF5 library, stopped"]
    sarif = json.loads((work / "ckptscan.sarif").read_text())
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["message"]["text"] for n in notes] == [lines[0].removeprefix("ckptscan: error: ")]
    assert "unreadable: timed out after 2 s" in res["summary"]
    if jobs == "2":  # the pool reports the other file too
        assert res["outputs"]["files-scanned"] == "1" and res["outputs"]["files"] == "2"


def test_action_honours_settings_file(repo, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(repo / "models" / "bad.keras", work / "bad.keras")
    res = run_action_locally(work, tmp_path, {"paths": "bad.keras"})
    assert res["outputs"]["exit-code"] == "1" and res["outputs"]["errors"] == "1"
    (work / ".ckptscan.toml").write_text('ignore = ["BN001"]\n')
    res = run_action_locally(work, tmp_path, {"paths": "bad.keras"})
    assert res["outputs"]["exit-code"] == "0" and res["outputs"]["errors"] == "0", res
    (work / ".ckptscan.toml").write_text('fail-on = "never"\n')
    res = run_action_locally(work, tmp_path, {"paths": "bad.keras"})
    assert res["outputs"]["exit-code"] == "0" and res["outputs"]["errors"] == "1"
    assert "(fail on: never; exit code 0)" in res["summary"]
    res = run_action_locally(work, tmp_path, {"paths": "bad.keras", "fail-on": "error"})  # an explicit input wins
    assert res["outputs"]["exit-code"] == "1"


def test_action_bad_option_value_fails_scan_step(repo, tmp_path):
    res = run_action_locally(repo, tmp_path, {"paths": "models", "timeout": "soon"})
    steps = dict((name, p) for name, p in res["steps"] if not isinstance(p, str))
    assert steps["scan"].returncode == 4 and "Verdict" not in steps


# --- docs/api.md: the upload gate examples run as written ---------------------------------
def _doc_blocks(marker: str) -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return "\n".join(b for b in blocks if marker in b)


def test_api_doc_upload_gate(repo, capsys):
    ns: dict = {}
    exec(compile(_doc_blocks("def publish_if_healthy"), "docs/api.md", "exec"), ns)  # noqa: S102
    uploaded = []
    assert ns["publish_if_healthy"](str(repo / "models" / "good.keras"), uploaded.append) is True
    assert ns["publish_if_healthy"](str(repo / "models" / "bad.keras"), uploaded.append) is False
    assert ns["publish_if_healthy"](str(repo / "README.txt"), uploaded.append) is False
    assert uploaded == [str(repo / "models" / "good.keras")]
    err = capsys.readouterr().err
    assert f"refusing {repo / 'models' / 'bad.keras'}: BN001 bn/moving_variance: 1 NaN" in err
    assert "(ckptscan fix can repair it)" in err
    assert f"refusing {repo / 'README.txt'}: unreadable: " in err


def test_api_doc_publish_last_good(repo, tmp_path, capsys):
    ns: dict = {}
    exec(compile(_doc_blocks("import sys") + "\n" + _doc_blocks("def publish_last_good"), "docs/api.md", "exec"), ns)  # noqa: S102
    for i, src in ((1, "good.keras"), (2, "good.keras"), (10, "bad.keras")):
        shutil.copy(repo / "models" / src, tmp_path / f"epoch_{i}.keras")
    uploaded = []
    best = ns["publish_last_good"]([str(tmp_path / f"epoch_{i}.keras") for i in (10, 1, 2)], uploaded.append)
    assert best == str(tmp_path / "epoch_2.keras") and uploaded == [best]
    assert f"restore with: ckptscan fix --from {tmp_path / 'epoch_2.keras'} {tmp_path / 'epoch_10.keras'}" in capsys.readouterr().err
