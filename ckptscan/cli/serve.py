"""CLI command ``serve`` (registered on :data:`ckptscan.cli._app.app` by :mod:`ckptscan.cli.program`): a thin wrapper over :mod:`ckptscan.serve`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._app import ExitCode, app, usage_error


def _size(text: str) -> int:
    """Bytes of ``"1M"``, ``"512K"``, ``"65536"`` (binary units)."""
    t = text.strip().lower().rstrip("ib").rstrip("b") if text.strip().lower() not in ("", "0") else "0"
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "kmg" else t
    try:
        n = int(float(num) * mult)
    except ValueError:
        raise ValueError(f"--max-body: not a size: {text!r} (e.g. 1M, 512K)") from None
    if n <= 0:
        raise ValueError("--max-body must be positive")
    return n


@app.command()
def serve(
    allow: Annotated[list[str], typer.Option("--allow", help="URI prefix the server may read (repeat): s3://models/, file:///srv/models/, models:/, hf://org/.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Scan worker processes.")] = 2,
    queue: Annotated[int, typer.Option("--queue", min=0, help="Scan requests admitted beyond one per worker; more get 429.")] = 16,
    token_file: Annotated[str | None, typer.Option("--token-file", help="File holding the API bearer token (else CKPTSCAN_TOKEN).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up on a file after this many seconds (0: no limit).")] = 300.0,
    max_body: Annotated[str, typer.Option("--max-body", metavar="SIZE", help="Largest request body (413 past it).")] = "1M",
    mlflow_secret_file: Annotated[str | None, typer.Option("--mlflow-secret-file", help="MLflow webhook secret (else CKPTSCAN_MLFLOW_SECRET).")] = None,
    hf_secret_file: Annotated[str | None, typer.Option("--hf-secret-file", help="Hugging Face webhook secret (else CKPTSCAN_HF_SECRET).")] = None,
    lakefs_secret_file: Annotated[str | None, typer.Option("--lakefs-secret-file", help="lakeFS hook secret (else CKPTSCAN_LAKEFS_SECRET).")] = None,
    mlflow_block_alias: Annotated[str | None, typer.Option("--mlflow-block-alias", help="Move this alias only to versions that pass; tag the ones that fail.")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, help="On SIGTERM, seconds running scans get to finish.")] = 30.0,
) -> ExitCode:
    """Serve scans over HTTP (POST /v1/scan) and the webhooks of MLflow, S3, the HF Hub and lakeFS."""
    import importlib.util

    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        from ..serve import SERVER_HINT

        return usage_error(SERVER_HINT)
    from ..serve import ServeConfig, run
    from ..serve.allow import AllowList, NotAllowed
    from ..serve.config import HF_SECRET_ENV, LAKEFS_SECRET_ENV, MLFLOW_SECRET_ENV, TOKEN_ENV, read_secret

    try:
        AllowList(allow)
    except NotAllowed as exc:
        return usage_error(f"--allow: {exc}")
    try:
        token = read_secret(TOKEN_ENV, token_file)
        secrets = [read_secret(env, f) for env, f in ((MLFLOW_SECRET_ENV, mlflow_secret_file), (HF_SECRET_ENV, hf_secret_file),
                                                     (LAKEFS_SECRET_ENV, lakefs_secret_file))]
        body = _size(max_body)
    except (OSError, ValueError) as exc:
        return usage_error(str(exc))
    if token is None:
        return usage_error(f"set {TOKEN_ENV} or --token-file: the API needs a bearer token")
    cfg = ServeConfig(allow=tuple(allow), token=token, host=host, port=port, workers=workers, queue=queue, timeout=timeout,
                      max_body=body or (1 << 20), mlflow_secret=secrets[0], hf_secret=secrets[1], lakefs_secret=secrets[2],
                      mlflow_block_alias=mlflow_block_alias, grace=grace)
    sys.stderr.write(f"ckptscan: serving on http://{host}:{port} ({workers} workers; allow: {', '.join(allow)})\n")
    sys.stderr.flush()
    run(cfg)
    return ExitCode.OK
