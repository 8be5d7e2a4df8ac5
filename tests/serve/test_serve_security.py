"""``ckptscan serve`` security, against the real server (uvicorn in a subprocess on a loopback port):

* a URI outside ``--allow`` is 403 with no I/O attempted: nginx's access log stays empty,
  and a FIFO sentinel outside the allowed folder is never opened (a FIFO opened for
  reading blocks its reader, so a non-blocking writer open would find it: ENXIO proves
  nobody holds it);
* missing / wrong bearer token 401; wrong webhook signature or stale timestamp 401;
  oversized body 413; a full queue 429 with Retry-After;
* a worker killed mid-scan fails only that request (500 with the reason), the server goes on;
* SIGTERM lets the running scan finish, then the server exits.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from serve_servers import CkptscanServer
from servers import Nginx, need, nginx_binary

K3 = FIXTURES / "k3"
SECRET = "s3cr3t-mlflow"


def _no_reader(fifo: Path) -> bool:
    """True when no process has ``fifo`` open for reading (nobody tried to read it)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno == errno.ENXIO
    os.close(fd)
    return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``allowed/`` and ``secret/`` folders (files, a FIFO sentinel, a link escaping), and nginx over them."""
    need(nginx_binary() is not None, "nginx (apt-get install nginx-light)")
    root = tmp_path_factory.mktemp("site")
    for d in ("allowed", "secret"):
        (root / d).mkdir()
        shutil.copy(K3 / "seed_broken.keras", root / d / "seed_broken.keras")
    os.mkfifo(root / "secret" / "sentinel.fifo")
    (root / "allowed" / "escape.keras").symlink_to(root / "secret" / "sentinel.fifo")
    nginx = Nginx(root, tmp_path_factory.mktemp("nginx"))
    yield root, nginx
    nginx.close()


@pytest.fixture(scope="module")
def server(site):
    root, nginx = site
    srv = CkptscanServer("--allow", f"file://{root}/allowed/", "--allow", f"{nginx.url}/allowed/", "--workers", "1",
                         "--max-body", "8K", env={"CKPTSCAN_MLFLOW_SECRET": SECRET, "CKPTSCAN_MLFLOW_": ""})
    yield srv
    srv.close()


def _outside(root: Path, url: str) -> list[str]:
    port = url.rsplit(":", 1)[1]
    s = f"{root}/secret/sentinel.fifo"
    return [
        # local files
        "file:///etc/passwd", "/etc/passwd", f"file://{s}", s, f"FILE://{s}", f"file://localhost{s}",
        f"file://{root}/allowed/../secret/sentinel.fifo", f"{root}/allowed/../secret/sentinel.fifo",
        f"file://{root}/allowed/%2e%2e/secret/sentinel.fifo", f"file://{root}/allowed/%2E%2E%2Fsecret%2Fsentinel.fifo",
        f"file://{root}/allowed/%252e%252e/secret/sentinel.fifo", f"file://{root}/allowed/./../secret/sentinel.fifo",
        f"file://{root}/allowed//../secret/sentinel.fifo", f"file://{root}/allowed\\..\\secret\\sentinel.fifo",
        f"file://{root}/allowed-not/x.keras", f"file://{root}/allowed%00/../secret/sentinel.fifo",
        "secret/sentinel.fifo", f"file://evil.example{s}",
        # http on the same nginx, outside the allowed folder, or the allowed one spelled to escape
        f"http://127.0.0.1:{port}/secret/seed_broken.keras",
        f"http://127.0.0.1:{port}/allowed/../secret/seed_broken.keras",
        f"http://127.0.0.1:{port}/allowed/%2e%2e/secret/seed_broken.keras",
        f"http://127.0.0.1:{port}/allowed/%2e%2e%2fsecret%2fseed_broken.keras",
        f"http://127.0.0.1:{port}/allowed/%252e%252e/secret/seed_broken.keras",
        f"http://127.0.0.1:{port}/allowed%2f..%2fsecret/seed_broken.keras",
        f"http://127.0.0.1:{port}/allowed/seed_broken.keras#frag",
        f"http://attacker@127.0.0.1:{port}/allowed/seed_broken.keras",
        f"http://127.0.0.1:{port}@127.0.0.1:{port}/secret/seed_broken.keras",
        f"http://localhost:{port}/allowed/seed_broken.keras", f"http://0x7f000001:{port}/allowed/seed_broken.keras",
        f"http://127.1:{port}/allowed/seed_broken.keras", f"https://127.0.0.1:{port}/allowed/seed_broken.keras",
        f"http://127.0.0.1:{int(port) + 1}/allowed/seed_broken.keras",
        "http://169.254.169.254/latest/meta-data/", "s3://models/a.keras", "models:/x/1", "hf://org/repo",
    ]


def test_outside_allow_is_403_with_no_io(server, site):
    root, nginx = site
    before = len(nginx.requests())
    for uri in _outside(root, nginx.url):
        status, doc = server.json("POST", "/v1/scan", {"uris": [uri]})
        assert status == 403, (uri, status, doc)
        assert doc["error"], uri
    # an allowed URI next to a refused one: the whole request is refused, nothing is read
    status, _ = server.json("POST", "/v1/scan", {"uris": [f"{nginx.url}/allowed/seed_broken.keras", "file:///etc/passwd"]})
    assert status == 403
    time.sleep(0.3)
    assert nginx.requests()[before:] == []
    assert _no_reader(root / "secret" / "sentinel.fifo")


def test_allowed_uris_are_read(server, site):
    """The control for the test above: the allowed spellings are scanned, and nginx logs the reads."""
    root, nginx = site
    before = len(nginx.requests())
    uris = [f"{nginx.url}/allowed/seed_broken.keras", f"file://{root}/allowed/seed_broken.keras",
            f"{root}/allowed/seed_broken.keras", f"HTTP://127.0.0.1:{nginx.port}/allowed/seed_broken.keras"]
    status, doc = server.json("POST", "/v1/scan", {"uris": uris})
    assert status == 200, doc
    assert [f["status"] for f in doc["files"]] == ["scanned"] * 4
    assert {f["counts"]["error"] for f in doc["files"]} == {2}
    assert nginx.settled(1, before)[1] > 0


def test_symlink_escaping_the_allowed_folder_is_not_opened(server, site):
    root, _ = site
    status, doc = server.json("POST", "/v1/scan", {"uris": [f"{root}/allowed/escape.keras"]})
    assert status == 200
    assert doc["files"][0]["status"] == "error"
    assert "outside every --allow prefix" in doc["files"][0]["reason"]
    # a folder scan lists the link but never opens it either
    status, doc = server.json("POST", "/v1/scan", {"uris": [f"file://{root}/allowed/"]})
    assert status == 200
    assert _no_reader(root / "secret" / "sentinel.fifo")


@pytest.mark.parametrize("auth", [False, "Bearer wrong-token", "Bearer test-token2", "Bearer test-toke", "Basic dGVzdC10b2tlbg==",
                                  "test-token", "Bearer "])
def test_missing_or_wrong_token_is_401(server, auth):
    status, headers, body = server.request("POST", "/v1/scan", {"uris": ["file:///etc/passwd"]}, auth=auth)
    assert status == 401, body
    assert headers.get("www-authenticate", headers.get("WWW-Authenticate", "")).startswith("Bearer")
    assert server.request("GET", "/v1/jobs/x", auth=auth)[0] == 401


def _mlflow_headers(body: bytes, secret: str = SECRET, ts: int | None = None, delivery: str = "d-1") -> dict:
    from ckptscan.serve.events import mlflow_signature

    ts = int(time.time()) if ts is None else ts
    return {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": str(ts),
            "X-MLflow-Signature": mlflow_signature(secret, delivery, str(ts), body), "Content-Type": "application/json"}


def test_mlflow_hook_signature_and_timestamp(server):
    body = json.dumps({"entity": "registered_model", "action": "created", "timestamp": "x", "data": {"name": "m"}}).encode()
    # control: a correct, fresh delivery is accepted (an event the hook ignores)
    status, _, data = server.request("POST", "/hooks/mlflow", raw=body, auth=False, headers=_mlflow_headers(body))
    assert status == 200 and json.loads(data)["status"] == "ignored"
    bad = [
        _mlflow_headers(body, secret="wrong"),
        _mlflow_headers(body, ts=int(time.time()) - 3600),
        _mlflow_headers(body, ts=int(time.time()) + 3600),
        {**_mlflow_headers(body), "X-MLflow-Signature": "v1,AAAA"},
        {**_mlflow_headers(body), "X-MLflow-Delivery-Id": "other"},
        {k: v for k, v in _mlflow_headers(body).items() if k != "X-MLflow-Signature"},
    ]
    for h in bad:
        status, _, data = server.request("POST", "/hooks/mlflow", raw=body, auth=False, headers=h)
        assert status == 401, (h, data)
    tampered = body.replace(b"registered_model", b"model_version")
    status, _, _ = server.request("POST", "/hooks/mlflow", raw=tampered, auth=False, headers=_mlflow_headers(body))
    assert status == 401


def test_hooks_without_a_secret_are_not_enabled(server):
    assert server.request("POST", "/hooks/hf", raw=b"{}", auth=False, headers={"X-Webhook-Secret": ""})[0] == 404
    assert server.request("POST", "/hooks/lakefs", raw=b"{}", auth=False)[0] == 404


def test_oversized_body_is_413(server):
    big = {"uris": ["file:///x"] * 2000}
    status, doc = server.json("POST", "/v1/scan", big)
    assert status == 413, doc
    body = json.dumps({"entity": "x", "pad": "y" * 20000}).encode()
    status, _, _ = server.request("POST", "/hooks/mlflow", raw=body, auth=False, headers=_mlflow_headers(body))
    assert status == 413
    # a chunked body (no Content-Length) is cut at the cap as it streams
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/scan")
    conn.putheader("Authorization", "Bearer test-token")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 4096
    try:
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass
    assert conn.getresponse().status == 413
    conn.close()


def test_bad_requests_are_400(server):
    for body in ({"uris": []}, {"uris": "x"}, {"uris": [1]}, {"uris": ["file:///x"], "fail_on": "bad"},
                 {"uris": ["file:///x"], "nope": 1}, {"uris": ["file:///x"], "async": "yes"}, [1]):
        assert server.json("POST", "/v1/scan", body)[0] == 400, body
    assert server.request("POST", "/v1/scan", raw=b"{not json")[0] == 400


def _fifo_busy(server, fifo: Path, results: list, body: dict | None = None) -> threading.Thread:
    t = threading.Thread(target=lambda: results.append(server.json("POST", "/v1/scan", body or {"uris": [str(fifo)]})))
    t.start()
    return t


def _release(fifo: Path, timeout: float = 30) -> None:
    """Open the FIFO for writing once the worker reads it, then close it (EOF: 'empty file')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
            continue
        os.close(fd)
        return
    raise AssertionError("the worker never opened the FIFO")


