"""MLflow URIs: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/path``.

Resolved through the tracking server named by ``MLFLOW_TRACKING_URI`` (``http(s)://``),
with MLflow's REST API over plain HTTP (``urllib``): ``mlflow`` itself is not needed.
Credentials come from MLflow's own variables: ``MLFLOW_TRACKING_TOKEN`` (bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic).

A URI resolves to the storage location of the version (``get-download-uri``) or run
(``runs/get`` ``artifact_uri`` + path), then to the checkpoints found there
(``*.keras``, ``*.h5``, ``*.hdf5``, ``*.weights.json`` with their shards):

* an ``s3://``, ``gs://``, ``http(s)://``… location is scanned where it is, with ranged
  reads (:mod:`ckptscan.formats.remote`);
* a local path or ``file://`` location is scanned in place;
* ``mlflow-artifacts:`` (a tracking server started with ``--artifacts-destination``
  proxies the store) has no ranged read: each checkpoint is **downloaded whole**,
  streamed to a temporary file that may not grow past :data:`MAX_DOWNLOAD`
  (``CKPTSCAN_MLFLOW_MAX_DOWNLOAD``), scanned, then deleted.

Each result carries a label, ``models:/NAME/VERSION/<relative path>``, which replaces
the temporary or storage path in the report (:func:`relabel`).

Layer: ``formats`` (docs/architecture.md), beside :mod:`ckptscan.formats.remote`: it
resolves URIs to storage locations and never imports above that layer. Listing a
remote folder is :func:`ckptscan.discover.expand_uris`, handed in as ``expand_uris``
(:func:`ckptscan.discover.resolve_mlflow` and :func:`ckptscan.discover.mlflow_paths`
do that).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import posixpath
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from .errors import CkptscanError

TRACKING_ENV = "MLFLOW_TRACKING_URI"
#: Largest artifact downloaded from an ``mlflow-artifacts:`` proxy (bytes).
MAX_DOWNLOAD = 16 << 30
MAX_DOWNLOAD_ENV = "CKPTSCAN_MLFLOW_MAX_DOWNLOAD"
#: Largest REST answer read (bytes).
MAX_REST_BYTES = 16 << 20
#: Most artifacts listed under one location.
MAX_LISTED = 10_000
CHECKPOINT_SUFFIXES = (".keras", ".h5", ".hdf5", ".weights.json")
TIMEOUT = 30.0


class MlflowError(CkptscanError):
    """An MLflow URI that cannot be resolved (no tracking server, unknown model, REST error)."""


def is_mlflow_uri(path: object) -> bool:
    """True for ``models:/…`` and ``runs:/…``."""
    s = str(path)
    return s.startswith(("models:/", "runs:/")) and not s.startswith(("models://", "runs://"))


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` (http or https), without a trailing slash."""
    uri = os.environ.get(TRACKING_ENV, "").strip()
    if not uri:
        raise MlflowError("models:/", f"set {TRACKING_ENV} to the MLflow tracking server (http://host:port)")
    if not uri.startswith(("http://", "https://")):
        raise MlflowError(uri, f"{TRACKING_ENV} must be an http(s):// tracking server (a local mlruns folder is not supported)")
    return uri.rstrip("/")


def _headers() -> dict:
    h = {"Accept": "application/json", "User-Agent": "ckptscan"}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, pwd = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token:
        h["Authorization"] = f"Bearer {token}"
    elif user and pwd:
        h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pwd}".encode()).decode()
    return h


