"""Named shards resolved to their sharded set (``scan --shard-sets``; the pre-commit hook).

pre-commit passes the staged files one by one. A shard of a Keras 3 sharded checkpoint
(``model_00001.weights.h5`` beside ``model.weights.json``) read alone has no variable
names and no layer kinds: a broken BatchNormalization statistic in it reads as
``NUM001 batch_normalization_21/vars/3`` instead of ``BN001 resnet101v2/post_bn/moving_variance``.
:func:`resolve_shards` replaces each named local file that the ``weight_map`` of a
``*.weights.json`` index in its own folder lists by that index (the whole set is
scanned, with names), and names each index once however many of its shards (and
itself) were named. Everything else is passed through unchanged.
"""

from __future__ import annotations

import os
from typing import Iterable

INDEX_SUFFIX = ".weights.json"


def _listed(index: str) -> list[str]:
    """The shard names ``index`` lists; [] for an index that cannot be read (scanning it says why)."""
    from ..formats._errors import parse_json
    from ..formats.layouts import shard_names
    from ..formats.source import LocalSource
    from ..runtime.bounds import MAX_JSON_BYTES

    try:
        if os.path.getsize(index) > MAX_JSON_BYTES:
            return []
        with open(index, "rb") as fh:
            doc = parse_json(fh.read(MAX_JSON_BYTES + 1))
        return shard_names(LocalSource(index), doc, top=True)
    except Exception:  # noqa: BLE001 - not an index we can use: the shard is scanned as named
        return []


def _indexes(folder: str, cache: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """Shard name -> the ``*.weights.json`` indexes of ``folder`` that list it."""
    if folder not in cache:
        owners: dict[str, list[str]] = {}
        try:
            names = sorted(n for n in os.listdir(folder or ".") if n.endswith(INDEX_SUFFIX))
        except OSError:
            names = []
        for name in names:
            index = os.path.join(folder, name)
            if os.path.isfile(index):
                for shard in _listed(index):
                    owners.setdefault(shard, []).append(index)
        cache[folder] = owners
    return cache[folder]


def resolve_shards(paths: Iterable[str]) -> list[str]:
    """``paths`` with every named shard replaced by its index, each path once, in order."""
    out: list[str] = []
    cache: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        resolved = [path]
        if not path.endswith(".json") and os.path.isfile(path):
            folder, name = os.path.split(path)
            resolved = _indexes(folder, cache).get(name) or [path]
        for p in resolved:
            if os.path.normpath(p) not in {os.path.normpath(q) for q in out}:
                out.append(p)
    return out
