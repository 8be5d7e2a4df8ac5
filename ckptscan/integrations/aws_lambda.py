"""AWS Lambda entry point for S3 event notifications: ``ckptscan.integrations.aws_lambda.handler``.

The same contract as ``POST /hooks/s3`` of ``ckptscan serve``, without the server: each
``ObjectCreated`` record's object (``s3.bucket.name``, URL-encoded ``s3.object.key``) that
looks like a Keras checkpoint is scanned with ranged reads (``ckptscan[remote]`` in the
function's package), and the handler returns::

    {"verdict": "pass" | "fail" | "unreadable", "summary": "...",
     "objects": [{"uri", "eTag", "versionId"}], "report": <the JSON report>}

Configuration (environment of the function):

``CKPTSCAN_ALLOW``     comma-separated URI prefixes; records outside are refused (recommended)
``CKPTSCAN_TIMEOUT``   seconds per file (default 300; keep it under the function's timeout)

Credentials are the function's execution role (boto's usual chain). The handler never
writes to the bucket: quarantine or tag from your own code with the returned verdict.
"""

from __future__ import annotations

import os


def handler(event: dict, context: object = None) -> dict:
    """Scan the objects an S3 event notification announces; the verdict and the report."""
    from ..render.json import report_doc
    from ..report import FileResult, Report
    from ..engine import make_options, scan_file
    from ..serve.allow import AllowList, NotAllowed
    from ..serve.events import CHECKPOINT_SUFFIXES, s3_objects, summary, verdict

    objs = [o for o in s3_objects(event) if o.uri.endswith(CHECKPOINT_SUFFIXES)]
    allow_env = os.environ.get("CKPTSCAN_ALLOW", "").strip()
    allow = AllowList([p.strip() for p in allow_env.split(",") if p.strip()]) if allow_env else None
    options = make_options(timeout=float(os.environ.get("CKPTSCAN_TIMEOUT", "300")) or None)
    files = []
    for o in objs:
        if allow is not None:
            try:
                allow.check(o.uri)
            except NotAllowed as exc:
                files.append(FileResult(path=o.uri, status="error", reason=str(exc)))
                continue
        files.append(scan_file(o.uri, options))
    report = Report(files=tuple(files))
    return {
        "verdict": verdict(report) if files else "pass",
        "summary": summary(report) if files else "no Keras checkpoint in the event",
        "objects": [{"uri": o.uri, "eTag": o.etag, "versionId": o.version_id} for o in objs],
        "report": report_doc(report),
    }
