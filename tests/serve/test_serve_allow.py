"""The ``--allow`` list (``ckptscan/serve/allow.py``): canonical forms, prefixes, refusals (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckptscan.serve.allow import AllowList, NotAllowed, canonical

ALLOW = AllowList(["s3://models/", "file:///srv/models/", "http://store.internal:8080/ckpts/", "models:/resnet", "hf://org/"])


@pytest.mark.parametrize("uri, read", [
    ("s3://models/a.keras", "s3://models/a.keras"),
    ("S3://MODELS/a.keras", "s3://models/a.keras"),
    ("s3://models/dir%20x/a.keras", "s3://models/dir x/a.keras"),
    ("/srv/models/a.keras", "/srv/models/a.keras"),
    ("file:///srv/models/a.keras", "/srv/models/a.keras"),
    ("file://localhost/srv/models/a.keras", "/srv/models/a.keras"),
    ("http://STORE.internal:8080/ckpts/a.keras", "http://store.internal:8080/ckpts/a.keras"),
    ("http://store.internal.:8080/ckpts/a%20b.keras?sig=1", "http://store.internal:8080/ckpts/a%20b.keras?sig=1"),
    ("models:/resnet/3", "models:/resnet/3"),
    ("models:/resnet@champion", "models:/resnet@champion"),
    ("hf://org/repo@0123abc/k3/x.keras", "hf://org/repo@0123abc/k3/x.keras"),
])
def test_allowed(uri, read):
    assert ALLOW.check(uri).uri == read


@pytest.mark.parametrize("uri", [
    "s3://models-evil/a.keras", "s3://model/a.keras", "s3://models/../other/a.keras", "s3://models/%2e%2e/other/x",
    "s3://models/a/..%2f..%2fx", "s3://models/%252e%252e/x", "s3://models//x", "s3://models/x#f",
    "/srv/models/../../etc/passwd", "/srv/models/./a.keras", "/srv/models-2/a.keras", "srv/models/a.keras",
    "file:///srv/models/..", "file://host/srv/models/a.keras", "file:///srv/models/a.keras?x=1", "/srv/models\\..\\x",
    "/srv/models/a\x00.keras", "/srv/models/a%00.keras", "file:///etc/passwd",
    "http://store.internal:8081/ckpts/a.keras", "https://store.internal:8080/ckpts/a.keras",
    "http://store.internal/ckpts/a.keras", "http://u:p@store.internal:8080/ckpts/a.keras",
    "http://store.internal:8080@127.0.0.1/ckpts/a.keras", "http://store.internal:8080/ckpts-x/a.keras",
    "http://127.0.0.1:8080/ckpts/a.keras", "http://store.internal:99999/ckpts/a", "models:/resnet2/1",
    "models:/resnet/../dev/1", "models:/resnet%2f..%2fdev/1", "runs:/abc/model", "hf://org2/x", "hf://other/org/x", "", "gopher://x/y",
])
def test_refused(uri):
    with pytest.raises(NotAllowed):
        ALLOW.check(uri)


SEG = st.text(alphabet="ab.%2eEfF/\\", min_size=0, max_size=6)


@given(st.lists(SEG, min_size=1, max_size=6))
def test_no_canonical_path_leaves_the_prefix(parts):
    """Whatever the spelling, an allowed URI's decoded path has no '..' and stays under the prefix."""
    uri = "file:///srv/models/" + "/".join(parts)
    try:
        c = ALLOW.check(uri)
    except NotAllowed:
        return
    assert c.local_path.startswith("/srv/models/")
    assert ".." not in c.local_path.split("/") and "\\" not in c.local_path and "%" not in c.local_path


def test_bad_prefix_is_refused_at_start():
    with pytest.raises(NotAllowed):
        AllowList(["s3://models/../x/"])
    assert canonical("s3://Models/").key == "s3://models/"
