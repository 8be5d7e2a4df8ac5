"""Webhooks: ``/hooks/mlflow``, ``/hooks/s3``, ``/hooks/hf``, ``/hooks/lakefs``.

Each verifies its sender before reading the payload's meaning, checks every object it
would read against ``--allow`` (403, before any I/O) and takes an admission slot (429
when full). A hook whose secret is not configured answers 404: it is not enabled.

=========  ==========================  ==============================================  ============
hook       sender proof                what is scanned                                 answer
=========  ==========================  ==============================================  ============
mlflow     ``X-MLflow-Signature``      ``models:/NAME/VERSION`` on                     202 at once;
           (HMAC, fresh timestamp)     ``model_version.created``                       tags written
s3         bearer token (API)          each ``ObjectCreated`` record's object          the report
hf         ``X-Webhook-Secret``        weight files changed at ``headSha``             the report
lakefs     ``X-Ckptscan-Secret``       checkpoints under the ref (S3 gateway),         2xx passes,
           (or ``?secret=``)           cached by checksum, within ~50 s                412/503 blocks
=========  ==========================  ==============================================  ============
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import secrets
import time
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .allow import NotAllowed
from .events import BadDelivery, CHECKPOINT_SUFFIXES, check_secret, s3_objects, summary, tags, verdict, verify_mlflow
from .scanning import Target, run_targets

log = logging.getLogger("ckptscan.serve")


def _json(raw: bytes):
    from .http import HttpError

    try:
        return json.loads(raw)
    except ValueError:
        raise HttpError(400, "body is not JSON") from None


def _allowed(server, uri: str) -> str:
    from .http import HttpError

    try:
        return server.allow.check(uri).uri
    except NotAllowed as exc:
        raise HttpError(403, str(exc)) from None


def _options(server):
    from ..engine import make_options

    return make_options(timeout=server.config.timeout or None)


def hook_routes(server) -> list:
    """``[(path, handler)]`` of the webhooks."""
    from .http import HttpError, Job

    cfg = server.config
    seen: OrderedDict[str, float] = OrderedDict()

    def enabled(secret, env: str) -> None:
        if not secret:
            raise HttpError(404, f"hook not enabled (set {env} or the matching --…-secret-file)")

    # --- MLflow -------------------------------------------------------------------------
    async def mlflow(request: Request) -> Response:
        enabled(cfg.mlflow_secret, "CKPTSCAN_MLFLOW_SECRET")
        raw = await server.body(request)
        try:
            delivery = verify_mlflow(cfg.mlflow_secret, request.headers, raw, cfg.hook_max_age)
        except BadDelivery as exc:
            raise HttpError(401, str(exc)) from None
        if delivery in seen:
            return JSONResponse({"status": "duplicate delivery", "delivery_id": delivery})
        doc = _json(raw)
        if not isinstance(doc, dict) or (doc.get("entity"), doc.get("action")) != ("model_version", "created"):
            return JSONResponse({"status": "ignored", "event": f"{doc.get('entity')}.{doc.get('action')}" if isinstance(doc, dict) else None})
        data = doc.get("data") or {}
        name, version = str(data.get("name") or ""), str(data.get("version") or "")
        if not name or not version.isdigit():
            raise HttpError(400, "model_version.created without data.name / data.version")
        from urllib.parse import quote

        uri = _allowed(server, f"models:/{quote(name, safe='')}/{version}")
        server.take_slot()
        seen[delivery] = time.time()
        while len(seen) > 10_000:
            seen.popitem(last=False)
        job = Job(secrets.token_urlsafe(16))
        server.keep_job(job)

        async def run() -> None:
            from .. import mlflow_store

            job.state = "running"
            try:
                report = await server.scan([uri], _options(server))
                job.report = report
                t = tags(report)
                alias = cfg.mlflow_block_alias
                if alias:  # the gate first: once ckptscan.version is there, everything is
                    if t["ckptscan.verdict"] == "pass":
                        await asyncio.to_thread(mlflow_store.set_alias, name, alias, version)
                    else:
                        await asyncio.to_thread(mlflow_store.set_version_tag, name, version, "ckptscan.blocked_alias", alias)
                for k, v in t.items():  # ckptscan.version last
                    await asyncio.to_thread(mlflow_store.set_version_tag, name, version, k, v)
                job.state = "done"
            except Exception as exc:  # noqa: BLE001 - recorded on the job, logged
                job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
                log.error("mlflow hook %s/%s: %s", name, version, job.error)
            finally:
                job.finished = time.time()
                server.release()

        t = asyncio.get_running_loop().create_task(run())
        server.tasks.add(t)
        t.add_done_callback(server.tasks.discard)
        return JSONResponse({"status": "accepted", "job": job.id, "model": name, "version": version}, status_code=202)

    # --- S3 event notifications -------------------------------------------------------------
    async def s3(request: Request) -> Response:
        server.check_token(request)
        raw = await server.body(request)
        try:
            objs = s3_objects(_json(raw))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        objs = [o for o in objs if o.uri.endswith(CHECKPOINT_SUFFIXES)]
        uris = [_allowed(server, o.uri) for o in objs]
        if not objs:
            return JSONResponse({"status": "nothing to scan", "objects": []})
        with server.admitted():
            targets = [Target(u, u, key=f"s3:{u}:{o.etag}" if o.etag else None) for u, o in zip(uris, objs)]
            report = await run_targets(server, targets, _options(server), cache=True)
        from ..render.json import report_doc

        return JSONResponse({"verdict": verdict(report), "summary": summary(report),
                             "objects": [{"uri": o.uri, "eTag": o.etag, "versionId": o.version_id} for o in objs],
                             "report": report_doc(report)})

    # --- Hugging Face Hub ------------------------------------------------------------------
    async def hf(request: Request) -> Response:
        enabled(cfg.hf_secret, "CKPTSCAN_HF_SECRET")
        try:
            check_secret(cfg.hf_secret, request.headers.get("x-webhook-secret"))
        except BadDelivery as exc:
            raise HttpError(401, str(exc)) from None
        raw = await server.body(request)
        doc = _json(raw)
        try:
            repo = doc["repo"]
            name, rtype = str(repo["name"]), str(repo.get("type", "model"))
            sha = str(repo.get("headSha") or "main")
            scope = str(doc.get("event", {}).get("scope", ""))
        except (KeyError, TypeError, AttributeError):
            raise HttpError(400, "HF webhook payload needs repo.name") from None
        if rtype != "model" or not scope.startswith("repo.content"):
            return JSONResponse({"status": "ignored", "scope": scope, "type": rtype})
        if not all(c.isalnum() or c in "-_./" for c in name) or name.count("/") != 1 or not sha.replace("-", "").isalnum():
            raise HttpError(400, "bad repo name or headSha")
        base = _allowed(server, f"hf://{name}@{sha}/")
        old = None
        for ref in doc.get("updatedRefs") or []:
            if isinstance(ref, dict) and ref.get("newSha") == sha and str(ref.get("oldSha") or "").strip("0"):
                old = str(ref["oldSha"])
        if old is not None and not old.isalnum():
            raise HttpError(400, "bad oldSha")
        with server.admitted():
            targets, diff = await asyncio.to_thread(_hf_targets, server, base, name, old)
            report = await run_targets(server, targets, _options(server), cache=True)
        from ..render.json import report_doc

        if not targets:
            return JSONResponse({"verdict": "pass", "summary": "no weight file changed", "repo": name, "revision": sha,
                                 "diff": diff, "report": report_doc(report)})
        return JSONResponse({"verdict": verdict(report), "summary": summary(report), "repo": name, "revision": sha,
                             "diff": diff, "report": report_doc(report)})

    # --- lakeFS ----------------------------------------------------------------------------
    async def lakefs(request: Request) -> Response:
        enabled(cfg.lakefs_secret, "CKPTSCAN_LAKEFS_SECRET")
        try:
            check_secret(cfg.lakefs_secret, request.headers.get("x-ckptscan-secret") or request.query_params.get("secret"))
        except BadDelivery as exc:
            raise HttpError(401, str(exc)) from None
        start = time.monotonic()
        raw = await server.body(request)
        doc = _json(raw)
        if not isinstance(doc, dict):
            raise HttpError(400, "lakeFS payload must be a JSON object")
        event = str(doc.get("event_type", ""))
        repo = str(doc.get("repository_id") or "")
        ref = str((doc.get("source_ref") if event == "pre-merge" else doc.get("branch_id")) or doc.get("source_ref") or "")
        if event not in ("pre-commit", "pre-merge"):
            return PlainTextResponse(f"ckptscan: ignored event {event or '?'}\n")
        if not repo or not ref:
            raise HttpError(400, "lakeFS payload needs repository_id and branch_id / source_ref")
        prefix = request.query_params.get("prefix", "").strip("/")
        tail = "/" + (prefix + "/" if prefix else "")
        base = _allowed(server, f"s3://{repo}/{ref}{tail}")
        # what the commit or merge changes: the branch with its staged objects against its
        # committed state (lakeFS ref expression BRANCH@), or the source against the destination
        dest = str(doc.get("branch_id") or "")
        against_ref = f"{ref}@" if event == "pre-commit" else (dest if dest and dest != ref else None)
        against = _allowed(server, f"s3://{repo}/{against_ref}{tail}") if against_ref else None
        with server.admitted():
            try:
                report, diff = await asyncio.wait_for(_lakefs_scan(server, base, against),
                                                      max(1.0, cfg.lakefs_deadline - (time.monotonic() - start)))
            except asyncio.TimeoutError:
                return PlainTextResponse(f"ckptscan: scan did not finish within {cfg.lakefs_deadline:g} s: blocked\n",
                                         status_code=503)
        v = verdict(report) if report.files else "pass"
        line = summary(report) if report.files else f"no changed Keras checkpoint ({diff})"
        if v == "pass":
            return PlainTextResponse(f"ckptscan: pass: {line}\n")
        return PlainTextResponse(f"ckptscan: {v}: {line}\n", status_code=412)

    return [("/hooks/mlflow", mlflow), ("/hooks/s3", s3), ("/hooks/hf", hf), ("/hooks/lakefs", lakefs)]


def _pick(files: list[str]) -> list[str]:
    from ..mlflow_store import pick_checkpoints

    return pick_checkpoints(files)


#: Most objects listed under one ref or revision by a hook.
MAX_LISTED = 10_000


def _listing(base: str) -> dict[str, dict]:
    """``{relative path: info}`` of every object under the URI ``base`` (folder by folder)."""
    from ..formats.remote import filesystem

    fs, root = filesystem(base)
    root = root.rstrip("/")
    try:  # fsspec caches listings per process: a hook must see the objects as they are now
        fs.invalidate_cache()
    except Exception:  # noqa: BLE001 - a backend without a listing cache
        pass
    out: dict[str, dict] = {}
    for folder, _, files in fs.walk(root, detail=True):
        for name, info in files.items():
            out[posixpath.relpath(posixpath.join(folder, name), root)] = info
            if len(out) > MAX_LISTED:
                raise ValueError(f"{base}: more than {MAX_LISTED} objects")
    return out


def _content_id(info: dict) -> str | None:
    """The Hub's content id of a file: the LFS sha256, else the git blob id."""
    lfs = info.get("lfs") or {}
    return (lfs.get("sha256") or lfs.get("oid")) if isinstance(lfs, dict) and lfs else info.get("blob_id")


