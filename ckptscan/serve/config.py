"""What ``ckptscan serve`` is started with (:class:`ServeConfig`), and where secrets come from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: Environment variables of the secrets (each also has a ``--…-file`` option).
TOKEN_ENV = "CKPTSCAN_TOKEN"
MLFLOW_SECRET_ENV = "CKPTSCAN_MLFLOW_SECRET"
HF_SECRET_ENV = "CKPTSCAN_HF_SECRET"
LAKEFS_SECRET_ENV = "CKPTSCAN_LAKEFS_SECRET"

#: Largest request body accepted (bytes); S3 notifications are at most 64 KB.
DEFAULT_MAX_BODY = 1 << 20
#: A webhook delivery older (or newer) than this is refused as stale (seconds).
DEFAULT_HOOK_MAX_AGE = 300.0
#: lakeFS aborts a hook after 1 minute by default: answer before this.
LAKEFS_DEADLINE = 50.0


@dataclass(frozen=True)
class ServeConfig:
    """Everything the app needs; built by the CLI or by tests."""

    allow: tuple[str, ...]
    """``--allow`` prefixes."""
    token: str | None = None
    """The API bearer token (``CKPTSCAN_TOKEN`` / ``--token-file``); None: ``/v1`` is closed."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    queue: int = 16
    """Scan requests (and hook deliveries) admitted beyond one per worker before ``429``."""
    timeout: float = 300.0
    """``--timeout`` per file (seconds; 0: none)."""
    max_memory: int | None = None
    """Memory cap of each worker (bytes; None: ``CKPTSCAN_MAX_MEMORY`` or 2 GiB; 0: none)."""
    max_body: int = DEFAULT_MAX_BODY
    mlflow_secret: str | None = None
    hf_secret: str | None = None
    lakefs_secret: str | None = None
    mlflow_block_alias: str | None = None
    hook_max_age: float = DEFAULT_HOOK_MAX_AGE
    lakefs_deadline: float = LAKEFS_DEADLINE
    grace: float = 30.0
    """SIGTERM: seconds running scans get to finish before they are stopped."""
    jobs_kept: int = 1000
    """Finished async jobs remembered (oldest forgotten first)."""
    retry_after: int = 5
    extra: dict = field(default_factory=dict)


def read_secret(value_env: str, path: str | None) -> str | None:
    """A secret from the file ``path`` (first line, stripped) or else the environment variable."""
    if path:
        with open(path, encoding="utf-8") as fh:
            s = fh.readline().strip()
        if not s:
            raise ValueError(f"{path}: empty secret file")
        return s
    v = os.environ.get(value_env, "").strip()
    return v or None