def rest(method: str, endpoint: str, params: dict | None = None, body: dict | None = None, where: str = "") -> dict:
    """Call ``/api/2.0/mlflow/<endpoint>`` (or ``/api/2.0/<endpoint>`` when it starts with ``/``); the JSON answer."""
    base = tracking_uri()
    url = base + (f"/api/2.0{endpoint}" if endpoint.startswith("/") else f"/api/2.0/mlflow/{endpoint}")
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None
    headers = _headers()
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw = resp.read(MAX_REST_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = json.loads(exc.read(65536)).get("message", "")
        except Exception:  # noqa: BLE001 - the status is the message then
            pass
        raise MlflowError(where or url, f"MLflow {endpoint}: HTTP {exc.code}" + (f": {detail}" if detail else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        raise MlflowError(where or url, f"cannot reach the MLflow tracking server ({getattr(exc, 'reason', exc)})") from None
    if len(raw) > MAX_REST_BYTES:
        raise MlflowError(where or url, f"MLflow {endpoint}: answer larger than {MAX_REST_BYTES} bytes")
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise MlflowError(where or url, f"MLflow {endpoint}: answer is not JSON") from None


# --- resolving -------------------------------------------------------------------------
def parse_model_uri(uri: str) -> tuple[str, str | None, str | None, str]:
    """``(name, version, alias, subpath)`` of ``models:/NAME/VERSION[/sub]`` or ``models:/NAME@ALIAS[/sub]``."""
    rest_ = uri[len("models:/"):].lstrip("/")
    head, _, sub = rest_.partition("/")
    if "@" in head:
        name, alias = head.split("@", 1)
        if not name or not alias:
            raise MlflowError(uri, "expected models:/NAME@ALIAS")
        return urllib.parse.unquote(name), None, alias, sub
    name = urllib.parse.unquote(head)
    version, _, sub = sub.partition("/")
    if not name or not version:
        raise MlflowError(uri, "expected models:/NAME/VERSION or models:/NAME@ALIAS")
    if not version.isdigit():
        raise MlflowError(uri, f"model version must be a number, not {version!r} (stages are not supported; use an alias)")
    return name, version, None, sub


def model_version(name: str, version: str | None = None, alias: str | None = None, where: str = "") -> dict:
    """The ``model_version`` record of NAME/VERSION or NAME@ALIAS."""
    if alias is not None:
        return rest("GET", "registered-models/alias", {"name": name, "alias": alias}, where=where).get("model_version", {})
    return rest("GET", "model-versions/get", {"name": name, "version": version}, where=where).get("model_version", {})


def storage_uri(uri: str) -> tuple[str, str]:
    """``(storage location, label base)`` of an MLflow URI (REST calls only, no artifact I/O)."""
    if uri.startswith("runs:/"):
        rest_ = uri[len("runs:/"):].lstrip("/")
        run_id, _, sub = rest_.partition("/")
        if not run_id:
            raise MlflowError(uri, "expected runs:/RUN_ID/path")
        info = rest("GET", "runs/get", {"run_id": run_id}, where=uri).get("run", {}).get("info", {})
        root = info.get("artifact_uri")
        if not root:
            raise MlflowError(uri, "the run has no artifact_uri")
        return (root.rstrip("/") + "/" + sub.strip("/")) if sub.strip("/") else root, uri.rstrip("/")
    name, version, alias, sub = parse_model_uri(uri)
    mv = model_version(name, version, alias, where=uri)
    version = str(mv.get("version") or version)
    root = None
    try:
        root = rest("GET", "model-versions/get-download-uri", {"name": name, "version": version}, where=uri).get("artifact_uri")
    except MlflowError:
        root = None
    root = root or mv.get("source")
    if not root:
        raise MlflowError(uri, "the model version has no source")
    if root.startswith(("models:/", "runs:/")):  # a logged-model or run reference: one more hop
        root, _ = storage_uri(root)
    base = f"models:/{name}/{version}"
    return ((root.rstrip("/") + "/" + sub.strip("/")) if sub.strip("/") else root), (base + ("/" + sub.strip("/") if sub.strip("/") else ""))


@dataclass(frozen=True)
class Resolved:
    """A checkpoint behind an MLflow URI: ``path`` is what is scanned, ``label`` what the report says."""

    label: str
    path: str


def _proxy_rel(root: str) -> tuple[str, str]:
    """``(tracking base URL, path under the proxy)`` of an ``mlflow-artifacts:`` URI."""
    parts = urllib.parse.urlsplit(root)
    base = tracking_uri()
    if parts.netloc:
        base = f"{urllib.parse.urlsplit(base).scheme}://{parts.netloc}"
    return base, parts.path.strip("/")


def _proxy_list(base: str, rel: str, where: str) -> list[tuple[str, int]]:
    """Every file under ``rel`` on the artifact proxy: ``(relative path, size)``."""
    out: list[tuple[str, int]] = []
    todo = [rel]
    while todo:
        cur = todo.pop()
        doc = rest("GET", "/mlflow-artifacts/artifacts", {"path": cur}, where=where) if base == tracking_uri() else {}
        for f in doc.get("files", []) or []:
            p = str(f.get("path", ""))
            full = posixpath.join(cur, p) if not p.startswith(cur + "/") else p
            if f.get("is_dir"):
                todo.append(full)
            else:
                out.append((full, int(f.get("file_size") or 0)))
            if len(out) > MAX_LISTED:
                raise MlflowError(where, f"more than {MAX_LISTED} artifacts")
    if not out:  # maybe a single file
        out.append((rel, 0))
    return sorted(out)


def _max_download() -> int:
    """:data:`MAX_DOWNLOAD`, or ``CKPTSCAN_MLFLOW_MAX_DOWNLOAD`` (bytes, or with K/M/G: binary units)."""
    v = os.environ.get(MAX_DOWNLOAD_ENV, "").strip().lower()
    if not v:
        return MAX_DOWNLOAD
    num = v.rstrip("ib").rstrip("b") if v[-1:] == "b" else v
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(num[-1:], 1)
    try:
        n = int(float(num[:-1] if mult > 1 else num) * mult)
    except ValueError:
        raise MlflowError(MAX_DOWNLOAD_ENV, f"not a size: {v!r} (e.g. 16G, 512M)") from None
    if n <= 0:
        raise MlflowError(MAX_DOWNLOAD_ENV, "must be positive")
    return n


def _download(base: str, rel: str, dest: str, where: str) -> None:
    """Stream one proxied artifact to ``dest``, refusing more than :data:`MAX_DOWNLOAD` bytes."""
    url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(rel)}"
    cap = _max_download()
    req = urllib.request.Request(url, headers=_headers())
    n = 0
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp, open(dest, "wb") as fh:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise MlflowError(where, f"artifact of {declared} bytes is larger than {MAX_DOWNLOAD_ENV}={cap}")
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
                if n > cap:
                    raise MlflowError(where, f"artifact larger than {MAX_DOWNLOAD_ENV}={cap} bytes (download stopped)")
                fh.write(chunk)
    except urllib.error.HTTPError as exc:
        raise MlflowError(where, f"artifact download: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MlflowError(where, f"artifact download failed ({getattr(exc, 'reason', exc)})") from None


def pick_checkpoints(files: list[str]) -> list[str]:
    """Checkpoint files among ``files`` (relative paths): shards are left out, they are
    reached through their ``.weights.json`` index (used by the server's hooks too)."""
    keep = [f for f in files if f.endswith(CHECKPOINT_SUFFIXES)]
    idx = [f for f in keep if f.endswith(".weights.json")]
    shards = {f for f in keep if f.endswith(".weights.h5") and any(
        posixpath.dirname(f) == posixpath.dirname(i) and posixpath.basename(f).startswith(posixpath.basename(i)[:-len(".weights.json")] + "_")
        for i in idx)}
    return [f for f in keep if f not in shards]


ExpandUris = Callable[[list[str]], list[str]]


def resolve(uri: str, workdir: str | None = None, *, expand_uris: ExpandUris) -> tuple[list[Resolved], str | None]:
    """The checkpoints behind ``uri``, and the temporary folder holding downloads (None if none).

    ``expand_uris`` lists the checkpoints under a remote storage location
    (:func:`ckptscan.discover.expand_uris`, a layer above this one). The caller removes
    the folder (:func:`cleanup`) once the scan is over.
    """
    root, label = storage_uri(uri)
    if root.startswith("mlflow-artifacts:"):
        base, rel = _proxy_rel(root)
        listed = _proxy_list(base, rel, uri)
        rels = [posixpath.relpath(p, rel) if p != rel else posixpath.basename(p) for p, _ in listed]
        wanted = set(pick_checkpoints(rels))
        needed = set(wanted)
        for r in wanted:  # a sharded index needs its shards next to it
            if r.endswith(".weights.json"):
                stem = posixpath.basename(r)[:-len(".weights.json")] + "_"
                needed |= {x for x in rels if posixpath.dirname(x) == posixpath.dirname(r) and posixpath.basename(x).startswith(stem)}
        tmp = tempfile.mkdtemp(prefix="ckptscan-mlflow-", dir=workdir)
        try:
            out = []
            for p, r in zip((p for p, _ in listed), rels):
                if r not in needed:
                    continue
                dest = os.path.join(tmp, *r.split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                _download(base, p if p != rel or r != posixpath.basename(p) else rel, dest, uri)
                if r in wanted:
                    out.append(Resolved(f"{label}/{r}" if p != rel else label, dest))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not out:
            shutil.rmtree(tmp, ignore_errors=True)
            raise MlflowError(uri, "no Keras checkpoint (*.keras, *.h5, *.weights.json) among the artifacts")
        return sorted(out, key=lambda r: r.label), tmp
    local = root[len("file://"):] if root.startswith("file://") else (root if "://" not in root else None)
    if local is not None:
        if os.path.isfile(local):
            return [Resolved(label, local)], None
        files = sorted(os.path.relpath(os.path.join(d, f), local).replace(os.sep, "/")
                       for d, _, fs in os.walk(local) for f in fs)
        out = [Resolved(f"{label}/{r}", os.path.join(local, *r.split("/"))) for r in pick_checkpoints(files)]
        if not out:
            raise MlflowError(uri, "no Keras checkpoint among the artifacts")
        return out, None
    found = expand_uris([root])
    return [Resolved(label + (("/" + f[len(root):].lstrip("/")) if f != root else ""), f) for f in found], None


def cleanup(folder: str | None) -> None:
    """Remove a download folder made by :func:`resolve`."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def relabel_file(fr, labels: dict[str, str]):
    """A :class:`~ckptscan.report.FileResult` with its path replaced by its label (findings too), if it has one."""
    lab = labels.get(fr.path)
    if lab is None:
        return fr
    return dataclasses.replace(fr, path=lab, findings=tuple(dataclasses.replace(f, file=lab) for f in fr.findings))


def relabel(report, labels: dict[str, str]):
    """``report`` with each scanned path in ``labels`` replaced by its label (findings too)."""
    if not labels:
        return report
    return dataclasses.replace(report, files=tuple(relabel_file(fr, labels) for fr in report.files))


def expand(paths, *, expand_uris: ExpandUris) -> tuple[list[str], dict[str, str], list[str]]:
    """Replace MLflow URIs in ``paths`` by what they resolve to: ``(paths, labels, download folders)``
    (``expand_uris`` as for :func:`resolve`)."""
    out: list[str] = []
    labels: dict[str, str] = {}
    folders: list[str] = []
    for p in paths:
        s = os.fspath(p)
        if not is_mlflow_uri(s):
            out.append(s)
            continue
        try:
            res, tmp = resolve(s, expand_uris=expand_uris)
        except BaseException:
            for f in folders:
                cleanup(f)
            raise
        if tmp:
            folders.append(tmp)
        for r in res:
            out.append(r.path)
            labels[r.path] = r.label
    return out, labels, folders


# --- writing tags (the server's MLflow hook) -----------------------------------------------
def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    """``model-versions/set-tag`` (MLflow caps tag values at 5000 characters: longer ones are cut)."""
    rest("POST", "model-versions/set-tag", body={"name": name, "version": str(version), "key": key, "value": value[:5000]})


def set_alias(name: str, alias: str, version: str) -> None:
    """``registered-models/alias`` (POST): point ``alias`` at ``version``."""
    rest("POST", "registered-models/alias", body={"name": name, "alias": alias, "version": str(version)})


__all__ = ["MlflowError", "Resolved", "cleanup", "expand", "is_mlflow_uri", "model_version", "pick_checkpoints", "relabel",
           "relabel_file", "resolve",
           "set_alias", "set_version_tag", "storage_uri", "tracking_uri"]
