"""The real pre-commit tool running this checkout's hook (tests/integration/).

``pre-commit try-repo`` builds the hook's environment in a new temporary store on every
call (about 12 s each: a venv and a pip install), so only one test uses it, to show the
command a maintainer tries first works. The others do what a project does: a
``.pre-commit-config.yaml`` that points at the hook repository and ``pre-commit run``,
with one ``PRE_COMMIT_HOME`` for the whole session, so the environment is built once.
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
    its commit, and the environment for pre-commit (one store for the session)."""
    git = tool("git")
    precommit = tool("pre-commit")
    d = tmp_path_factory.mktemp("hookrepo")
    listed = subprocess.run([git, "ls-files", "-co", "--exclude-standard", "ckptscan", "pyproject.toml", "README.md",
                             ".pre-commit-hooks.yaml"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, d / rel)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path_factory.mktemp("pchome")), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hook"]):
        subprocess.run([git, *cmd], cwd=d, env=env, check=True, capture_output=True)
    rev = subprocess.run([git, "rev-parse", "HEAD"], cwd=d, env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    return precommit, {"repo": str(d), "rev": rev, "env": env, "git": git}


def _project(ctx: dict, tmp_path: Path, files: dict[str, Path | bytes], config: bool) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    for rel, src in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            (work / rel).write_bytes(src)
        else:
            shutil.copy(src, work / rel)
    if config:
        (work / ".pre-commit-config.yaml").write_text(
            f"repos:\n- repo: {ctx['repo']}\n  rev: {ctx['rev']}\n  hooks:\n  - id: ckptscan\n")
    subprocess.run([ctx["git"], "init", "-q"], cwd=work, env=ctx["env"], check=True)
    subprocess.run([ctx["git"], "add", "-A"], cwd=work, env=ctx["env"], check=True)
    return work


def try_repo(hook_repo, tmp_path: Path, files: dict[str, Path | bytes], staged: list[str]) -> subprocess.CompletedProcess:
    """``pre-commit try-repo <hook repo> ckptscan --files <staged>`` in a new git repository holding ``files``."""
    precommit, ctx = hook_repo
    work = _project(ctx, tmp_path, files, config=False)
    return subprocess.run([precommit, "try-repo", ctx["repo"], "ckptscan", "--verbose", "--files", *staged], cwd=work,
                          env=ctx["env"], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def run_hook(hook_repo, tmp_path: Path, files: dict[str, Path | bytes], staged: list[str]) -> subprocess.CompletedProcess:
    """``pre-commit run ckptscan --files <staged>`` in a new git repository holding ``files``
    and a ``.pre-commit-config.yaml`` whose ``repo:`` is the hook repository at its commit."""
    precommit, ctx = hook_repo
    work = _project(ctx, tmp_path, files, config=True)
    return subprocess.run([precommit, "run", "ckptscan", "--verbose", "--files", *staged], cwd=work,
                          env=ctx["env"], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
