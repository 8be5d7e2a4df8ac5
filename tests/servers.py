"""Real servers on 127.0.0.1 for the remote-URI tests and ``benchmarks/remote.py``.

* :class:`Nginx` - Debian's nginx serving a folder (static files, ``Range`` support),
  its access log recording ``$body_bytes_sent`` per request: bytes counted by the server.
* :class:`GcsEmulator` - ``gcp-storage-emulator`` (the GCS JSON API) for ``gs://``.
* :class:`Azurite` - Microsoft's Azure Storage emulator (npm ``azurite``) for ``az://``.
* :class:`HfHub` - a minimal Hugging Face Hub endpoint for ``hf://`` (written here).

:func:`need` turns a missing server into a skip locally and a failure under ``CI=true``
(CI installs nginx and azurite in ``.ci/run``; a server that silently goes missing must
not turn the remote tests into skips).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

#: Azurite's documented, public development account (not a secret: every emulator has it).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def need(ok: bool, what: str) -> None:
    """Skip (locally) or fail (``CI=true``) when ``what`` is not available."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{what} not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- nginx ------------------------------------------------------------------------------------
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format bytes '$request_method $uri $status $body_bytes_sent "$http_range"';
    access_log {prefix}/access.log bytes;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 30;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def dense_bn_keras(folder: Path, layers: int, width: int, seed: int) -> Path:
    """A Keras-saved ``big.keras`` of ``layers`` Dense(width)+BatchNormalization blocks and a head
    (a file large enough that reading a fraction of it is measurable)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((1024,))
    x = inp
    for i in range(layers):
        x = keras.layers.Dense(width, name=f"fc{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    keras.Model(inp, keras.layers.Dense(10, name="head")(x)).save(folder / "big.keras")
    return folder / "big.keras"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


class Nginx:
    """nginx serving ``root`` on 127.0.0.1 (a temporary prefix; ``daemon off``, stopped by :meth:`close`)."""

    _LINE = re.compile(r'^(\S+) (\S+) (\d{3}) (\d+) "(.*)"$')

    def __init__(self, root: Path, prefix: Path, binary: str | None = None):
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise FileNotFoundError("nginx")
        self.root, self.prefix = Path(root), Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.log = self.prefix / "access.log"
        # a root master hands requests to workers of `user`; the test's temp folders are root's
        user = "user root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf = self.prefix / "nginx.conf"
        for attempt in range(3):  # the free port can be taken between free_port() and nginx's bind
            self.port = free_port()
            conf.write_text(NGINX_CONF.format(prefix=self.prefix, port=self.port, root=self.root, user=user))
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            try:
                wait_port(self.port, self.proc, what="nginx")
                break
            except RuntimeError as exc:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.close()
                if "Address already in use" not in err or attempt == 2:
                    raise RuntimeError(f"{exc}: {err.strip()}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str, int, int, str]]:
        """``(method, uri, status, body_bytes_sent, range)`` per logged request."""
        out = []
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                m = self._LINE.match(line)
                if m:
                    out.append((m[1], urllib.parse.unquote(m[2]), int(m[3]), int(m[4]), m[5]))
        return out

    def bytes_sent(self, uri: str | None = None) -> int:
        return sum(r[3] for r in self.requests() if uri is None or r[1] == uri)

    def settled(self, expected_at_least: int = 0, count_before: int = 0, timeout: float = 5.0) -> tuple[int, int]:
        """``(bytes, requests)`` logged after the first ``count_before`` log lines, once the log is quiet.

        nginx writes the access-log line after the response, so the client can hold the
        bytes a moment before the line is there.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            reqs = self.requests()[count_before:]
            got = (sum(r[3] for r in reqs), len(reqs))
            if got[0] >= expected_at_least and got == last:
                return got
            if time.monotonic() > deadline:
                return got
            last = got
            time.sleep(0.02)

    def close(self) -> None:
        _stop(self.proc, signal.SIGQUIT)  # graceful: workers finish their requests
        if self.proc.stderr:
            self.proc.stderr.close()


# --- GCS: gcp-storage-emulator ------------------------------------------------------------------
class GcsEmulator:
    """``gcp-storage-emulator`` in memory on 127.0.0.1; :attr:`env` points gcsfs at it."""

    def __init__(self, bucket: str = "ckpts"):
        from gcp_storage_emulator.server import create_server

        self.server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)  # 0: the OS picks
        self.server.start()
        httpd = self.server._api._httpd
        self.port = httpd.server_address[1]
        # a client that closes a connection early is not an error worth a traceback on stderr
        quiet = (BrokenPipeError, ConnectionResetError)
        loud = httpd.handle_error
        httpd.handle_error = lambda request, addr: None if isinstance(sys.exc_info()[1], quiet) else loud(request, addr)
        wait_port(self.port, what="gcp-storage-emulator")
        self.url = f"http://127.0.0.1:{self.port}"
        # gcsfs reads STORAGE_EMULATOR_HOST; FSSPEC_GS_TOKEN=anon: the emulator takes no credentials.
        # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (read when gcsfs is imported): gcsfs's default
        # class asks the gRPC storage-control API for the bucket type, which the emulator lacks
        # (60 s of retries per bucket, then it falls back to the JSON API anyway).
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "FSSPEC_GS_TOKEN": "anon", "GOOGLE_CLOUD_PROJECT": "test",
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def close(self) -> None:
        self.server.stop()


# --- Azure: azurite ------------------------------------------------------------------------------
def azurite_binary() -> str | None:
    return shutil.which("azurite-blob") or shutil.which("azurite")


