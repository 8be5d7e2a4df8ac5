"""The real pre-commit tool running this checkout's hook (tests/integration/).

The tests do what a project does: a ``.pre-commit-config.yaml`` whose ``repo:`` is this
checkout's hook at a commit, and ``pre-commit run``, with one ``PRE_COMMIT_HOME`` for the
whole run, so the hook's environment (a venv and a pip install, ~12 s) is built once.
(``pre-commit try-repo`` would build it again in a new temporary store on every call.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def tool(name: str) -> str:
    """The executable ``name`` (this venv's first); under CI=true a missing tool fails the test."""
    exe = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed (pip install -e '.[dev]'; apt-get install git)")
        pytest.skip(f"{name} is not installed")
    return exe


def make_hook_repo(tmp_path_factory) -> tuple[str, dict]:
    """This checkout's hook as a committed repository (what a project's ``repo:`` points at),
    its commit, and the environment for pre-commit.

    One repository and one ``PRE_COMMIT_HOME`` serve every pytest-xdist worker (they sit
    in the run's shared temporary root, made once under a lock), so the hook's environment
    is built once per run; pre-commit's store takes its own lock while it installs."""
    import fcntl

    git = tool("git")
    precommit = tool("pre-commit")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    d, home = root / "hookrepo", root / "pchome"
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(root / "hookrepo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / ".git").is_dir():
            listed = subprocess.run([git, "ls-files", "-co", "--exclude-standard", "ckptscan", "pyproject.toml",
                                     "README.md", ".pre-commit-hooks.yaml"], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout.split()
            for rel in listed:
                if (ROOT / rel).is_file():
                    (d / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / rel, d / rel)
            home.mkdir(exist_ok=True)
            for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hook"]):
                subprocess.run([git, *cmd], cwd=d, env=env, check=True, capture_output=True)
    rev = subprocess.run([git, "rev-parse", "HEAD"], cwd=d, env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    return precommit, {"repo": str(d), "rev": rev, "env": env, "git": git}


def _project(ctx: dict, tmp_path: Path, files: dict[str, Path | bytes]) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    for rel, src in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            (work / rel).write_bytes(src)
        else:
            shutil.copy(src, work / rel)
    (work / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {ctx['repo']}\n  rev: {ctx['rev']}\n  hooks:\n  - id: ckptscan\n")
    subprocess.run([ctx["git"], "init", "-q"], cwd=work, env=ctx["env"], check=True)
    subprocess.run([ctx["git"], "add", "-A"], cwd=work, env=ctx["env"], check=True)
    return work


def run_hook(hook_repo, tmp_path: Path, files: dict[str, Path | bytes], staged: list[str]) -> subprocess.CompletedProcess:
    """``pre-commit run ckptscan --files <staged>`` in a new git repository holding ``files``
    and a ``.pre-commit-config.yaml`` whose ``repo:`` is the hook repository at its commit."""
    precommit, ctx = hook_repo
    work = _project(ctx, tmp_path, files)
    return subprocess.run([precommit, "run", "ckptscan", "--verbose", "--files", *staged], cwd=work,
                          env=ctx["env"], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