def _reader_pid(fifo: Path) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():  # the test holds the writing end
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(fifo):
                    return int(pid)
        except OSError:
            continue
    return None


@pytest.fixture
def busy_server(tmp_path):
    """One worker, no queue: the second request while one scans gets 429."""
    (tmp_path / "allowed").mkdir()
    fifo = tmp_path / "allowed" / "slow.keras"
    os.mkfifo(fifo)
    shutil.copy(K3 / "seed.keras", tmp_path / "allowed" / "seed.keras")
    srv = CkptscanServer("--allow", f"{tmp_path}/allowed/", "--workers", "1", "--queue", "0", "--timeout", "60")
    yield srv, fifo, tmp_path / "allowed" / "seed.keras"
    srv.close()


def test_full_queue_is_429_with_retry_after(busy_server):
    srv, fifo, seed = busy_server
    results: list = []
    t = _fifo_busy(srv, fifo, results)
    deadline = time.monotonic() + 30
    while srv.request("GET", "/readyz", auth=False)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, headers, body = srv.request("POST", "/v1/scan", {"uris": [str(seed)]})
    assert status == 429, body
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) > 0
    assert srv.request("GET", "/readyz", auth=False)[0] == 503
    _release(fifo)
    t.join(60)
    assert results[0][0] == 200 and results[0][1]["files"][0]["status"] == "error"
    status, doc = srv.json("POST", "/v1/scan", {"uris": [str(seed)]})
    assert status == 200 and doc["files"][0]["status"] == "scanned"
    metrics = srv.request("GET", "/metrics", auth=False)[2].decode()
    assert 'ckptscan_requests_total{route="/v1/scan",status="429"} 1' in metrics