class Azurite:
    """Azurite's blob service on 127.0.0.1, data in ``workdir``; :attr:`env` holds its connection string."""

    def __init__(self, workdir: Path):
        binary = azurite_binary()
        if binary is None:
            raise FileNotFoundError("azurite")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # the free port can be taken before azurite binds it
            self.port = free_port()
            args = [binary]
            if os.path.basename(binary) == "azurite":
                args += ["--queuePort", str(free_port()), "--tablePort", str(free_port())]
            args += ["--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(workdir),
                     "--skipApiVersionCheck", "--silent", "--loose"]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, cwd=workdir)
            try:
                wait_port(self.port, self.proc, timeout=60, what="azurite")
                break
            except RuntimeError:
                self.close()
                if attempt == 2:
                    raise
        self.url = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.url};")}

    def close(self) -> None:
        # a graceful stop waits for the clients' idle keep-alive connections (10 s): not worth it
        _stop(self.proc, grace=1.0)


# --- Hugging Face Hub: a minimal endpoint ----------------------------------------------------------
class _HubHandler(http.server.BaseHTTPRequestHandler):
    """The four Hub routes ``HfFileSystem`` reads through (models only, one revision ``main``).

    * ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: repo info;
    * ``GET /api/models/{repo}/tree/{rev}[/{path}]``: one folder's entries;
    * ``POST /api/models/{repo}/paths-info/{rev}``: entries for ``paths=…`` (form data);
    * ``GET|HEAD /{repo}/resolve/{rev}/{path}``: the file, with a single ``Range: bytes=a-b``.

    Unknown repos, revisions and paths answer 404 with the Hub's ``X-Error-Code`` header.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    hub: HfHub

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):  # noqa: N802
        self._route(head=True)

    def do_GET(self):  # noqa: N802
        self._route(head=False)

    def do_POST(self):  # noqa: N802
        self._route(head=False)

    # -- helpers
    def _json(self, obj, status=200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _missing(self, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _entry(self, rel: str) -> dict | None:
        p = self.hub.file(rel)
        if p is None:
            return None
        if p.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel}
        return {"type": "file", "oid": self.hub.oid(p), "size": p.stat().st_size, "path": rel}

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        repo, hub = self.hub.repo, self.hub
        if self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            if not (rest == repo or rest.startswith(repo + "/")):
                return self._missing("RepoNotFound", "Repository not found")
            rest = rest[len(repo):].lstrip("/")
            if rest == "" or re.fullmatch(r"revision/[^/]+", rest):
                if rest and rest.split("/", 1)[1] not in hub.revisions:
                    return self._missing("RevisionNotFound", "Invalid rev id")
                return self._json({"id": repo, "sha": hub.sha, "private": False,
                                   "siblings": [{"rfilename": r} for r in hub.files()]})
            m = re.fullmatch(r"tree/([^/]+)(?:/(.*))?", rest)
            if m and self.command == "GET":
                if m[1] not in hub.revisions:
                    return self._missing("RevisionNotFound", "Invalid rev id")
                folder = (m[2] or "").strip("/")
                d = hub.file(folder) if folder else hub.root
                if d is None or not d.is_dir():
                    return self._missing("EntryNotFound", f"{folder} does not exist")
                entries = [self._entry(f"{folder}/{c.name}" if folder else c.name) for c in sorted(d.iterdir())]
                return self._json([e for e in entries if e is not None])
            m = re.fullmatch(r"paths-info/([^/]+)", rest)
            if m and self.command == "POST":
                if m[1] not in hub.revisions:
                    return self._missing("RevisionNotFound", "Invalid rev id")
                found = [self._entry(p.strip("/")) for p in form.get("paths", [])]
                return self._json([e for e in found if e is not None])
            return self._missing("EntryNotFound", "no such route")
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if m is None or m[1] != repo:
            return self._missing("RepoNotFound", "Repository not found")
        if m[2] not in hub.revisions:
            return self._missing("RevisionNotFound", "Invalid rev id")
        p = hub.file(m[3])
        if p is None or not p.is_file():
            return self._missing("EntryNotFound", f"{m[3]} does not exist")
        self._send_file(p, m[3], head)

    def _send_file(self, p: Path, rel: str, head: bool) -> None:
        size = p.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (m[1] == "" and m[2] == ""):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if m[1] == "":
                start = max(0, size - int(m[2]))
            else:
                start, end = int(m[1]), (min(int(m[2]), size - 1) if m[2] else size - 1)
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{self.hub.oid(p)}"')
        self.send_header("X-Repo-Commit", self.hub.sha)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(p, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
        with self.hub.lock:
            self.hub.served.append((rel, start, end - start + 1 - left))


class HfHub:
    """A Hub endpoint on 127.0.0.1 serving the folder ``root`` as model repo ``repo`` at revision ``main``.

    Point ``huggingface_hub`` at it with ``HF_ENDPOINT`` (:attr:`env`); every file byte
    it sends is counted in :attr:`served` (server side).
    """

    def __init__(self, root: Path, repo: str = "ckptscan/fixtures"):
        self.root, self.repo = Path(root).resolve(), repo
        self.sha = hashlib.sha1(str(self.root).encode()).hexdigest()
        self.revisions = {"main", self.sha}
        self.served: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()
        self._oids: dict[Path, str] = {}
        handler = type("Handler", (_HubHandler,), {"hub": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # idle keep-alive connections of a client pool
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.env = {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def file(self, rel: str) -> Path | None:
        """The path of ``rel`` in the repo, or None (missing, or outside the repo)."""
        if rel == "":
            return self.root
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return None
        p = self.root.joinpath(*parts)
        return p if p.exists() else None

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def oid(self, p: Path) -> str:
        if p not in self._oids:
            st = p.stat()
            self._oids[p] = hashlib.sha1(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        return self._oids[p]

    def bytes_sent(self) -> int:
        with self.lock:
            return sum(n for _, _, n in self.served)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
