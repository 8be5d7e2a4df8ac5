"""One safe verdict at every entry point (issue 13, "Must show" 1).

Each broken-file kind sits in its own folder beside a healthy ``.keras``; every entry point
a gate uses must refuse the folder: ``scan DIR``, ``scan --jobs 2 DIR``, the GitHub Action,
the docs/api.md recipes (``publish_if_healthy``, ``publish_last_good``) and, for a
representative subset, the real pre-commit tool (``pre-commit run`` on a config naming
this checkout's hook, tests/precommit_hook.py). A healthy file beside a well-formed non-Keras ``data.h5`` passes them all.
The kinds are written by tests/gate_kinds.py (shared with tests/formats/test_integrity.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli
from gate_kinds import HEALTHY, write_kind
from precommit_hook import run_hook
from test_integrations import _doc_blocks, run_action_locally

# the list: truncated at 0 bytes, 1 byte, 50 % and 99.9 % of each format; an empty
# .keras; random bytes and text named .h5; a shard missing from its index
GATE_KINDS = [f"cut:{fmt}:{frac}" for fmt in ("h5", "weights", "keras") for frac in ("0", "-1", "0.5", "0.999")] + [
    "empty.keras", "random.h5", "text.h5", "shard-missing"]
PRECOMMIT_KINDS = ["cut:keras:0.5", "random.h5", "shard-missing"]
HEALTHY_NAME = "a_healthy.keras"  # sorts before every broken name: the earlier "epoch" for publish_last_good


def _broken_folder(tmp_path: Path, kind: str) -> tuple[Path, Path, str]:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(HEALTHY, folder / HEALTHY_NAME)
    name, reason = write_kind(folder, kind)
    return folder, folder / name, reason


def _recipes() -> dict:
    ns: dict = {}
    src = _doc_blocks("import sys") + "\n" + _doc_blocks("def publish_last_good")
    exec(compile(src, "docs/api.md", "exec"), ns)  # noqa: S102
    return ns


def _steps(res: dict) -> dict:
    return {name: p for name, p in res["steps"] if not isinstance(p, str)}


@pytest.mark.parametrize("kind", GATE_KINDS)
def test_every_entry_point_refuses_a_folder_with_a_broken_file(tmp_path, kind, capsys):
    folder, broken, reason = _broken_folder(tmp_path, kind)
    # the CLI, in-process, serial and with a pool
    for args in (["scan", str(folder)], ["scan", "--jobs", "2", str(folder)]):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert f"ckptscan: error: {broken}: " in out.stderr and reason in out.stderr, out.stderr
    # the GitHub Action: its scan step succeeds (so SARIF uploads), the verdict step fails with 2
    res = run_action_locally(tmp_path, tmp_path, {"paths": "ckpts"})
    steps = _steps(res)
    assert steps["scan"].returncode == 0, steps["scan"].stderr
    assert res["outputs"]["exit-code"] == "2", res["outputs"]
    assert res["outputs"]["files-unreadable"] == "1" and res["outputs"]["files-scanned"] == "1", res["outputs"]
    assert steps["Verdict"].returncode == 2
    assert f"ckptscan: error: ckpts/{broken.name}: " in steps["scan"].stderr, steps["scan"].stderr
    # docs/api.md: the upload gate refuses the folder and uploads nothing
    ns = _recipes()
    uploaded: list = []
    capsys.readouterr()
    assert ns["publish_if_healthy"](str(folder), uploaded.append) is False
    assert uploaded == []
    assert f"refusing {broken}: unreadable: " in capsys.readouterr().err
    # docs/api.md: the last-good recipe publishes the healthy earlier epoch, never the broken one
    best = ns["publish_last_good"]([str(broken), str(folder / HEALTHY_NAME)], uploaded.append)
    assert best == str(folder / HEALTHY_NAME) and uploaded == [best]
    assert f"{broken} is bad: " in capsys.readouterr().err


@pytest.mark.parametrize("kind", PRECOMMIT_KINDS)
def test_precommit_refuses_a_broken_file(hook_repo, tmp_path, kind):
    folder, broken, _ = _broken_folder(tmp_path, kind)
    files = {f"ckpts/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    p = run_hook(hook_repo, tmp_path, files, sorted(files))
    assert p.returncode == 1, p.stdout + p.stderr  # pre-commit's own code for a failed hook
    assert "- exit code: 2" in p.stdout, p.stdout
    assert re.search(rf"^ckptscan: error: ckpts/{re.escape(broken.name)}: .+$", p.stdout, re.M), p.stdout


def _healthy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(HEALTHY, folder / HEALTHY_NAME)
    with h5py.File(folder / "data.h5", "w") as f:
        f["measurements"] = np.arange(100, dtype="f4")
    return folder


def test_every_entry_point_passes_healthy_file_beside_data_h5(tmp_path, capsys):
    folder = _healthy_folder(tmp_path)
    for args in (["scan", str(folder)], ["scan", "--jobs", "2", str(folder)]):
        out = run_cli(*args)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        assert "data.h5: HDF5 file, but not a Keras weight archive" in out.stdout
    res = run_action_locally(tmp_path, tmp_path, {"paths": "ckpts"})
    steps = _steps(res)
    assert res["outputs"]["exit-code"] == "0", (res["outputs"], steps["scan"].stderr)
    assert res["outputs"]["files-scanned"] == "1" and res["outputs"]["files-unreadable"] == "0"
    assert res["outputs"]["files-skipped"] == "1"
    assert steps["Verdict"].returncode == 0
    ns = _recipes()
    uploaded: list = []
    assert ns["publish_if_healthy"](str(folder), uploaded.append) is True
    assert uploaded == [str(folder)]
    assert ns["publish_last_good"]([str(folder / HEALTHY_NAME)], uploaded.append) == str(folder / HEALTHY_NAME)
    assert "refusing" not in capsys.readouterr().err


def test_precommit_passes_healthy_file_beside_data_h5(hook_repo, tmp_path):
    folder = _healthy_folder(tmp_path)
    files = {f"ckpts/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    p = run_hook(hook_repo, tmp_path, files, sorted(files))
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"ckptscan \(Keras checkpoint health\)\.+Passed", p.stdout), p.stdout