def _with_shards(r: str, rels) -> list[str]:
    """``r`` and, for a sharded index, the shards beside it."""
    if not r.endswith(".weights.json"):
        return [r]
    stem = posixpath.basename(r)[:-len(".weights.json")] + "_"
    return [r] + sorted(x for x in rels if posixpath.dirname(x) == posixpath.dirname(r) and posixpath.basename(x).startswith(stem))


def _hf_targets(server, base: str, name: str, old_sha: str | None) -> tuple[list[Target], str]:
    """The weight files of the repo at the pushed revision that differ from ``old_sha``'s.

    Changed = a content id (LFS sha256 / blob id) that differs or is new, for a sharded
    set any of its files. Without ``old_sha`` (a new branch) or when the old revision
    cannot be listed, every weight file is a target. The content id is the cache key.
    """
    new = _listing(base)
    before: dict | None = None
    diff = "all files (no previous revision)"
    if old_sha:
        try:
            before = _listing(base.split("@", 1)[0] + f"@{old_sha}/")
            diff = f"changed since {old_sha}"
        except Exception:  # noqa: BLE001 - the old revision is gone or unreadable: scan everything
            diff = f"all files ({old_sha} cannot be listed)"
    out = []
    for r in _pick(sorted(new)):
        parts = _with_shards(r, new)
        ids = [_content_id(new[x]) for x in parts]
        if before is not None and all(i is not None and _content_id(before.get(x, {})) == i for x, i in zip(parts, ids)):
            continue
        uri = base.rstrip("/") + "/" + r
        server.allow.check(uri)
        out.append(Target(uri, uri, key="hf-blob:" + ",".join(ids) if all(ids) else None))
    return out, diff


