"""``gs://``, ``az://`` and ``hf://`` against servers started here on 127.0.0.1.

* ``gs://``: gcsfs against ``gcp-storage-emulator`` (the GCS JSON API, in this process);
* ``az://``: adlfs against Azurite's blob service (npm ``azurite``, a node process),
  with its public development account given as ``AZURE_STORAGE_CONNECTION_STRING``;
* ``hf://``: huggingface_hub's ``HfFileSystem`` against the minimal Hub endpoint of
  tests/servers.py (repo info, tree, paths-info, resolve with ``Range``), through ``HF_ENDPOINT``.

For each: ``inspect`` and ``scan`` of a ``.keras`` and of a bare ``.weights.h5`` with its
config, over the URI, equal the local results (in Python and through the CLI, whose
only credentials and endpoints are environment variables), and ``inspect`` of a larger
``.keras`` reads a small fraction of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_module

need_module("fsspec")

from ckptscan import open_checkpoint  # noqa: E402
from ckptscan.inventory import inventory  # noqa: E402
from ckptscan.formats import open_remote  # noqa: E402
from ckptscan.engine import ScanOptions, scan_file  # noqa: E402

from conftest import FIXTURES  # noqa: E402
from servers import AZURITE_KEY, Azurite, GcsEmulator, HfHub, azurite_binary, dense_bn_keras, need  # noqa: E402

K3 = FIXTURES / "k3"
KERAS = "k3/seed_broken.keras"
WEIGHTS = "k3/seed_broken.weights.h5"
CONFIG = K3 / "seed.config.json"
FILES = (KERAS, WEIGHTS)



def _installed(mod: str) -> bool:
    """Installed, without importing it (gcsfs reads its environment when imported)."""
    import importlib.util

    return importlib.util.find_spec(mod) is not None


# --- helpers ----------------------------------------------------------------------------------
class Env:
    """Set environment variables (and fsspec's config from the ``FSSPEC_*`` ones) until :meth:`restore`."""

    def __init__(self, env: dict[str, str]):
        import fsspec.config

        self.saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        self.conf = json.loads(json.dumps(fsspec.config.conf))
        fsspec.config.set_conf_env(fsspec.config.conf, envdict=env)  # what fsspec does at import time
        _clear_fsspec_cache()

    def restore(self) -> None:
        import fsspec.config

        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fsspec.config.conf.clear()
        fsspec.config.conf.update(self.conf)
        _clear_fsspec_cache()


def _clear_fsspec_cache() -> None:
    import fsspec

    for proto in ("gs", "gcs", "az", "abfs", "hf"):
        try:
            fsspec.get_filesystem_class(proto).clear_instance_cache()
        except (ImportError, ValueError, AttributeError):
            pass


def _rows(doc: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("file", "offset")} for r in doc["variables"]]


def _scan_doc(fr) -> dict:
    from ckptscan.render.jsonl import file_result_to_dict

    d = file_result_to_dict(fr)
    for k in ("path", "seconds"):
        d.pop(k, None)
    return json.loads(json.dumps(d, default=str).replace(fr.path, "<FILE>"))


def _options(rel: str) -> ScanOptions:
    return ScanOptions(config=str(CONFIG) if rel.endswith(".weights.h5") else None)


def _config(rel: str):
    return str(CONFIG) if rel.endswith(".weights.h5") else None


@pytest.fixture(scope="module")
def big_keras(tmp_path_factory) -> Path:
    """A ~8.5 MB .keras (two 1024x1024 Dense layers with BatchNormalization, and a head)."""
    return dense_bn_keras(tmp_path_factory.mktemp("bigc"), layers=2, width=1024, seed=2)


def _upload(fs, big_keras: Path) -> None:
    """The fixtures under ``ckpts/fixtures/`` and the big .keras at ``ckpts/big/big.keras``."""
    for rel in FILES:
        fs.put_file(str(FIXTURES / rel), f"ckpts/fixtures/{rel}")
    fs.put_file(str(big_keras), "ckpts/big/big.keras")


def check_equal_local(base: str) -> None:
    """In-process: inspect and scan of each file under ``base`` equal the local results."""
    for rel in FILES:
        uri = f"{base}/{rel}"
        with open_checkpoint(FIXTURES / rel, config=_config(rel)) as local, \
                open_checkpoint(uri, config=_config(rel)) as remote:
            assert remote.format == local.format and remote.direct_io is False, rel
            assert _rows(inventory(remote, include_optimizer=True)) == _rows(inventory(local, include_optimizer=True)), rel
            assert remote.remote_stats.bytes_fetched > 0
        got, want = scan_file(uri, _options(rel)), scan_file(str(FIXTURES / rel), _options(rel))
        assert got.status == "scanned" and {f.rule_id for f in got.findings} >= {"BN001"}, rel
        assert _scan_doc(got) == _scan_doc(want), rel


