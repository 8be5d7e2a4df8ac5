"""The ``checkpoint`` state file of a TensorFlow checkpoint folder (``CheckpointState``
in text proto, written by ``tf.train.CheckpointManager`` and ``save_weights``).

It names the latest prefix (``model_checkpoint_path``) and every kept one
(``all_model_checkpoint_paths``, oldest first). Its paths may be relative to the
folder, absolute, or absolute from another machine (a folder copied off a training
host): a listed path is looked up as written, then by its base name beside the state
file. :func:`listed_checkpoints` is what ``--all-checkpoints`` and ``timeline`` read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: Largest ``checkpoint`` state file read.
MAX_STATE_BYTES = 1 << 20
_LINE = re.compile(r'\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"((?:[^"\\]|\\.)*)"')


def state_file(d: str) -> str | None:
    """``d/checkpoint`` when it is a state file (names a ``model_checkpoint_path``), else None."""
    f = os.path.join(d, "checkpoint")
    if not os.path.isfile(f):
        return None
    try:
        with open(f, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    return f if b"model_checkpoint_path" in head else None


def read_state(d: str) -> tuple[str | None, list[str]]:
    """``(latest, all kept)`` as the state file of folder ``d`` writes them (unresolved);
    ``(None, [])`` when there is no readable state file."""
    state = state_file(d)
    if state is None:
        return None, []
    try:
        with open(state, "rb") as fh:
            text = fh.read(MAX_STATE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None, []
    return parse_state(text)


def parse_state(text: str) -> tuple[str | None, list[str]]:
    """``(latest, all kept)`` from the text of a state file (local or remote)."""
    latest, kept = None, []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            value = m.group(2).encode("utf-8").decode("unicode_escape", "replace")
            if m.group(1) == "model_checkpoint_path":
                latest = value
            else:
                kept.append(value)
    return latest, kept


def state_candidates(text: str) -> list[str]:
    """The prefixes a state file's text names, latest first, then the others newest first."""
    latest, kept = parse_state(text)
    return ([latest] if latest else []) + kept[::-1]


def basename(p: str) -> str:
    """The last component of a path written on any system (``/`` or ``\\``)."""
    return re.split(r"[\\/]", p)[-1]


def resolve(d: str, listed: str) -> str | None:
    """The local prefix a listed path names (its ``.index`` exists): as written (relative
    to ``d`` unless absolute), else its base name beside the state file; None if neither."""
    for prefix in (listed if os.path.isabs(listed) else os.path.join(d, listed), os.path.join(d, basename(listed))):
        if basename(listed) and os.path.isfile(prefix + ".index"):
            return prefix
    return None


def present_indexes(d: str) -> list[str]:
    """The prefixes of the ``*.index`` files in ``d``, oldest first (by the ``-N`` step
    suffix CheckpointManager writes, then modification time)."""
    found = []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    for name in names:
        full = os.path.join(d, name)
        if name.endswith(".index") and os.path.isfile(full):
            m = re.search(r"-(\d+)\.index$", name)
            found.append((int(m.group(1)) if m else -1, os.path.getmtime(full), name, full[: -len(".index")]))
    return [f[3] for f in sorted(found)]


@dataclass(frozen=True)
class Listed:
    """One checkpoint of a state-file folder: its local prefix, or why it is missing."""

    prefix: str
    """The local prefix (``dir/ckpt-3``); for a missing one, the base name beside the state file."""
    missing: str | None = None
    """Why it cannot be read (listed by the state file, no ``.index`` present), else None."""


def listed_checkpoints(d: str) -> list[Listed]:
    """Every checkpoint of the state-file folder ``d``, oldest first.

    The ones the state file lists (``all_model_checkpoint_paths``, then
    ``model_checkpoint_path`` if not among them), each resolved by :func:`resolve`; one
    that resolves to nothing is returned with its ``missing`` reason. When none of the
    listed ones is present (a stale state file, or one that lists nothing), the
    ``*.index`` files present beside it instead (:func:`present_indexes`).
    """
    latest, kept = read_state(d)
    names = list(dict.fromkeys(kept + ([latest] if latest else [])))
    out, seen = [], set()
    for listed in names:
        prefix = resolve(d, listed)
        key = os.path.normpath(prefix or os.path.join(d, basename(listed) or listed))
        if key in seen:
            continue
        seen.add(key)
        out.append(Listed(prefix) if prefix else
                   Listed(key, f"listed in the checkpoint state file as {listed!r}, but no .index is present"))
    if not any(x.missing is None for x in out):
        return [Listed(p) for p in present_indexes(d)] + [x for x in out if x.missing]
    return out