def test_killed_worker_fails_only_its_request(busy_server):
    srv, fifo, seed = busy_server
    results: list = []
    t = _fifo_busy(srv, fifo, results)
    # the worker blocks opening the FIFO; a writer lets the open finish, the read then waits for data
    deadline = time.monotonic() + 30
    fd = None
    while fd is None and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
    assert fd is not None
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = _reader_pid(fifo)
        time.sleep(0.05)
    assert pid is not None and pid != srv.proc.pid
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    os.close(fd)
    status, doc = results[0]
    assert status == 500
    assert doc["error"].endswith("worker process died (crash or out of memory)")
    status, doc = srv.json("POST", "/v1/scan", {"uris": [str(seed)]})
    assert status == 200 and doc["files"][0]["status"] == "scanned" and doc["summary"]["exit_code"] == 0
    assert "ckptscan_worker_deaths_total 1" in srv.request("GET", "/metrics", auth=False)[2].decode()


def test_async_job_and_sarif(busy_server):
    srv, _, seed = busy_server
    status, headers, body = srv.request("POST", "/v1/scan", {"uris": [str(seed)], "async": True})
    assert status == 202
    job = json.loads(body)["job"]
    deadline = time.monotonic() + 60
    while True:
        status, doc = srv.json("GET", f"/v1/jobs/{job}")
        assert status == 200
        if doc["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert doc["state"] == "done" and doc["report"]["files"][0]["status"] == "scanned"
    status, _, sarif = srv.request("GET", f"/v1/jobs/{job}?format=sarif")
    assert status == 200 and json.loads(sarif)["version"] == "2.1.0"
    status, _, sarif = srv.request("POST", "/v1/scan?format=sarif", {"uris": [str(seed)]})
    assert status == 200 and json.loads(sarif)["runs"][0]["tool"]["driver"]["name"] == "ckptscan"
    assert srv.json("GET", "/v1/jobs/nope")[0] == 404


def test_sigterm_lets_the_running_scan_finish(busy_server):
    srv, fifo, _ = busy_server
    results: list = []
    t = _fifo_busy(srv, fifo, results)
    deadline = time.monotonic() + 30
    while srv.request("GET", "/readyz", auth=False)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert srv.proc.poll() is None  # still draining
    _release(fifo)
    t.join(60)
    assert results and results[0][0] == 200
    assert srv.proc.wait(60) == 0


def _metrics(srv) -> dict[str, float]:
    """Parse the exposition text (every line must be a comment or ``name{labels} value``)."""
    import re

    out = {}
    for line in srv.request("GET", "/metrics", auth=False)[2].decode().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) ckptscan_\w+ ", line), line
            continue
        m = re.match(r'^(ckptscan_\w+(?:\{(?:\w+="[^"]*",?)+\})?) (\S+)$', line)
        assert m, line
        out[m[1]] = float(m[2])
    return out