def check_cli_equal_local(base: str, env: dict[str, str]) -> None:
    """Through the CLI in a fresh process whose only endpoint and credentials are ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GOOGLE_", "HF_", "FSSPEC_"))}
    full.update(env)
    for rel in FILES:
        cfg = ["--config", str(CONFIG)] if rel.endswith(".weights.h5") else []
        outs = []
        for target in (f"{base}/{rel}", str(FIXTURES / rel)):
            i = subprocess.run([sys.executable, "-m", "ckptscan", "inspect", "--json", *cfg, target], capture_output=True,
                               text=True, env=full, timeout=180, stdin=subprocess.DEVNULL)
            s = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "--format", "jsonl", *cfg, target],
                               capture_output=True, text=True, env=full, timeout=180, stdin=subprocess.DEVNULL)
            assert i.returncode == 0, (target, i.stderr[-2000:])
            assert s.returncode == 1, (target, s.stderr[-2000:])  # seed_broken has error findings
            rec = json.loads(s.stdout)
            rec.pop("seconds")
            assert rec.pop("path") == target
            outs.append((_rows(json.loads(i.stdout)), rec))
        assert outs[0] == outs[1], rel


def check_large_fraction(uri: str, size: int, served=None) -> tuple[int, int]:
    """inspect reads a small fraction of a larger .keras, a full read about 1x; ``(inspect, full)`` bytes."""
    base = served() if served else 0
    with open_remote(uri) as ckpt:
        inventory(ckpt)
        inspect_bytes = ckpt.remote_stats.bytes_fetched
        if served is not None:  # what the server says it sent
            assert _settled(served, base + inspect_bytes) - base == inspect_bytes
        for v in ckpt.weights():
            for _ in ckpt.iter_blocks(v):
                pass
        full = ckpt.remote_stats.bytes_fetched
    assert inspect_bytes < 0.08 * size, (inspect_bytes, size)
    assert 0.95 * size < full < 1.15 * size, (full, size)
    if served is not None:
        assert _settled(served, base + full) - base == full
    return inspect_bytes, full


def _settled(served, expected: int) -> int:
    """The server's count once it has logged every response (it counts after writing)."""
    import time

    deadline = time.monotonic() + 5
    while served() < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return served()


# --- gs:// --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcs(big_keras):
    need(_installed("gcsfs") and _installed("gcp_storage_emulator"), "gcsfs and gcp-storage-emulator (pip)")
    srv = GcsEmulator(bucket="ckpts")
    env = Env(srv.env)
    import fsspec
    import gcsfs.core

    # gcsfs picks its default class when first imported: if that was before this fixture set
    # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, use the JSON-API class the emulator speaks anyway
    saved = {p: fsspec.registry.get(p) for p in ("gs", "gcs")}
    for proto in saved:
        fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)
    fs = fsspec.filesystem("gs")
    _upload(fs, big_keras)
    yield srv
    from fsspec.registry import _registry

    for proto, cls in saved.items():
        if cls is None:
            _registry.pop(proto, None)
        else:
            _registry[proto] = cls
    env.restore()
    srv.close()


def test_gs_inspect_and_scan_equal_local(gcs):
    check_equal_local("gs://ckpts/fixtures")


def test_gs_cli_from_environment(gcs):
    check_cli_equal_local("gs://ckpts/fixtures", gcs.env)


def test_gs_large_keras_fraction(gcs, big_keras):
    check_large_fraction("gs://ckpts/big/big.keras", big_keras.stat().st_size)


# --- az:// --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def azure(big_keras, tmp_path_factory):
    need(_installed("adlfs"), "adlfs (pip)")
    need(azurite_binary() is not None, "azurite (npm install -g azurite)")
    srv = Azurite(tmp_path_factory.mktemp("azurite"))
    env = Env(srv.env)
    import fsspec

    fs = fsspec.filesystem("az")
    fs.mkdir("ckpts")
    _upload(fs, big_keras)
    yield srv
    env.restore()
    srv.close()


def test_az_inspect_and_scan_equal_local(azure):
    check_equal_local("az://ckpts/fixtures")


def test_az_cli_from_environment(azure):
    check_cli_equal_local("az://ckpts/fixtures", azure.env)


