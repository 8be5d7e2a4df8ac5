"""``ckptscan serve`` and MLflow URIs on the command line: usage errors are one line, exit 4 / 2."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("CKPTSCAN_TOKEN", "MLFLOW_TRACKING_URI")}
    return subprocess.run([sys.executable, "-m", "ckptscan", *args], capture_output=True, text=True, timeout=60,
                          env={**e, **(env or {})}, stdin=subprocess.DEVNULL)


def test_serve_needs_a_token():
    p = _run("serve", "--allow", "s3://x/")
    assert p.returncode == 4
    assert p.stderr == "ckptscan: error: set CKPTSCAN_TOKEN or --token-file: the API needs a bearer token\n"


def test_serve_refuses_a_bad_prefix_and_a_missing_token_file(tmp_path):
    p = _run("serve", "--allow", "file:///srv/../etc/", env={"CKPTSCAN_TOKEN": "t"})
    assert p.returncode == 4 and p.stderr.startswith("ckptscan: error: --allow: ") and p.stderr.count("\n") == 1
    p = _run("serve", "--allow", "s3://x/", "--token-file", str(tmp_path / "nope"))
    assert p.returncode == 4 and p.stderr.startswith("ckptscan: error: ") and "Traceback" not in p.stderr
    (tmp_path / "empty").write_text("\n")
    p = _run("serve", "--allow", "s3://x/", "--token-file", str(tmp_path / "empty"))
    assert p.returncode == 4 and "empty secret file" in p.stderr


def test_models_uri_without_tracking_server_is_one_line():
    p = _run("scan", "models:/x/1")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "MLFLOW_TRACKING_URI" in p.stderr
    p = _run("scan", "models:/x/1", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert p.returncode == 2
    assert p.stderr.startswith("ckptscan: error: models:/x/1: cannot reach the MLflow tracking server")
    p = _run("scan", "models:/x/Production", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert p.returncode == 2 and "use an alias" in p.stderr
