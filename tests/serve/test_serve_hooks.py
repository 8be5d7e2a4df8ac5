"""The S3, Hugging Face Hub and lakeFS hooks of ``ckptscan serve``, and the Lambda handler.

* S3 event notifications (the documented record layout: URL-encoded key, eTag,
  versionId) against moto's S3 server;
* HF Hub webhooks against the Hub endpoint of ``tests/servers.py`` (``hf://`` at the
  pushed ``headSha``);
* lakeFS ``pre-commit`` / ``pre-merge`` bodies as lakeFS documents them, objects read the
  way lakeFS's S3 gateway serves them (``s3://REPO/REF/path``) from moto: no lakeFS server
  runs here (docs/serve.md says so);
* ``ckptscan.integrations.aws_lambda.handler`` on the same S3 event, in process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import urllib.parse

import pytest

from conftest import FIXTURES
from serve_servers import CkptscanServer
from servers import HfHub, need

K3 = FIXTURES / "k3"
HF_SECRET = "hf-hook-secret"
LAKEFS_SECRET = "lakefs-hook-secret"


@pytest.fixture(scope="module")
def moto_env():
    need(importlib.util.find_spec("s3fs") is not None and importlib.util.find_spec("moto") is not None,
         "s3fs and moto[server] (pip)")
    import moto.server as moto_server

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    # an S3FileSystem cached by fsspec in an earlier test module points at that module's
    # (stopped) moto endpoint; the in-process handlers here must build theirs from this env
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for bucket in ("models", "other", "lakerepo"):
        fs.mkdir(bucket)
    fs.put_file(str(K3 / "seed_broken.keras"), "models/team a/seed_broken.keras")
    fs.put_file(str(K3 / "seed.keras"), "models/clean/seed.keras")
    fs.put_file(str(K3 / "seed_broken.keras"), "other/seed_broken.keras")
    # lakeFS through its S3 gateway: bucket = repository, key = ref/path
    fs.put_file(str(K3 / "seed_broken.keras"), "lakerepo/feature-x/models/seed_broken.keras")
    fs.put_file(str(K3 / "seed.keras"), "lakerepo/feature-x/models/seed.keras")
    fs.put_file(str(K3 / "seed.keras"), "lakerepo/main/models/seed.keras")
    fs.put_file(str(K3 / "seed_sharded.weights.json"), "lakerepo/main/models/sharded/seed_sharded.weights.json")
    for i in range(3):
        fs.put_file(str(K3 / f"seed_sharded_0000{i}.weights.h5"), f"lakerepo/main/models/sharded/seed_sharded_0000{i}.weights.h5")
    fs.put_file(str(K3 / "seed.config.json"), "lakerepo/main/models/sharded/config.json")
    # branch feat2: its committed state (ref expression feat2@) and the same object staged
    fs.put_file(str(K3 / "seed.keras"), "lakerepo/feat2@/models/seed.keras")
    fs.put_file(str(K3 / "seed.keras"), "lakerepo/feat2/models/seed.keras")
    yield env, fs
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()  # nothing cached here outlives this server


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    need(importlib.util.find_spec("huggingface_hub") is not None, "huggingface_hub (pip)")
    root = tmp_path_factory.mktemp("hubrepo")
    (root / "k3").mkdir()
    for name in ("seed_broken.keras", "seed.keras"):
        shutil.copy(K3 / name, root / "k3" / name)
    (root / "README.md").write_text("a model\n")
    srv = HfHub(root, repo="ckptscan/fixtures")
    srv.env["HF_HOME"] = str(tmp_path_factory.mktemp("hfhome"))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def server(moto_env, hub, tmp_path_factory):
    env = {**moto_env[0], **hub.env, "FSSPEC_HF_ENDPOINT": hub.url, "CKPTSCAN_HF_SECRET": HF_SECRET,
           "CKPTSCAN_LAKEFS_SECRET": LAKEFS_SECRET}
    srv = CkptscanServer("--allow", "s3://models/", "--allow", "s3://lakerepo/", "--allow", "hf://ckptscan/",
                         "--workers", "2", env=env, cwd=tmp_path_factory.mktemp("cwd"))
    yield srv
    srv.close()


def s3_event(*objects: tuple[str, str], event: str = "ObjectCreated:Put") -> dict:
    """An S3 event notification as S3 sends it (keys URL-encoded, '+' for spaces)."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-12-06T03:00:00.000Z",
        "eventName": event, "userIdentity": {"principalId": "AWS:EXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "ckptscan",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": 1, "eTag": f"etag-{key}",
                          "versionId": "v1", "sequencer": "0055AED6DCD90281E5"}}}
        for bucket, key in objects]}


def _metric(srv, name: str) -> float:
    for line in srv.request("GET", "/metrics", auth=False)[2].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