def test_metrics_count_verdicts_bytes_and_seconds(server, site):
    root, _ = site
    before = _metrics(server)
    status, doc = server.json("POST", "/v1/scan", {"uris": [f"{root}/allowed/seed_broken.keras", f"{root}/allowed/nope.keras"]})
    assert status == 200
    after = _metrics(server)
    assert after['ckptscan_scans_total{verdict="fail"}'] == before['ckptscan_scans_total{verdict="fail"}'] + 1
    assert after['ckptscan_scans_total{verdict="unreadable"}'] == before['ckptscan_scans_total{verdict="unreadable"}'] + 1
    assert after["ckptscan_bytes_read_total"] - before["ckptscan_bytes_read_total"] == doc["files"][0]["bytes_scanned"] > 0
    assert after["ckptscan_scan_seconds_count"] == before["ckptscan_scan_seconds_count"] + 2
    assert after['ckptscan_scan_seconds_bucket{le="+Inf"}'] == after["ckptscan_scan_seconds_count"]
    assert after['ckptscan_requests_total{route="/v1/scan",status="200"}'] >= 1
    assert after["ckptscan_queue_depth"] == 0


def test_timeout_fails_only_that_file(tmp_path):
    """``--timeout`` applies per file in the workers: a file that never delivers a byte is an
    error after the timeout; the other file of the same request is scanned."""
    (tmp_path / "allowed").mkdir()
    fifo = tmp_path / "allowed" / "stuck.keras"
    os.mkfifo(fifo)
    shutil.copy(K3 / "seed.keras", tmp_path / "allowed" / "seed.keras")
    srv = CkptscanServer("--allow", f"{tmp_path}/allowed/", "--workers", "2", "--timeout", "1")
    try:
        t0 = time.monotonic()
        status, doc = srv.json("POST", "/v1/scan", {"uris": [str(fifo), f"{tmp_path}/allowed/seed.keras"]})
        assert status == 200, doc
        assert doc["files"][0]["status"] == "error" and "timed out after 1 s" in doc["files"][0]["reason"]
        assert doc["files"][1]["status"] == "scanned"
        assert time.monotonic() - t0 < 30
        assert srv.json("POST", "/v1/scan", {"uris": [f"{tmp_path}/allowed/seed.keras"]})[0] == 200
    finally:
        srv.close()