def test_az_large_keras_fraction(azure, big_keras):
    check_large_fraction("az://ckpts/big/big.keras", big_keras.stat().st_size)


def test_az_wrong_key_is_one_error_line(azure):
    """The key comes from the environment only: a wrong one is refused by the server, in one line."""
    import base64

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "FSSPEC_"))}
    env["AZURE_STORAGE_CONNECTION_STRING"] = azure.env["AZURE_STORAGE_CONNECTION_STRING"].replace(
        AZURITE_KEY, base64.b64encode(b"not the key" * 6).decode())
    uri = f"az://ckpts/fixtures/{KERAS}"
    p = subprocess.run([sys.executable, "-m", "ckptscan", "inspect", uri],
                       capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stdout
    assert p.stderr.startswith(f"ckptscan: error: {uri}: "), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# --- hf:// --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(big_keras, tmp_path_factory):
    need(_installed("huggingface_hub"), "huggingface_hub (pip)")
    root = tmp_path_factory.mktemp("hubrepo")
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(FIXTURES / rel)
    (root / "big").mkdir()
    (root / "big" / "big.keras").symlink_to(big_keras)
    srv = HfHub(root, repo="ckptscan/fixtures")
    srv.env["HF_HOME"] = str(tmp_path_factory.mktemp("hfhome"))
    # in this process huggingface_hub may already be imported (HF_ENDPOINT is read then):
    # give the endpoint through fsspec's config, as FSSPEC_HF_ENDPOINT would
    env = Env({**srv.env, "FSSPEC_HF_ENDPOINT": srv.url})
    yield srv
    env.restore()
    srv.close()


def test_hf_inspect_and_scan_equal_local(hub):
    check_equal_local("hf://ckptscan/fixtures")
    check_equal_local("hf://ckptscan/fixtures@main")  # an explicit revision


def test_hf_cli_from_environment(hub):
    check_cli_equal_local("hf://ckptscan/fixtures", {k: v for k, v in hub.env.items()})


def test_hf_large_keras_fraction_counted_by_the_server(hub, big_keras):
    # HfFileSystem has no ranged cat_file of its own: without cache_type="none" every
    # small read would pull a 5 MB read-ahead block
    check_large_fraction("hf://ckptscan/fixtures/big/big.keras", big_keras.stat().st_size, served=hub.bytes_sent)


def test_hf_missing_file_revision_and_repo(hub):
    from ckptscan.errors import NotAnArchiveError

    for uri in ("hf://ckptscan/fixtures/k3/nope.keras", "hf://ckptscan/fixtures@nope/k3/seed_broken.keras",
                "hf://ckptscan/other/k3/seed_broken.keras"):
        with pytest.raises(NotAnArchiveError) as exc:
            open_remote(uri)
        assert str(exc.value) == f"{uri}: no such file or directory"


def test_generic_cat_file_backend_whose_open_takes_no_cache_type(tmp_path):
    """fsspec's generic cat_file passes cache_type to open(); a backend that refuses it still reads."""
    import io

    from fsspec.spec import AbstractFileSystem

    from ckptscan.formats.remote import RangeReader

    data = (K3 / "seed_broken.keras").read_bytes()

    class Picky(AbstractFileSystem):
        protocol = "picky"
        opened: list = []

        def info(self, path, **kw):
            return {"name": path, "size": len(data), "type": "file"}

        def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None):  # no **kwargs
            self.opened.append(path)
            return io.BytesIO(data)

    fs = Picky(skip_instance_cache=True)
    r = RangeReader(fs, "x.keras", "picky://x.keras", block_size=4096)
    assert r._cat_kw == {"cache_type": "none"}
    r.seek(1000)
    assert r.read(300_000) == data[1000:301_000]
    assert r._cat_kw == {} and r.pread(5, 10) == data[5:15]
    import fsspec
    from fsspec.registry import _registry

    fsspec.register_implementation("picky", Picky, clobber=True)
    try:
        with open_checkpoint(K3 / "seed_broken.keras") as local, open_remote("picky://x.keras") as remote:
            assert _rows(inventory(remote, include_optimizer=True)) == _rows(inventory(local, include_optimizer=True))
    finally:
        _registry.pop("picky", None)


# --- a missing server -------------------------------------------------------------------------------
def test_missing_server_skips_locally_and_fails_on_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="azurite not installed"):
        need(False, "azurite")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"azurite is missing on CI \(.ci/run installs it\)"):
        need(False, "azurite")
    need(True, "azurite")  # present: nothing happens
