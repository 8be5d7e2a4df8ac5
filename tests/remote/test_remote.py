"""Remote URIs through fsspec against real servers on 127.0.0.1.

* Debian's nginx (static files, ``Range`` support) on a free port with a temporary
  prefix, its access log (``$body_bytes_sent``) counting on the *server* side every
  byte it sends (missing nginx: skipped locally, a failure under ``CI=true``);
* an S3-compatible server: moto in server mode, driven through s3fs/aiobotocore over
  HTTP, credentials and endpoint from the environment only.

Scan and inspect results over each server equal the local results for every fixture
format; inspect of a large ``.keras`` fetches a small fraction of it, scan about 1x.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import need_module

need_module("fsspec")

from ckptscan import open_checkpoint  # noqa: E402
from ckptscan.errors import NotAnArchiveError  # noqa: E402
from ckptscan.inventory import inventory  # noqa: E402
from ckptscan.formats import open_checkpoint as open_any, open_remote  # noqa: E402
from ckptscan.formats.remote import RangeReader, RemoteError  # noqa: E402

from conftest import FIXTURES, ROOT, fixture_path, run_cli  # noqa: E402
from servers import Nginx, dense_bn_keras, need, nginx_binary  # noqa: E402

K3 = FIXTURES / "k3"
DIVERGE = FIXTURES / "diverge"
_SHARD = re.compile(r"_\d{5}\.weights\.h5$")


def fixture_files() -> list[str]:
    """Every fixture checkpoint (shards are reached through their index), relative to FIXTURES."""
    out = []
    for d in (fixture_path("k3"), fixture_path("tf2")):  # committed: a missing one fails collection
        out += [str(p.relative_to(FIXTURES)) for p in sorted(d.iterdir())
                if (p.suffix in (".keras", ".h5") or p.name.endswith(".weights.json")) and not _SHARD.search(p.name)]
    fixture_path("diverge", "epoch_05.keras")
    out.append("diverge/epoch_05.keras")
    return out


FILES = fixture_files()
_LOCAL_SCANS: dict = {}


def representative() -> list[str]:
    """One fixture per format id, plus the reduced-precision .keras ones and the diverged epoch."""
    seen: dict[str, str] = {}
    for rel in FILES:
        with open_checkpoint(FIXTURES / rel) as c:
            seen.setdefault(c.format, rel)
    extra = [r for r in FILES if r.endswith(".keras") and re.search(r"bf16|fp16|mixed", r)]
    extra += [r for r in FILES if r.startswith("diverge/")]
    return list(dict.fromkeys(list(seen.values()) + extra))


def local_scan(rel: str):
    from ckptscan.engine import scan_file

    if rel not in _LOCAL_SCANS:
        _LOCAL_SCANS[rel] = _scan_key(scan_file(str(FIXTURES / rel)))
    return _LOCAL_SCANS[rel]


# --- servers (tests/servers.py) ----------------------------------------------------------
@pytest.fixture(scope="module")
def big_keras(tmp_path_factory) -> Path:
    """A ~19 MB .keras (four 1024x1152 Dense layers with BatchNormalization)."""
    return dense_bn_keras(tmp_path_factory.mktemp("big"), layers=4, width=1152, seed=1)


@pytest.fixture(scope="module")
def http_server(big_keras):
    """nginx serving FIXTURES at /fixtures/ and the big model at /big/."""
    root = big_keras.parent.parent / "served"
    root.mkdir(exist_ok=True)
    for name in ("fixtures", "big"):
        link = root / name
        if not link.exists():
            link.symlink_to(FIXTURES if name == "fixtures" else big_keras.parent)
    need(nginx_binary() is not None, "nginx (apt-get install nginx-light)")
    srv = Nginx(root, big_keras.parent.parent / "nginx")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def s3_server(big_keras):
    """moto's S3 server on 127.0.0.1 with bucket ``ckpts`` holding the fixtures; yields the env."""
    import importlib.util

    need(importlib.util.find_spec("s3fs") is not None and importlib.util.find_spec("moto") is not None,
         "s3fs and moto[server] (pip)")
    import moto.server as moto_server
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem cached by another module points at its stopped server
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("ckpts")
    for p in FIXTURES.rglob("*"):
        if p.is_file() and p.suffix in (".keras", ".h5", ".json"):
            fs.put_file(str(p), f"ckpts/fixtures/{p.relative_to(FIXTURES)}")
    fs.put_file(str(big_keras), "ckpts/big/big.keras")
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def _clear_fsspec_cache():
    import fsspec

    for cls in list(fsspec.registry.values()) if hasattr(fsspec.registry, "values") else []:
        getattr(cls, "clear_instance_cache", lambda: None)()


