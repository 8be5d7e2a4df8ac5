"""Real servers for the ``ckptscan serve`` tests: the ckptscan server itself and an MLflow tracking server.

* :class:`CkptscanServer` - ``python -m ckptscan serve`` in a subprocess on a loopback
  port (uvicorn for real, not an ASGI test client), stopped with SIGTERM.
* :class:`MlflowServer` - ``mlflow server`` with a SQLite backend store and
  ``--artifacts-destination`` (so versions read ``mlflow-artifacts:/…``), webhooks to
  ``http://127.0.0.1`` allowed for this test server only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from servers import free_port, need, wait_port

ROOT = Path(__file__).resolve().parent.parent


class CkptscanServer:
    """``ckptscan serve`` on 127.0.0.1 (a subprocess); :meth:`request` talks to it."""

    def __init__(self, *args: str, env: dict | None = None, token: str | None = "test-token", cwd: Path | None = None):
        need(importlib.util.find_spec("starlette") is not None and importlib.util.find_spec("uvicorn") is not None,
             "starlette and uvicorn (pip install 'ckptscan[server]')")
        self.token = token
        full_env = {**os.environ, **(env or {})}
        full_env.pop("CKPTSCAN_TOKEN", None)
        if token is not None:
            full_env["CKPTSCAN_TOKEN"] = token
        self.log = Path(tempfile.gettempdir()) / f"ckptscan-serve-{os.getpid()}-{time.monotonic_ns()}.log"
        for attempt in range(3):
            self.port = free_port()
            self._fh = open(self.log, "wb")
            self.proc = subprocess.Popen([sys.executable, "-m", "ckptscan", "serve", "--port", str(self.port), *args],
                                         env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._fh, stderr=subprocess.STDOUT)
            try:
                wait_port(self.port, self.proc, timeout=60, what="ckptscan serve")
                break
            except RuntimeError:
                self.proc.kill()
                self.proc.wait()
                if attempt == 2:
                    raise RuntimeError(f"ckptscan serve did not start: {self.output()}") from None
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # workers started
            if self.request("GET", "/readyz", auth=False)[0] == 200:
                break
            time.sleep(0.1)

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def request(self, method: str, path: str, body: object = None, auth: bool | str = True, headers: dict | None = None,
                raw: bytes | None = None, timeout: float = 120) -> tuple[int, dict, bytes]:
        """``(status, headers, body)`` of one request (never raises for a non-2xx status)."""
        h = dict(headers or {})
        if auth is True and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        elif isinstance(auth, str):
            h["Authorization"] = auth
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: object = None, **kw) -> tuple[int, dict]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data.strip().startswith((b"{", b"[")) else {"text": data.decode(errors="replace")}

    def close(self, sig=signal.SIGTERM, grace: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        try:
            self.log.unlink()
        except OSError:
            pass
        return self.proc.returncode


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with SQLite and a proxied local artifact store under ``root``."""

    def __init__(self, root: Path):
        need(mlflow_available(), "mlflow (pip install mlflow; in the dev extra)")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        env = {**os.environ, "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}
        self.log = root / "mlflow.log"
        for attempt in range(3):
            self.port = free_port()
            self._fh = open(self.log, "wb")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=self._fh, stderr=subprocess.STDOUT,
                start_new_session=True)
            try:
                wait_port(self.port, self.proc, timeout=120, what="mlflow server")
                break
            except RuntimeError:
                self.close()
                if attempt == 2:
                    raise RuntimeError("mlflow server did not start: " + self.log.read_text(errors="replace")[-2000:]) from None
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # mlflow server runs uvicorn/gunicorn children
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._fh.close()