# --- S3 --------------------------------------------------------------------------------------
def test_s3_event_scans_new_objects(server):
    status, doc = server.json("POST", "/hooks/s3", s3_event(("models", "team a/seed_broken.keras"), ("models", "clean/seed.keras")))
    assert status == 200, doc
    assert doc["verdict"] == "fail"
    assert doc["summary"] == "BN001 resnet101v2/post_bn/moving_variance (+1 more)"
    assert [o["uri"] for o in doc["objects"]] == ["s3://models/team a/seed_broken.keras", "s3://models/clean/seed.keras"]
    assert doc["objects"][0]["versionId"] == "v1"
    assert [f["status"] for f in doc["report"]["files"]] == ["scanned", "scanned"]
    assert [f["counts"]["error"] for f in doc["report"]["files"]] == [2, 0]
    # the same event again: answered from the verdict cache (eTag), nothing read
    hits = _metric(server, "ckptscan_cache_hits_total")
    status, again = server.json("POST", "/hooks/s3", s3_event(("models", "team a/seed_broken.keras")))
    assert status == 200 and again["verdict"] == "fail"
    assert _metric(server, "ckptscan_cache_hits_total") == hits + 1


def test_s3_event_rules(server):
    assert server.json("POST", "/hooks/s3", s3_event(("other", "seed_broken.keras")))[0] == 403
    assert server.json("POST", "/hooks/s3", s3_event(("models", "clean/seed.keras")), auth=False)[0] == 401
    status, doc = server.json("POST", "/hooks/s3", s3_event(("models", "clean/seed.keras"), event="ObjectRemoved:Delete"))
    assert status == 200 and doc["objects"] == []
    status, doc = server.json("POST", "/hooks/s3", {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "models"})
    assert status == 200 and doc["objects"] == []
    assert server.json("POST", "/hooks/s3", {"Records": [{"s3": {}}]})[0] == 400


def test_lambda_handler_same_contract(moto_env, monkeypatch):
    from ckptscan.integrations.aws_lambda import handler

    monkeypatch.setenv("CKPTSCAN_ALLOW", "s3://models/")
    out = handler(s3_event(("models", "team a/seed_broken.keras"), ("other", "seed_broken.keras")))
    assert out["verdict"] == "unreadable"  # the object outside CKPTSCAN_ALLOW is refused, not read
    files = out["report"]["files"]
    assert files[0]["status"] == "scanned" and files[0]["counts"]["error"] == 2
    assert files[1]["status"] == "error" and "not under an --allow prefix" in files[1]["reason"]
    out = handler(s3_event(("models", "clean/seed.keras")))
    assert out["verdict"] == "pass" and out["report"]["summary"]["exit_code"] == 0


# --- Hugging Face Hub -------------------------------------------------------------------------
def hf_payload(hub, sha: str | None = None) -> dict:
    sha = sha or hub.sha
    return {"event": {"action": "update", "scope": "repo.content"},
            "repo": {"type": "model", "name": "ckptscan/fixtures", "id": "x", "private": False, "headSha": sha,
                     "url": {"web": f"{hub.url}/ckptscan/fixtures"}},
            "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "0" * 40, "newSha": sha}],
            "webhook": {"id": "w1", "version": 3}}


def test_hf_hook_scans_weights_at_the_pushed_revision(server, hub):
    status, _, body = server.request("POST", "/hooks/hf", hf_payload(hub), auth=False, headers={"X-Webhook-Secret": HF_SECRET})
    assert status == 200, body
    doc = json.loads(body)
    assert doc["verdict"] == "fail" and doc["revision"] == hub.sha
    paths = [f["path"] for f in doc["report"]["files"]]
    assert paths == [f"hf://ckptscan/fixtures@{hub.sha}/k3/seed.keras", f"hf://ckptscan/fixtures@{hub.sha}/k3/seed_broken.keras"]
    assert [f["counts"]["error"] for f in doc["report"]["files"]] == [0, 2]
    assert hub.bytes_sent() > 0


def test_hf_hook_scans_only_changed_files(server, hub):
    """``updatedRefs[].oldSha``: files whose content id is the same at both revisions are not scanned."""
    p = hf_payload(hub)
    p["updatedRefs"][0]["oldSha"] = hub.sha  # the same tree: nothing changed
    status, _, body = server.request("POST", "/hooks/hf", p, auth=False, headers={"X-Webhook-Secret": HF_SECRET})
    doc = json.loads(body)
    assert status == 200 and doc["verdict"] == "pass" and doc["report"]["files"] == []
    assert doc["summary"] == "no weight file changed" and doc["diff"] == f"changed since {hub.sha}"
    p["updatedRefs"][0]["oldSha"] = "1" * 40  # an old revision the Hub cannot list: everything
    status, _, body = server.request("POST", "/hooks/hf", p, auth=False, headers={"X-Webhook-Secret": HF_SECRET})
    doc = json.loads(body)
    assert status == 200 and len(doc["report"]["files"]) == 2 and doc["diff"].endswith("cannot be listed)")


