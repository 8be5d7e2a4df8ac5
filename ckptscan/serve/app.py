"""The ASGI app: ``/v1/scan``, ``/v1/jobs/{id}``, ``/healthz``, ``/readyz``, ``/metrics``, ``/hooks/*``.

Starlette, not FastAPI: the API is six JSON routes whose bodies are checked by hand
anyway (allow list, sizes, secrets, each before any I/O), the response is the report
document ckptscan already renders (no response models to declare), and FastAPI would
add pydantic (and its start-up cost) to ``ckptscan[server]`` for an OpenAPI page the
scripts calling the server do not need. Starlette is what FastAPI runs on; uvicorn
serves it.

Order of checks on every ``/v1`` request: bearer token (401) -> body size (413) -> JSON
shape (400) -> every URI under ``--allow`` (403) -> admission (429 + ``Retry-After``);
only then is anything resolved, listed or read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..report import FileResult, Report
from .allow import AllowList, NotAllowed
from .config import ServeConfig
from .http import HttpError, Job, verdict_of
from .metrics import Metrics
from .pool import CANCELLED, WORKER_DIED, WorkerPool

FAIL_ON = ("error", "warning", "info", "never")


def error_response(exc: HttpError) -> JSONResponse:
    """``{"error": reason}`` with the status and headers of ``exc``."""
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)


class Server:
    """The state of one server process: pool, allow list, metrics, jobs, verdict cache."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.allow = AllowList(list(config.allow))
        self.metrics = Metrics()
        self.pool: WorkerPool | None = None
        self.in_flight = 0
        self._lock = threading.Lock()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.verdicts: OrderedDict[str, FileResult] = OrderedDict()
        """Object checksum (ETag, sha) -> result: hooks do not read an unchanged object twice."""
        self.started = time.time()
        self.tasks: set = set()

    # --- admission ------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Scan requests admitted at once: one per worker plus ``--queue``."""
        return self.config.workers + self.config.queue

    @contextlib.contextmanager
    def admitted(self):
        """Hold one admission slot; :class:`HttpError` 429 when none is free."""
        with self._lock:
            if self.in_flight >= self.capacity:
                raise HttpError(429, f"queue full ({self.capacity} scan requests in flight); retry later",
                                {"Retry-After": str(self.config.retry_after)})
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def take_slot(self) -> None:
        """Admit one request now, released by :meth:`release` (async jobs outlive their request)."""
        with self._lock:
            if self.in_flight >= self.capacity:
                raise HttpError(429, f"queue full ({self.capacity} scan requests in flight); retry later",
                                {"Retry-After": str(self.config.retry_after)})
            self.in_flight += 1

    def release(self) -> None:
        """Give back a slot taken with :meth:`take_slot`."""
        with self._lock:
            self.in_flight -= 1

    # --- checks ---------------------------------------------------------------------------
    def check_token(self, request: Request) -> None:
        """401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""
        want = self.config.token
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        ok = want is not None and scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "surrogateescape"), want.encode("utf-8"))
        if not ok:
            raise HttpError(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="ckptscan"'})

    async def body(self, request: Request) -> bytes:
        """The request body, 413 past ``max_body`` (read no further than that)."""
        cap = self.config.max_body
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HttpError(400, "bad Content-Length")
            if int(declared) > cap:
                raise HttpError(413, f"request body larger than {cap} bytes")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > cap:
                raise HttpError(413, f"request body larger than {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # --- scanning -------------------------------------------------------------------------
    async def scan(self, uris: list[str], options, fail_on: str = "error", cache: bool = False) -> Report:
        """Scan allowed URIs (already checked) in the worker pool; the report in request order."""
        from .scanning import expand_targets, run_targets

        targets, folders = await asyncio.to_thread(expand_targets, self, uris)
        try:
            return await run_targets(self, targets, options, fail_on, cache)
        finally:
            from ..mlflow_store import cleanup

            for f in folders:
                cleanup(f)

    def keep_job(self, job: Job) -> None:
        """Remember ``job``; forget the oldest finished ones past ``jobs_kept``."""
        self.jobs[job.id] = job
        while len(self.jobs) > self.config.jobs_kept:
            oldest = next((k for k, j in self.jobs.items() if j.state in ("done", "failed")), None)
            if oldest is None:
                break
            del self.jobs[oldest]


def _codes(v, what: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or len(v) > 100:
        raise HttpError(400, f"{what} must be a string or a list of strings")
    out = []
    for x in v:
        out += [c.strip() for c in x.split(",") if c.strip()]
    return out


def parse_scan_request(server: Server, raw: bytes):
    """``(canonical URIs, options, fail_on, async)`` of a ``/v1/scan`` body; 400/403 otherwise (no I/O)."""
    from ..engine import make_options

    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        raise HttpError(400, "body is not JSON") from None
    if not isinstance(doc, dict):
        raise HttpError(400, 'body must be a JSON object {"uris": [...]}')
    unknown = set(doc) - {"uris", "select", "ignore", "fail_on", "async"}
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    uris = doc.get("uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris) or len(uris) > 1000:
        raise HttpError(400, '"uris" must be a non-empty list of at most 1000 strings')
    fail_on = doc.get("fail_on") or "error"
    if fail_on not in FAIL_ON:
        raise HttpError(400, f'"fail_on" must be one of {", ".join(FAIL_ON)}')
    is_async = doc.get("async", False)
    if not isinstance(is_async, bool):
        raise HttpError(400, '"async" must be true or false')
    checked = []
    for u in uris:
        try:
            checked.append(server.allow.check(u))
        except NotAllowed as exc:
            raise HttpError(403, str(exc)) from None
    try:
        options = make_options(select=_codes(doc.get("select"), "select"), ignore=_codes(doc.get("ignore"), "ignore") or [],
                               timeout=server.config.timeout or None)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return checked, options, fail_on, is_async


def render_report(report: Report, fail_on: str, fmt: str) -> Response:
    """The report as ``ckptscan scan --format json`` (or ``sarif``) prints it."""
    if fmt == "sarif":
        from ..render.sarif import render

        return Response(render(report, fail_on=fail_on), media_type="application/sarif+json")
    from ..render.json import render

    return Response(render(report, fail_on=fail_on), media_type="application/json")


def died(report: Report) -> list[FileResult]:
    """Files whose worker died or was stopped under them (the request answers 500)."""
    return [fr for fr in report.files if fr.status == "error" and (
        fr.reason in (WORKER_DIED, CANCELLED) or fr.reason.endswith("worker stopped"))]


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "sarif"):
        raise HttpError(400, "format must be json or sarif")
    return fmt


def create_app(config: ServeConfig, pool: WorkerPool | None = None) -> Starlette:
    """The Starlette app for ``config`` (the worker pool starts with the app's lifespan)."""
    server = Server(config)

    def route(name: str, fn):
        async def handler(request: Request) -> Response:
            try:
                resp = await fn(request)
            except HttpError as exc:
                resp = error_response(exc)
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback to the client
                resp = JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
            server.metrics.request(name, resp.status_code)
            return resp
        return handler

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> Response:
        p = server.pool
        if p is None or not p.ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        if server.in_flight >= server.capacity:
            return JSONResponse({"status": "queue full", "in_flight": server.in_flight}, status_code=503,
                                headers={"Retry-After": str(config.retry_after)})
        return JSONResponse({"status": "ready", "workers": p.size, "in_flight": server.in_flight})

    async def metrics(request: Request) -> Response:
        p = server.pool
        text = server.metrics.render(p.queued if p else 0, server.in_flight, p.busy if p else 0, p.deaths if p else 0)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def scan(request: Request) -> Response:
        server.check_token(request)
        fmt = _format(request)
        raw = await server.body(request)
        checked, options, fail_on, is_async = parse_scan_request(server, raw)
        if is_async:
            server.take_slot()
            job = Job(secrets.token_urlsafe(16), fail_on=fail_on)
            server.keep_job(job)

            async def run() -> None:
                job.state = "running"
                try:
                    report = await server.scan([c.uri for c in checked], options, fail_on)
                    job.report, job.state = report, "done"
                except Exception as exc:  # noqa: BLE001 - the job records it
                    job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
                finally:
                    job.finished = time.time()
                    server.release()

            t = asyncio.get_running_loop().create_task(run())
            server.tasks.add(t)
            t.add_done_callback(server.tasks.discard)
            return JSONResponse({"job": job.id, "state": job.state, "href": f"/v1/jobs/{job.id}"}, status_code=202,
                                headers={"Location": f"/v1/jobs/{job.id}"})
        with server.admitted():
            report = await server.scan([c.uri for c in checked], options, fail_on)
        bad = died(report)
        if bad:
            from ..render.json import report_doc

            code = 503 if all(fr.reason == CANCELLED for fr in bad) else 500
            return JSONResponse({"error": f"{bad[0].path}: {bad[0].reason}", "report": report_doc(report, fail_on)},
                                status_code=code)
        return render_report(report, fail_on, fmt)

    async def job(request: Request) -> Response:
        server.check_token(request)
        fmt = _format(request)
        j = server.jobs.get(request.path_params["job_id"])
        if j is None:
            raise HttpError(404, "no such job (unknown, or forgotten)")
        doc = {"job": j.id, "state": j.state, "created": j.created, "finished": j.finished}
        if j.error:
            doc["error"] = j.error
        if j.state == "done" and j.report is not None:
            if fmt == "sarif":
                return render_report(j.report, j.fail_on, "sarif")
            from ..render.json import report_doc

            doc["report"] = report_doc(j.report, j.fail_on)
        return JSONResponse(doc)

    from .hooks import hook_routes

    routes = [
        Route("/healthz", route("/healthz", healthz), methods=["GET"]),
        Route("/readyz", route("/readyz", readyz), methods=["GET"]),
        Route("/metrics", route("/metrics", metrics), methods=["GET"]),
        Route("/v1/scan", route("/v1/scan", scan), methods=["POST"]),
        Route("/v1/jobs/{job_id}", route("/v1/jobs", job), methods=["GET"]),
    ] + [Route(path, route(path, fn), methods=["POST"]) for path, fn in hook_routes(server)]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.pool = pool or await asyncio.to_thread(WorkerPool, config.workers, config.max_memory)
        try:
            yield
        finally:
            await asyncio.to_thread(server.pool.close, False, config.grace)
            for t in list(server.tasks):
                t.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app


__all__ = ["HttpError", "Job", "Server", "create_app", "verdict_of"]
