"""The ``--allow`` list: which URIs a scan request may name, decided with no I/O.

A request names URIs; the server reads only those under a prefix given with ``--allow``
(``s3://models/``, ``file:///srv/models/``, ``http://store.internal:8080/ckpts/``,
``hf://org/``, ``models:/``). Anything else is refused (403) before a byte is read:
no server-side request forgery through a scan request.

Both the request and the prefixes are brought to one canonical form first
(:func:`canonical`), and a URI that cannot be made canonical is refused:

* the scheme and host are lower-cased, a default port is dropped, a trailing dot of
  the host is dropped; user info (``http://allowed@127.0.0.1/``) is refused;
* the path is percent-decoded once; what still holds ``%`` after that (double
  encoding), a ``.`` or ``..`` segment, a backslash, an empty segment inside the path
  (``//``) or a control character is refused, never "resolved";
* a bare path must be absolute and becomes ``file://`` + path; relative paths are refused;
* a fragment is refused; a query is kept (signed URLs) but never matched against a prefix.

A URI is allowed when its canonical form starts with a canonical prefix at a path
boundary: ``s3://models/`` allows ``s3://models/a.keras`` but ``s3://models`` does not
allow ``s3://models-evil/``. Local files are then also checked after resolving
symbolic links (:func:`local_escape`): a link inside an allowed folder that points out of
it is refused too; that check is the only one that touches the filesystem (``lstat`` of
the path's components, never an ``open``).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Schemes written ``scheme:/path`` (no authority): MLflow's registry and run URIs.
OPAQUE_SCHEMES = ("models", "runs")


class NotAllowed(ValueError):
    """A URI that is not under the allow list, or cannot be made canonical (the reason)."""


@dataclass(frozen=True)
class Canonical:
    """A URI in canonical form: ``key`` is matched against prefixes, ``uri`` is what is read."""

    key: str
    """``scheme://host[:port]/decoded/path`` (no query)."""
    uri: str
    """The URI handed to the scanner (local files as plain paths; http(s) re-quoted; query kept)."""
    scheme: str
    local_path: str | None = None


def _clean_path(path: str, what: str) -> str:
    if "%" in path:
        decoded = urllib.parse.unquote(path)
        if "%" in decoded:
            raise NotAllowed(f"{what}: percent-encoded '%' (double encoding) refused")
        path = decoded
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise NotAllowed(f"{what}: control character in path")
    if "\\" in path:
        raise NotAllowed(f"{what}: backslash in path")
    segs = path.split("/")
    inner = segs[1:-1] if path.startswith("/") else segs[:-1]
    if any(s in (".", "..") for s in segs):
        raise NotAllowed(f"{what}: '.' or '..' path segment refused")
    if any(s == "" for s in inner):
        raise NotAllowed(f"{what}: empty path segment ('//') refused")
    return path


def canonical(uri: str) -> Canonical:
    """The canonical form of ``uri`` (a request's or a prefix's); :class:`NotAllowed` if none."""
    if not isinstance(uri, str) or not uri or len(uri) > 4096:
        raise NotAllowed("a URI must be a non-empty string of at most 4096 characters")
    for scheme in OPAQUE_SCHEMES:
        if uri.lower().startswith(scheme + ":") and not uri.lower().startswith(scheme + "://"):
            rest = uri[len(scheme) + 1:]
            if not rest.startswith("/"):
                raise NotAllowed(f"{uri}: expected {scheme}:/…")
            path = _clean_path(rest, uri)
            return Canonical(f"{scheme}:{path}", f"{scheme}:{path}", scheme)
    if "://" not in uri:
        if not uri.startswith("/"):
            raise NotAllowed(f"{uri}: relative paths are refused (give file:///absolute/path)")
        path = _clean_path(uri, uri)
        return Canonical("file://" + path, path, "file", local_path=path)
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise NotAllowed(f"{uri}: bad scheme")
    if parts.fragment:
        raise NotAllowed(f"{uri}: fragment refused")
    if "@" in parts.netloc and scheme not in ("hf",):
        raise NotAllowed(f"{uri}: user info in the authority refused")
    netloc = parts.netloc
    if "%" in netloc or any(ord(c) < 0x21 for c in netloc) or "\\" in netloc:
        raise NotAllowed(f"{uri}: bad authority")
    path = _clean_path(parts.path, uri) if parts.path else "/"
    if scheme == "file":
        if netloc not in ("", "localhost"):
            raise NotAllowed(f"{uri}: file:// URIs name no host")
        if parts.query:
            raise NotAllowed(f"{uri}: query refused on file://")
        return Canonical("file://" + path, path, "file", local_path=path)
    if scheme in ("http", "https"):
        host = (parts.hostname or "").rstrip(".")
        try:
            port = parts.port
        except ValueError as exc:
            raise NotAllowed(f"{uri}: bad port") from exc
        if not host:
            raise NotAllowed(f"{uri}: no host")
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            netloc = f"{host}:{port}"
        else:
            netloc = host
        if ":" in host and not netloc.startswith("["):  # IPv6 literal
            netloc = f"[{host}]" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")
        quoted = urllib.parse.quote(path, safe="/:@!$&'()*+,;=-._~")
        read = f"{scheme}://{netloc}{quoted}" + (f"?{parts.query}" if parts.query else "")
        return Canonical(f"{scheme}://{netloc}{path}", read, scheme)
    netloc = netloc.lower() if scheme not in ("hf",) else netloc
    key = f"{scheme}://{netloc}{path}"
    read = key + (f"?{parts.query}" if parts.query else "")
    return Canonical(key, read, scheme)


def _under(key: str, prefix: str) -> bool:
    if not key.startswith(prefix):
        return False
    if prefix.endswith(("/", ":")) or len(key) == len(prefix):
        return True
    return key[len(prefix)] in "/@"  # hf://org/repo allows hf://org/repo@rev/…


class AllowList:
    """Canonical ``--allow`` prefixes; :meth:`check` returns what to read or raises :class:`NotAllowed`."""

    def __init__(self, prefixes: list[str] | tuple[str, ...]):
        self.prefixes: tuple[str, ...] = tuple(canonical(p).key for p in prefixes)

    def check(self, uri: str) -> Canonical:
        """The canonical form of an allowed ``uri``; :class:`NotAllowed` otherwise (no I/O)."""
        c = canonical(uri)
        if not any(_under(c.key, p) for p in self.prefixes):
            raise NotAllowed(f"{uri}: not under an --allow prefix")
        return c

    def local_escape(self, path: str) -> str | None:
        """Why the local ``path`` escapes every allowed folder once links are resolved, or None."""
        real = os.path.realpath(path)
        key = "file://" + real
        if any(_under(key, p) for p in self.prefixes if p.startswith("file://")):
            return None
        return f"{path}: resolves (symbolic link) outside every --allow prefix"

    def allows(self, uri: str) -> bool:
        """True when :meth:`check` would accept ``uri``."""
        try:
            self.check(uri)
            return True
        except NotAllowed:
            return False


def join(base: str, rel: str) -> str:
    """``base`` URI joined with a relative key (no normalisation: the result is checked again)."""
    return base.rstrip("/") + "/" + rel.lstrip("/") if rel else base


__all__ = ["AllowList", "Canonical", "NotAllowed", "canonical", "join"]