def test_hf_hook_secret_and_scope(server, hub):
    for h in ({}, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": HF_SECRET + "x"}):
        assert server.request("POST", "/hooks/hf", hf_payload(hub), auth=False, headers=h)[0] == 401
    p = hf_payload(hub)
    p["event"]["scope"] = "discussion"
    status, _, body = server.request("POST", "/hooks/hf", p, auth=False, headers={"X-Webhook-Secret": HF_SECRET})
    assert status == 200 and json.loads(body)["status"] == "ignored"
    p = hf_payload(hub)
    p["repo"]["name"] = "other-org/model"
    assert server.request("POST", "/hooks/hf", p, auth=False, headers={"X-Webhook-Secret": HF_SECRET})[0] == 403


# --- lakeFS -----------------------------------------------------------------------------------
def lakefs_payload(event: str, branch: str, source_ref: str | None = None) -> dict:
    """The body lakeFS posts to a webhook action (docs: howto/hooks/webhooks)."""
    return {"event_type": event, "event_time": "2026-12-06T03:00:00Z", "action_name": "ckptscan",
            "hook_id": "ckptscan_scan", "repository_id": "lakerepo", "branch_id": branch,
            "source_ref": source_ref or branch, "commit_message": "add model", "committer": "alice",
            "commit_metadata": {"k": "v"}, "commit_id": "", "tag_id": "", "merge_source": source_ref or ""}


def test_lakefs_pre_commit_blocks_a_poisoned_archive(server):
    status, _, body = server.request("POST", "/hooks/lakefs?prefix=models", lakefs_payload("pre-commit", "feature-x"),
                                     auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 412
    assert body.decode().strip() == "ckptscan: fail: BN001 resnet101v2/post_bn/moving_variance (+1 more)"


def test_lakefs_pre_merge_passes_clean_and_caches_by_checksum(server):
    payload = lakefs_payload("pre-merge", "main", source_ref="main")
    status, _, body = server.request("POST", "/hooks/lakefs", payload, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 200, body
    assert body.decode() == "ckptscan: pass: no findings (2 file(s) scanned)\n"  # seed.keras and the sharded set
    hits = _metric(server, "ckptscan_cache_hits_total")
    status, _, _ = server.request("POST", "/hooks/lakefs", payload, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 200
    assert _metric(server, "ckptscan_cache_hits_total") == hits + 2  # unchanged objects: not read again


def test_lakefs_changed_shard_is_scanned_again(server, moto_env):
    _, fs = moto_env
    payload = lakefs_payload("pre-merge", "main", source_ref="main")
    assert server.request("POST", "/hooks/lakefs", payload, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})[0] == 200
    # the index is unchanged; one shard now holds the poisoned variables
    for i in range(3):
        fs.put_file(str(K3 / f"seed_broken_sharded_0000{i}.weights.h5"), f"lakerepo/main/models/sharded/seed_sharded_0000{i}.weights.h5")
    status, _, body = server.request("POST", "/hooks/lakefs", payload, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 412, body
    assert body.decode().startswith("ckptscan: fail: BN001 ")


def test_lakefs_secret_and_events(server):
    p = lakefs_payload("pre-commit", "feature-x")
    assert server.request("POST", "/hooks/lakefs", p, auth=False)[0] == 401
    assert server.request("POST", "/hooks/lakefs", p, auth=False, headers={"X-Ckptscan-Secret": "no"})[0] == 401
    status, _, body = server.request("POST", "/hooks/lakefs", lakefs_payload("post-commit", "feature-x"), auth=False,
                                     headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 200 and b"ignored" in body
    p = lakefs_payload("pre-commit", "feature-x")
    p["repository_id"] = "other"
    assert server.request("POST", "/hooks/lakefs", p, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})[0] == 403


def test_lakefs_scans_only_what_the_commit_changes(server, moto_env):
    _, fs = moto_env
    hdr = {"X-Ckptscan-Secret": LAKEFS_SECRET}
    status, _, body = server.request("POST", "/hooks/lakefs", lakefs_payload("pre-commit", "feat2"), auth=False, headers=hdr)
    assert status == 200, body
    assert body.decode() == "ckptscan: pass: no changed Keras checkpoint (changed against s3://lakerepo/feat2@/)\n"
    fs.put_file(str(K3 / "seed_broken.keras"), "lakerepo/feat2/models/new.keras")  # staged, not committed
    status, _, body = server.request("POST", "/hooks/lakefs", lakefs_payload("pre-commit", "feat2"), auth=False, headers=hdr)
    assert status == 412 and body.decode().startswith("ckptscan: fail: BN001 ")


def test_lakefs_pre_merge_compares_source_with_destination(server):
    """feature-x into main: seed.keras is the same object on both (not read), seed_broken.keras is new."""
    p = lakefs_payload("pre-merge", "main", source_ref="feature-x")
    before = _scans(server)
    status, _, body = server.request("POST", "/hooks/lakefs?prefix=models", p, auth=False, headers={"X-Ckptscan-Secret": LAKEFS_SECRET})
    assert status == 412
    assert body.decode() == "ckptscan: fail: BN001 resnet101v2/post_bn/moving_variance (+1 more)\n"
    assert _scans(server) == before + 1  # one file looked at: the new one


def _scans(srv) -> float:
    return sum(_metric(srv, f'ckptscan_scans_total{{verdict="{v}"}}') for v in ("pass", "fail", "unreadable", "skipped"))
