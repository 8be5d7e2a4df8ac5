"""TensorFlow checkpoints behind a URI, over real servers (``tests/servers.py``).

* HTTP: Debian's nginx serving ``fixtures/`` (static files, no listing);
* S3: moto in server mode, through s3fs, with the TensorFlow fixtures uploaded.

Each way of naming a checkpoint (``.index`` object, prefix, folder with ``.index``, folder
with a ``checkpoint`` state file, SavedModel folder) scans to the same verdict, findings
and inventory as the local copy; the data shards are read by ranged requests; a data
shard named alone and ``fix`` of a remote TensorFlow checkpoint are refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import FIXTURES, run_cli
from servers import Nginx, need, nginx_binary

TF = FIXTURES / "tfckpt"
#: (name relative to fixtures/tfckpt as a user would give it, the local equivalent)
NAMES = [
    ("tf1/model.ckpt.index", "tf1/model.ckpt.index"),  # an .index object
    ("tf1/model.ckpt", "tf1/model.ckpt"),  # a prefix (no such object)
    ("partitioned/model.ckpt", "partitioned/model.ckpt"),  # partitioned variables stitched remotely too
    ("seed_broken_sw/ckpt", "seed_broken_sw/ckpt"),  # object graph, optimizer slots, faults
    ("nested_broken_sm", "nested_broken_sm"),  # SavedModel folder (keras_metadata.pb)
    ("mgr", "mgr"),  # folder with a checkpoint state file: its latest (ckpt-2)
    ("tf1", "tf1"),  # a state file whose absolute path is from another machine
]


def _key(fr) -> str:
    from ckptscan.render.jsonl import file_result_to_dict

    d = file_result_to_dict(fr)
    for k in ("path", "seconds"):
        d.pop(k, None)
    for f in d["findings"]:
        f.pop("file", None)
    # scan --all-checkpoints expands local state-file folders only: the local note names it
    d["notes"] = [n.replace(", or scan --all-checkpoints for every one listed", "") for n in d.get("notes") or []]
    return json.dumps(d, sort_keys=True, default=str).replace(fr.path, "<FILE>")


def _rows(ck) -> list:
    from ckptscan.inventory import inventory

    return [{k: v for k, v in r.items() if k not in ("file", "offset")}
            for r in inventory(ck, include_optimizer=True)["variables"]]


@pytest.fixture(scope="module")
def http_url(tmp_path_factory):
    need(nginx_binary() is not None, "nginx (apt-get install nginx-light)")
    base = tmp_path_factory.mktemp("tfhttp")
    root = base / "served"
    root.mkdir()
    (root / "fixtures").symlink_to(FIXTURES)
    srv = Nginx(root, base / "nginx")
    yield f"{srv.url}/fixtures/tfckpt", srv
    srv.close()


@pytest.fixture(scope="module")
def s3_url():
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
    fs.mkdir("tfck")
    for p in TF.rglob("*"):
        if p.is_file():
            fs.put_file(str(p), f"tfck/run/{p.relative_to(TF)}")
    yield "s3://tfck/run", fs
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_remote_scan_and_inspect_equal_local(scheme, request):
    from ckptscan.engine import scan_file
    from ckptscan.formats import open_checkpoint

    base = request.getfixturevalue("http_url" if scheme == "http" else "s3_url")[0]
    for rel, local_rel in NAMES:
        uri = f"{base}/{rel}"
        with open_checkpoint(TF / local_rel) as local, open_checkpoint(uri) as remote:
            assert remote.format == local.format and remote.direct_io is False, rel
            assert _rows(remote) == _rows(local), rel
            assert remote.remote_stats.bytes_fetched > 0
        local_fr, remote_fr = scan_file(str(TF / local_rel)), scan_file(uri)
        assert remote_fr.status == "scanned", (rel, remote_fr.reason)
        assert _key(remote_fr) == _key(local_fr), rel


def test_s3_cli_scan_of_a_prefix_reports_the_fault_and_exits_1(s3_url):
    base, _ = s3_url
    p = run_cli("scan", "--format", "json", f"{base}/partitioned/model.ckpt")
    assert p.returncode == 1, p.stderr
    [f] = json.loads(p.stdout)["files"][0]["findings"]
    assert (f["rule_id"], f["path"], f["indices"]) == ("BN001", "bn/moving_variance", [9])


def test_s3_data_is_read_by_ranges_not_whole(s3_url, tmp_path):
    """A tensor read fetches its own byte range of the shard, not the whole shard."""
    from ckptscan.formats import open_checkpoint

    base, _ = s3_url
    with open_checkpoint(f"{base}/seed_broken_sw/ckpt") as ck:
        before = ck.remote_stats.bytes_fetched
        var = next(v for v in ck.variables if v.name == "moving_variance" and v.size == 32)
        ck.read(var)
        fetched = ck.remote_stats.bytes_fetched - before
        shard = (TF / "seed_broken_sw" / "ckpt.data-00000-of-00001").stat().st_size
        assert 0 < fetched <= 64 << 10 < shard


def test_s3_state_file_falls_back_to_the_listed_index(s3_url):
    """A state file naming a checkpoint that is gone: the newest .index the folder lists."""
    from ckptscan.formats import open_checkpoint

    base, fs = s3_url
    fs.put_file(str(TF / "mgr" / "ckpt-1.index"), "tfck/stale/ckpt-1.index")
    fs.put_file(str(TF / "mgr" / "ckpt-1.data-00000-of-00001"), "tfck/stale/ckpt-1.data-00000-of-00001")
    fs.pipe_file("tfck/stale/checkpoint", b'model_checkpoint_path: "/elsewhere/ckpt-9"\n')
    with open_checkpoint(f"{base.rsplit('/', 1)[0]}/stale") as ck:
        assert ck.prefix.endswith("stale/ckpt-1")


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_hostile_and_refused_remote_names_are_one_line(scheme, request, tmp_path):
    base = request.getfixturevalue("http_url" if scheme == "http" else "s3_url")[0]
    cases = [
        (f"{base}/tf1/model.ckpt.data-00000-of-00001", "data shard of a TensorFlow checkpoint: scan its index"),
        (f"{base}/tf1/nothing", "no such file or directory"),
    ]
    for uri, needle in cases:
        p = run_cli("inspect", uri)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"ckptscan: error: {uri}: ") and needle in p.stderr


def test_http_missing_shard_is_one_line(http_url, tmp_path):
    base, srv = http_url
    d = srv.root / "noshard"
    d.mkdir(exist_ok=True)
    shutil.copy(TF / "tf1" / "model.ckpt.index", d / "model.ckpt.index")
    uri = f"{srv.url}/noshard/model.ckpt"
    p = run_cli("scan", uri)
    assert p.returncode == 2 and p.stderr.splitlines()[0] == (
        f"ckptscan: error: {uri}: data shard model.ckpt.data-00000-of-00001 is missing"), p.stderr


def test_fix_of_a_remote_tensorflow_checkpoint_is_refused(s3_url, tmp_path):
    base, fs = s3_url
    before = {p: fs.cat_file(p) for p in fs.find("tfck/run/partitioned")}
    for target in (f"{base}/tf1/model.ckpt.index", f"{base}/mgr"):
        p = run_cli("fix", target, "--output", str(tmp_path / "out"))
        assert p.returncode == 1, (p.stdout, p.stderr)  # a refused file, as every refused fix
        assert p.stdout.startswith(f"{target}: refused: TensorFlow checkpoint behind a URI: fix works on a local copy")
        assert "1 refused" in p.stderr
        assert not (tmp_path / "out").exists()
    assert {p: fs.cat_file(p) for p in fs.find("tfck/run/partitioned")} == before


def test_s3_folder_scan_takes_each_tensorflow_checkpoint_once_as_locally(s3_url):
    """``scan s3://…/run`` lists the folder: a SavedModel and each state-file folder are one
    checkpoint, as in a local walk, and every verdict equals the local one."""
    base, _ = s3_url
    local = run_cli("scan", "--format", "json", str(TF))
    remote = run_cli("scan", "--format", "json", base)
    assert remote.returncode == local.returncode == 1, remote.stderr

    def verdicts(doc, root):
        return {f["path"][len(root):].strip("/"): (f["status"], f["format"], sorted(
            (x["rule_id"], x["path"], tuple(x["indices"])) for x in f["findings"])) for f in doc["files"]
            if f["status"] != "skipped"}  # the local walk also lists the .json files it skips

    got, want = verdicts(json.loads(remote.stdout), base), verdicts(json.loads(local.stdout), str(TF))
    assert got == want and {"nested_broken_sm", "mgr", "partitioned", "tf1"} <= set(got), (sorted(got), sorted(want))


def test_http_index_over_the_bound_is_refused_before_it_is_fetched(http_url, monkeypatch):
    from ckptscan.formats import tfremote

    base, _ = http_url
    monkeypatch.setattr(tfremote, "MAX_INDEX_BYTES", 100)
    uri = f"{base}/tf1/model.ckpt"
    p = run_cli("inspect", uri)
    assert p.returncode == 2
    assert p.stderr.startswith(f"ckptscan: error: {uri}: index file is ") and "bytes (more than 0 MiB)" in p.stderr