def _inventory_rows(doc: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("file", "offset")} for r in doc["variables"]]


def _scan_key(fr) -> tuple:
    from ckptscan.render.jsonl import file_result_to_dict

    d = file_result_to_dict(fr)
    for k in ("path", "seconds"):
        d.pop(k, None)
    for f in d["findings"]:
        f.pop("file", None)
        f["message"] = f["message"]
    return json.dumps(d, sort_keys=True, default=str).replace(fr.path, "<FILE>")


# --- the reader -----------------------------------------------------------------------------
@given(reads=st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 300_000)), min_size=1, max_size=25),
       block=st.sampled_from([1, 7, 4096, 32768]))
@settings(max_examples=30, deadline=None)
def test_range_reader_reads_exactly_the_bytes(reads, block):
    import fsspec

    path = fixture_path("k3", "seed.keras")
    data = path.read_bytes()
    fs = fsspec.filesystem("file")
    r = RangeReader(fs, str(path), str(path), block_size=block)
    for off, n in reads:
        off = off % (len(data) + 10)
        r.seek(off)
        assert r.read(n) == data[off : off + n]
        assert r.tell() == min(off + n, len(data)) if off <= len(data) else off
    assert r.stats.bytes_fetched <= len(data) * (len(reads) + 1) + block * len(reads)
    r.close()


# --- HTTP -----------------------------------------------------------------------------------
def test_http_inspect_equal_local_for_every_fixture(http_server):
    assert len(FILES) >= 30, FILES
    for rel in FILES:
        uri = f"{http_server.url}/fixtures/{rel}"
        with open_checkpoint(FIXTURES / rel) as local, open_checkpoint(uri) as remote:
            assert remote.format == local.format and remote.direct_io is False, rel
            assert _inventory_rows(inventory(remote, include_optimizer=True)) == _inventory_rows(
                inventory(local, include_optimizer=True)), rel


def test_http_scan_equal_local_for_every_format(http_server):
    from ckptscan.engine import scan_file

    reps = representative()
    for rel in reps:
        uri = f"{http_server.url}/fixtures/{rel}"
        with open_checkpoint(FIXTURES / rel) as local, open_checkpoint(uri) as remote:
            for v in local.weights(include_optimizer=True)[:40]:
                np.testing.assert_array_equal(remote.read(remote.find(v.path)), local.read(v), err_msg=f"{rel} {v.path}")
        assert _scan_key(scan_file(uri)) == local_scan(rel), rel
    assert len(reps) >= 5


def test_http_inspect_large_keras_fetches_a_small_fraction(http_server, big_keras):
    size = big_keras.stat().st_size
    uri = f"{http_server.url}/big/big.keras"
    before = len(http_server.requests())
    with open_remote(uri) as ckpt:
        inventory(ckpt)
        stats = ckpt.remote_stats
        # nginx's access log ($body_bytes_sent): what the server actually sent
        inspect_bytes, inspect_reqs = http_server.settled(stats.bytes_fetched, before)
        assert stats.bytes_fetched == inspect_bytes  # client and server agree
        assert inspect_bytes < 0.03 * size, (inspect_bytes, size)
        for v in ckpt.weights():
            for block in ckpt.iter_blocks(v):
                assert np.isfinite(block).all()
        scan_bytes, scan_reqs = http_server.settled(ckpt.remote_stats.bytes_fetched, before)
        assert scan_bytes == ckpt.remote_stats.bytes_fetched
    assert size * 0.95 < scan_bytes < size * 1.15, (scan_bytes, size)
    assert all(r[1] == "/big/big.keras" for r in http_server.requests()[before:])
    print(f"\nnginx bytes sent: inspect {inspect_bytes} ({inspect_bytes / size:.2%}, {inspect_reqs} requests), "
          f"full read {scan_bytes} ({scan_bytes / size:.3f}x, {scan_reqs} requests) of {size}")