def _etag(info: dict) -> str | None:
    return info.get("ETag") or info.get("etag") or info.get("checksum")


async def _lakefs_scan(server, base: str, against: str | None):
    """Scan the checkpoints under ``base`` that differ from ``against`` (by ETag; all if it cannot be listed)."""
    def targets() -> tuple[list[Target], str]:
        rels = _listing(base)
        before = None
        diff = "all checkpoints under the ref"
        if against:
            try:
                before = _listing(against)
                diff = f"changed against {against}"
            except Exception:  # noqa: BLE001 - no base to compare with: scan everything
                diff = f"all checkpoints ({against} cannot be listed)"
        out = []
        for r in _pick(sorted(rels)):
            parts = _with_shards(r, rels)  # a sharded set changes with any shard: all their checksums
            tags = [_etag(rels[x]) for x in parts]
            if before is not None and all(t is not None and _etag(before.get(x, {})) == t for x, t in zip(parts, tags)):
                continue
            uri = base.rstrip("/") + "/" + r
            server.allow.check(uri)
            key = "etag:" + ",".join(f"{t}:{rels[x].get('size')}" for t, x in zip(tags, parts)) if all(tags) else None
            out.append(Target(uri, uri, key=key))
        return out, diff

    ts, diff = await asyncio.to_thread(targets)
    return await run_targets(server, ts, _options(server), cache=True), diff
