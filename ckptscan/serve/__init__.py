"""``ckptscan serve``: the scanner as an HTTP service and the webhooks of artifact stores.

Optional extra: ``pip install 'ckptscan[server]'`` (Starlette + uvicorn). Layer: beside
:mod:`ckptscan.bulk` and :mod:`ckptscan.history`; it uses bulk, discovery, the renderers
and the runtime limits, never the CLI.

=====================  ==========================================================
module                 what
=====================  ==========================================================
``app``                the ASGI app: ``/v1/scan``, ``/v1/jobs/{id}``, health, metrics
``hooks``              ``/hooks/mlflow``, ``/hooks/s3``, ``/hooks/hf``, ``/hooks/lakefs``
``http``               :class:`HttpError`, :class:`Job`, ``verdict_of`` (shared by app, hooks, scanning)
``allow``              the ``--allow`` list (canonical URIs, decided with no I/O)
``pool``               long-lived worker processes, one file each at a time
``scanning``           URIs -> files -> results in the pool
``events``             payload parsing, signatures, verdicts (no web framework)
``metrics``            Prometheus text format
``config``             :class:`ServeConfig`, secrets
=====================  ==========================================================

See ``docs/serve.md``.
"""

from __future__ import annotations

from .config import ServeConfig

SERVER_HINT = "ckptscan serve needs the optional extra: pip install 'ckptscan[server]'"


def run(config: ServeConfig) -> None:
    """Serve ``config`` with uvicorn until SIGTERM / SIGINT, then drain and return.

    Draining: the listening socket closes, requests in progress get up to ``config.grace``
    seconds (running scans finish, queued files are cancelled), the workers stop. The
    process then exits 0 (uvicorn would re-raise SIGTERM on itself after draining).
    """
    import uvicorn

    from .app import create_app

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # drain, then exit normally: no re-raised SIGTERM
            super().handle_exit(sig, frame)
            caps = getattr(self, "_captured_signals", None)  # uvicorn >= 0.29
            if caps and caps[-1] == sig and sig != 2:
                caps.pop()

    cfg = uvicorn.Config(create_app(config), host=config.host, port=config.port, log_level="warning",
                         timeout_graceful_shutdown=int(config.grace), access_log=False, lifespan="on")
    _Server(cfg).run()


__all__ = ["SERVER_HINT", "ServeConfig", "run"]