def test_http_cli_inspect_and_scan_equal_local(http_server):
    rel = "k3/seed_broken.keras"
    fixture_path(rel)
    uri = f"{http_server.url}/fixtures/{rel}"
    r = run_cli("inspect", "--json", uri)
    assert r.returncode == 0, r.stderr
    with open_checkpoint(FIXTURES / rel) as local:
        assert _inventory_rows(json.loads(r.stdout)) == _inventory_rows(json.loads(json.dumps(inventory(local))))
    rs = run_cli("scan", "--format", "jsonl", uri)
    assert rs.returncode == 1, rs.stderr
    from ckptscan.render.jsonl import render_jsonl
    from ckptscan.engine import scan_file

    got = json.loads(rs.stdout)
    want = json.loads(render_jsonl(scan_file(str(FIXTURES / rel))))
    for d in (got, want):
        d.pop("seconds")
        d.pop("path")
    assert got == want and got["findings"]


def test_http_diff_remote_against_local(http_server):
    from ckptscan.history import diff

    broken = fixture_path("k3", "seed_broken_legacy.h5")
    a = diff(fixture_path("k3", "seed.keras"), broken)
    b = diff(f"{http_server.url}/fixtures/k3/seed.keras", broken)
    assert [v.to_dict() for v in a.variables] == [v.to_dict() for v in b.variables]


def test_http_missing_object(http_server):
    uri = f"{http_server.url}/fixtures/nope.keras"
    with pytest.raises(NotAnArchiveError) as exc:
        open_remote(uri)
    assert str(exc.value) == f"{uri}: no such file or directory"
    p = run_cli("inspect", uri)
    assert p.returncode == 2 and p.stderr == f"ckptscan: error: {uri}: no such file or directory\n"


