"""MLflow end to end, against a real ``mlflow server`` (SQLite + proxied artifacts):

* ``ckptscan scan models:/NAME/1`` (and ``@alias``, ``runs:/``) equals the local scan of the same file;
* the webhook registered with MLflow's own client (``MlflowClient().create_webhook``)
  makes ``ckptscan serve`` tag the version: ``fail`` + the BN variable for a poisoned
  ``.keras``, ``pass`` for a clean one, as MLflow itself shows the tags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES
from serve_servers import CkptscanServer, MlflowServer

K3 = FIXTURES / "k3"
SECRET = "mlflow-hook-secret"


def _cli_json(*args: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "--format", "json", *args], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)


def _strip(doc: dict) -> dict:
    """A report without paths and timings (the same file read from two places)."""
    doc = json.loads(json.dumps(doc))
    for f in doc["files"]:
        f.pop("path"), f.pop("seconds")
    return doc


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def registry(mlflow_server):
    """Models ``broken`` (seed_broken.keras) and ``clean`` (seed.keras), version 1 each, logged
    as run artifacts and registered from the run's ``mlflow-artifacts:`` location, after the
    ckptscan webhook was registered; yields (client, ckptscan server)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "CKPTSCAN_MLFLOW_SECRET": SECRET}
    ck = CkptscanServer("--allow", "models:/", "--workers", "1", "--mlflow-block-alias", "scanned", env=env,
                        cwd=mlflow_server.root)
    try:
        client.create_webhook(name="ckptscan", url=f"{ck.url}/hooks/mlflow", events=["model_version.created"], secret=SECRET)
        for name, fixture in (("broken", "seed_broken.keras"), ("clean", "seed.keras")):
            exp = client.create_experiment(f"exp-{name}")
            run = client.create_run(exp)
            client.log_artifact(run.info.run_id, str(K3 / fixture), artifact_path="model")
            client.set_terminated(run.info.run_id)
            client.create_registered_model(name)
            src = f"{run.info.artifact_uri}/model"
            assert src.startswith("mlflow-artifacts:"), src
            client.create_model_version(name, src, run_id=run.info.run_id)
            client.set_registered_model_alias(name, "candidate", "1")
        yield client, ck
    finally:
        ck.close()


def _tags(client, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tags = client.get_model_version(name, "1").tags
        if "ckptscan.verdict" in tags and "ckptscan.version" in tags:
            return tags
        time.sleep(0.25)
    raise AssertionError(f"no ckptscan tags on {name}/1 after {timeout} s: {client.get_model_version(name, '1').tags}")


def test_webhook_tags_poisoned_version_fail_with_the_bn_variable(registry):
    client, ck = registry
    tags = _tags(client, "broken")
    assert tags["ckptscan.verdict"] == "fail"
    assert tags["ckptscan.summary"] == "BN001 resnet101v2/post_bn/moving_variance (+1 more)"
    assert tags["ckptscan.errors"] == "2" and tags["ckptscan.warnings"] == "2"
    from ckptscan import __version__

    assert tags["ckptscan.version"] == __version__


def test_webhook_tags_clean_version_pass(registry):
    client, _ = registry
    tags = _tags(client, "clean")
    assert tags["ckptscan.verdict"] == "pass"
    assert tags["ckptscan.errors"] == "0" and tags["ckptscan.warnings"] == "0"


def test_block_alias_moves_only_to_passing_versions(registry):
    client, _ = registry
    _tags(client, "clean"), _tags(client, "broken")
    assert client.get_model_version_by_alias("clean", "scanned").version == "1"
    assert "scanned" not in client.get_registered_model("broken").aliases
    assert client.get_model_version("broken", "1").tags["ckptscan.blocked_alias"] == "scanned"
    assert "ckptscan.blocked_alias" not in client.get_model_version("clean", "1").tags


def test_cli_scan_models_uri_equals_local_scan(registry, mlflow_server):
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    local = _cli_json(str(K3 / "seed_broken.keras"), env=env)
    for uri in ("models:/broken/1", "models:/broken@candidate"):
        remote = _cli_json(uri, env=env)
        assert [f["path"] for f in remote["files"]] == ["models:/broken/1/seed_broken.keras"]
        assert _strip(remote) == _strip(local)
    clean = _cli_json("models:/clean/1", env=env)
    assert _strip(clean) == _strip(_cli_json(str(K3 / "seed.keras"), env=env))


def test_cli_scan_runs_uri_and_api(registry, mlflow_server, monkeypatch):
    client, _ = registry
    run_id = client.get_model_version("broken", "1").run_id
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    doc = _cli_json(f"runs:/{run_id}/model", env=env)
    assert [f["path"] for f in doc["files"]] == [f"runs:/{run_id}/model/seed_broken.keras"]
    assert doc["summary"]["findings"] == {"error": 2, "warning": 2, "info": 0}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    import ckptscan

    rep = ckptscan.scan("models:/broken/1")
    assert [r.path for r in rep.files] == ["models:/broken/1/seed_broken.keras"]
    assert sorted(f.rule_id for f in rep.findings) == ["BN001", "BN002", "BN003", "BN004"]


def test_server_scans_models_uri_like_the_cli(registry, mlflow_server):
    _, ck = registry
    status, doc = ck.json("POST", "/v1/scan", {"uris": ["models:/broken/1"]})
    assert status == 200, doc
    local = _cli_json(str(K3 / "seed_broken.keras"), env={})
    assert _strip(doc) == _strip(local)


def test_cli_scan_unknown_model_is_one_error_line(mlflow_server):
    p = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "models:/nope/7"], capture_output=True, text=True,
                       env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.startswith("ckptscan: error: models:/nope/7: MLflow model-versions/get: HTTP 404")
    assert p.stderr.count("\n") == 1


def test_proxy_download_is_bounded_and_cleaned_up(registry, mlflow_server, tmp_path):
    """mlflow-artifacts: has no ranged read: the whole file is streamed to a temporary file,
    which may not grow past CKPTSCAN_MLFLOW_MAX_DOWNLOAD and is removed afterwards."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url, "TMPDIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "models:/broken/1"], capture_output=True, text=True,
                       env={**env, "CKPTSCAN_MLFLOW_MAX_DOWNLOAD": "64K"}, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.startswith("ckptscan: error: models:/broken/1: ") and p.stderr.count("\n") == 1
    assert "larger than CKPTSCAN_MLFLOW_MAX_DOWNLOAD=65536" in p.stderr
    assert list(tmp_path.iterdir()) == []
    p = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "models:/broken/1"], capture_output=True, text=True,
                       env={**env, "CKPTSCAN_MLFLOW_MAX_DOWNLOAD": "1M"}, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert [x for x in tmp_path.iterdir() if x.name.startswith("ckptscan-mlflow-")] == []
