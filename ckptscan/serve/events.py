"""Webhook payloads and verdicts as plain data (no web framework: the Lambda handler uses it too).

* :func:`verify_mlflow` - MLflow's ``X-MLflow-Signature``: ``v1,`` + base64 of
  HMAC-SHA256(secret, ``"{delivery_id}.{timestamp}.{body}"``), timestamp in seconds.
* :func:`s3_objects` - S3 event notification records -> ``(s3 URI, eTag, versionId)``.
* :func:`verdict` / :func:`summary` - the words written back to a store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass

from ..report import Report, Severity

CHECKPOINT_SUFFIXES = (".keras", ".h5", ".hdf5", ".weights.json")


class BadDelivery(ValueError):
    """A webhook delivery that fails verification (the reason; answered 401)."""


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    msg = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()


def verify_mlflow(secret: str, headers, body: bytes, max_age: float, now: float | None = None) -> str:
    """Check an MLflow delivery; returns its delivery id, :class:`BadDelivery` otherwise."""
    delivery_id = headers.get("x-mlflow-delivery-id", "")
    timestamp = headers.get("x-mlflow-timestamp", "")
    signature = headers.get("x-mlflow-signature", "")
    if not (delivery_id and timestamp and signature):
        raise BadDelivery("missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature")
    want = mlflow_signature(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(signature.encode("utf-8", "surrogateescape"), want.encode()):
        raise BadDelivery("wrong X-MLflow-Signature")
    try:
        ts = float(timestamp)
    except ValueError:
        raise BadDelivery("X-MLflow-Timestamp is not a number") from None
    if abs((time.time() if now is None else now) - ts) > max_age:
        raise BadDelivery(f"stale delivery (timestamp more than {max_age:g} s away)")
    return delivery_id


def check_secret(expected: str, got: str | None) -> None:
    """Constant-time comparison of a shared secret sent verbatim (HF ``X-Webhook-Secret``, lakeFS)."""
    if not got or not hmac.compare_digest(got.encode("utf-8", "surrogateescape"), expected.encode()):
        raise BadDelivery("missing or wrong webhook secret")


@dataclass(frozen=True)
class S3Object:
    """One created object of an S3 event notification."""

    uri: str
    etag: str | None
    version_id: str | None
    event: str


def s3_objects(doc: object) -> list[S3Object]:
    """The created objects of an S3 notification (``Records[]``); ``ValueError`` when malformed.

    Keys arrive URL-encoded with ``+`` for spaces (``unquote_plus``). Test events
    (``s3:TestEvent``) and non-creation events give nothing.
    """
    if not isinstance(doc, dict):
        raise ValueError("S3 notification must be a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    recs = doc.get("Records")
    if not isinstance(recs, list) or len(recs) > 1000:
        raise ValueError('S3 notification needs "Records": [...]')
    out = []
    for r in recs:
        try:
            name = str(r.get("eventName", ""))
            s3 = r["s3"]
            bucket = str(s3["bucket"]["name"])
            obj = s3["object"]
            key = urllib.parse.unquote_plus(str(obj["key"]))
        except (KeyError, TypeError, AttributeError):
            raise ValueError("S3 record without s3.bucket.name / s3.object.key") from None
        if not name.startswith("ObjectCreated"):
            continue
        out.append(S3Object(f"s3://{bucket}/{key}", obj.get("eTag"), obj.get("versionId"), name))
    return out


def verdict(report: Report, fail_on: str = "error") -> str:
    """``pass`` | ``fail`` | ``unreadable`` for a whole report (unreadable wins; nothing scanned is unreadable)."""
    if report.files_with("error") or not report.files_with("scanned"):
        return "unreadable"
    if fail_on != "never":
        bar = Severity(fail_on).rank
        if any(f.severity.rank >= bar for f in report.findings):
            return "fail"
    return "pass"


def summary(report: Report) -> str:
    """One line: the worst finding (``BN001 layer/variable``) and how many more, or why unreadable."""
    errs = report.files_with("error")
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        return f"unreadable: {errs[0].path}: {errs[0].reason}{more}"[:500]
    if not report.files_with("scanned"):
        return "unreadable: no Keras checkpoint found"
    fs = sorted(report.findings, key=lambda f: (-f.severity.rank, f.rule_id))
    if not fs:
        return f"no findings ({len(report.files_with('scanned'))} file(s) scanned)"
    first = fs[0]
    where = first.path or first.file
    same = sum(1 for f in fs if f.severity == first.severity)  # "+N more" of the worst severity
    more = f" (+{same - 1} more)" if same > 1 else ""
    return f"{first.rule_id} {where}{more}"[:500]


def tags(report: Report, fail_on: str = "error") -> dict[str, str]:
    """The ``ckptscan.*`` tags written on an MLflow model version."""
    from .._version import __version__

    return {
        "ckptscan.verdict": verdict(report, fail_on),
        "ckptscan.errors": str(report.count(Severity.ERROR)),
        "ckptscan.warnings": str(report.count(Severity.WARNING)),
        "ckptscan.summary": summary(report),
        "ckptscan.version": __version__,
    }