def test_http_truncated_zip_is_an_error_not_a_crash(http_server, tmp_path):
    data = fixture_path("k3", "seed.keras").read_bytes()
    (http_server.root / "trunc").mkdir(exist_ok=True)
    (http_server.root / "trunc" / "t.keras").write_bytes(data[: len(data) // 2])
    p = run_cli("inspect", f"{http_server.url}/trunc/t.keras")
    assert p.returncode == 2 and p.stderr.startswith(f"ckptscan: error: {http_server.url}/trunc/t.keras: ")


def test_file_uri_is_local():
    with open_any(f"file://{fixture_path('k3', 'seed.keras')}") as ckpt:
        assert ckpt.direct_io is True and ckpt.format == "keras-zip"


def test_missing_extra_gives_one_line_hint():
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "from ckptscan.cli import main\n"
        "sys.exit(main(['inspect', 's3://bucket/model.keras']))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2
    assert p.stderr == "ckptscan: error: s3://bucket/model.keras: remote URIs need the optional extra: pip install 'ckptscan[remote]'\n"


def test_unknown_protocol_is_an_error():
    with pytest.raises(RemoteError, match="unsupported URI|needs a backend package"):
        open_remote("nosuchproto://x/y.keras")


# --- S3 (moto server) -------------------------------------------------------------------------
def test_s3_scan_and_inspect_equal_local_for_every_format(s3_server):
    from ckptscan.engine import scan_file

    for rel in representative():
        uri = f"s3://ckpts/fixtures/{rel}"
        with open_checkpoint(FIXTURES / rel) as local, open_checkpoint(uri) as remote:
            assert remote.format == local.format, rel
            assert _inventory_rows(inventory(remote, include_optimizer=True)) == _inventory_rows(
                inventory(local, include_optimizer=True)), rel
        assert _scan_key(scan_file(uri)) == local_scan(rel), rel


def test_s3_large_keras_fetch_fraction(s3_server, big_keras):
    size = big_keras.stat().st_size
    with open_remote("s3://ckpts/big/big.keras") as ckpt:
        inventory(ckpt)
        inspect_bytes = ckpt.remote_stats.bytes_fetched
        for v in ckpt.weights():
            for _ in ckpt.iter_blocks(v):
                pass
        full = ckpt.remote_stats.bytes_fetched
    assert inspect_bytes < 0.03 * size
    assert size * 0.95 < full < size * 1.15
    print(f"\ns3 bytes: inspect {inspect_bytes / size:.2%}, full read {full / size:.3f}x of {size}")


def test_s3_cli_credentials_from_environment_only(s3_server):
    """A real process (not ``main`` in this one, whose clients may cache credentials)."""
    fixture_path("diverge", "epoch_05.keras")
    env = {**os.environ, **s3_server, "CKPTSCAN_REMOTE_STATS": "1"}
    p = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "--format", "json", "s3://ckpts/fixtures/diverge/epoch_05.keras"],
                       capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert {f["rule_id"] for f in doc["files"][0]["findings"]} >= {"BN001", "BN004"}
    assert re.search(r"ckptscan: remote: s3://ckpts/fixtures/diverge/epoch_05.keras: fetched \d+ of \d+ bytes", p.stderr)
    # without credentials in the environment, the same command fails with one line
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL_S3"}
    bare.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    q = subprocess.run([sys.executable, "-m", "ckptscan", "inspect", "s3://ckpts/fixtures/diverge/epoch_05.keras"],
                       capture_output=True, text=True, env=bare, timeout=120, stdin=subprocess.DEVNULL)
    assert q.returncode == 2 and q.stderr.startswith("ckptscan: error: s3://ckpts/fixtures/diverge/epoch_05.keras: ")
    assert len(q.stderr.strip().splitlines()) == 1


def test_s3_timeline_over_remote_epochs(s3_server):
    manifest_path = fixture_path("diverge", "manifest.json")
    from ckptscan.history import timeline

    manifest = json.loads(manifest_path.read_text())
    uris = [f"s3://ckpts/fixtures/diverge/{e['file']}" for e in manifest["epochs"]]
    tl = timeline(uris[::-1])
    assert tl.first_bad.path.endswith(f"epoch_{manifest['first_bad_epoch']:02d}.keras")
    assert tl.last_good.path.endswith(f"epoch_{manifest['last_good_epoch']:02d}.keras")


def test_s3_fix_writes_a_new_object_never_the_source(s3_server, tmp_path):
    fixture_path("diverge", "epoch_05.keras")
    import s3fs

    from ckptscan.patch.remote import fix_remote
    from ckptscan.engine import scan_file

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    src = "s3://ckpts/fixtures/diverge/epoch_05.keras"
    before = fs.cat_file(src)
    with pytest.raises(RemoteError, match="refusing to overwrite the source object"):
        fix_remote(src, output=src)
    m = fix_remote(src, output="s3://ckpts/fixed/epoch_05.keras", ref="s3://ckpts/fixtures/diverge/epoch_04.keras",
                   strategy="from")
    assert m.files[0].status == "fixed" and m.files[0].output == "s3://ckpts/fixed/epoch_05.keras"
    assert fs.cat_file(src) == before  # the source object is untouched
    fixed = scan_file("s3://ckpts/fixed/epoch_05.keras")
    assert fixed.status == "scanned" and not [f for f in fixed.findings if f.severity.value == "error"]
    local = tmp_path / "e5.keras"
    m2 = fix_remote(src, output=str(local), ref=str(DIVERGE / "epoch_04.keras"), strategy="from")
    assert m2.files[0].status == "fixed" and local.exists()


def test_s3_unzipped_keras_folder(s3_server, tmp_path):
    fixture_path("k3", "seed_broken.keras")
    import zipfile

    import s3fs

    folder = tmp_path / "seed_broken_dir"
    with zipfile.ZipFile(K3 / "seed_broken.keras") as zf:
        zf.extractall(folder)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for p in folder.iterdir():
        fs.put_file(str(p), f"ckpts/dirs/seed_broken_dir/{p.name}")
    with open_checkpoint(folder) as local, open_checkpoint("s3://ckpts/dirs/seed_broken_dir") as remote:
        assert (remote.format, local.format) == ("keras-dir", "keras-dir")
        assert _inventory_rows(inventory(remote)) == _inventory_rows(inventory(local))
        assert remote.remote_stats.bytes_fetched > 0
    from ckptscan.engine import scan_file

    assert _scan_key(scan_file("s3://ckpts/dirs/seed_broken_dir")) == _scan_key(scan_file(str(folder)))


def test_cli_fix_remote_needs_output_and_writes_a_copy(http_server, tmp_path):
    fixture_path("diverge", "epoch_05.keras")
    uri = f"{http_server.url}/fixtures/diverge/epoch_05.keras"
    ref = f"{http_server.url}/fixtures/diverge/epoch_04.keras"
    p = run_cli("fix", "--from", ref, uri)
    assert p.returncode == 2
    assert f"ckptscan: error: {uri}: a remote object is never patched in place: give --output" in p.stderr
    out = tmp_path / "epoch_05.fixed.keras"
    q = run_cli("fix", "--from", ref, "--output", out, uri)
    assert q.returncode == 0, q.stdout + q.stderr
    assert out.exists()
    assert run_cli("scan", "--select", "BN001,BN004", out).returncode == 0
    assert (DIVERGE / "epoch_05.keras").read_bytes() != out.read_bytes()


def test_s3_globs_and_folders_expand(s3_server):
    from ckptscan.discover import expand_uris

    fixture_path("k3", "seed_sharded.weights.json")
    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    epochs = [f"s3://ckpts/fixtures/diverge/{e['file']}" for e in manifest["epochs"]]
    assert expand_uris(["s3://ckpts/fixtures/diverge/epoch_*.keras"]) == epochs
    listed = expand_uris(["s3://ckpts/fixtures/k3"])
    assert "s3://ckpts/fixtures/k3/seed_sharded.weights.json" in listed
    assert not [u for u in listed if re.search(r"_\d{5}\.weights\.h5$", u)]  # shards come through their index
    assert "s3://ckpts/fixtures/k3/seed.keras" in listed
    assert expand_uris(["local/x.keras", "https://h/x.keras"]) == ["local/x.keras", "https://h/x.keras"]
    # the s3_server fixture has put the endpoint and credentials in this process's environment
    p = run_cli("timeline", "--json", "s3://ckpts/fixtures/diverge/epoch_*.keras")
    doc = json.loads(p.stdout)
    assert p.returncode == 1 and [c["path"] for c in doc["checkpoints"]] == epochs
    assert doc["first_bad"] == f"s3://ckpts/fixtures/diverge/epoch_{manifest['first_bad_epoch']:02d}.keras"
    q = run_cli("scan", "-f", "jsonl", "s3://ckpts/fixtures/diverge/epoch_0[45].keras")
    assert q.returncode == 1, q.stderr
    recs = [json.loads(ln) for ln in q.stdout.splitlines()]
    assert [r["path"] for r in recs] == epochs[3:5]


def test_http_signed_url_with_query_string(http_server):
    """A presigned URL (``?X-Amz-Signature=…``) is a URI, not a glob pattern."""
    fixture_path("diverge", "epoch_05.keras")
    uri = f"{http_server.url}/fixtures/diverge/epoch_05.keras?X-Amz-Expires=60&X-Amz-Signature=abc"
    p = run_cli("scan", "-f", "jsonl", uri)
    assert p.returncode == 1, p.stderr
    rec = json.loads(p.stdout)
    assert rec["path"] == uri and rec["status"] == "scanned"
    assert {f["rule_id"] for f in rec["findings"]} >= {"BN001", "BN004"}
