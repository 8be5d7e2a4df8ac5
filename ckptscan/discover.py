"""The one place that turns what the user named into work items.

Paths, folders (walked recursively), globs, URIs (remote globs and folders listed
through fsspec) and sharded sets become checkpoints:

- :func:`discover` (``scan``): files as given; folders walked, keeping what the
  *content* says is a Keras archive (a ``.keras`` folder counts as one archive; the
  shards an index lists are scanned through it and reported as skipped); local globs.
- :func:`expand` (``fix``): files as given; folders walked, keeping files *named*
  like checkpoints (``.keras``, ``.h5``, ``.hdf5``, ``.weights.json``, a TensorFlow
  ``.index``) except shards.
- :func:`expand_uris`: URI globs and URI folders into checkpoint URIs.
- :func:`mlflow_paths` / :func:`resolve_mlflow`: MLflow URIs (``models:/``, ``runs:/``)
  into the checkpoints of the version or run (:mod:`ckptscan.mlflow_store`), each with
  its label.

There is one directory walker (:func:`walk`) and one way to find the shards of an index
(:func:`shards_of`, through :func:`ckptscan.formats.layouts.shard_names`).
"""

from __future__ import annotations

import contextlib
import glob as globmod
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import CkptscanError
from .formats.layouts import index_doc, safe_shard_name, shard_names
from .formats.layouts import is_keras_dir as _is_keras_source
from .formats.source import LocalSource
from .formats.tf import DATA_SHARD, dir_skip_reason, is_tf_dir

#: File names kept when walking a folder by name (``fix``) or listing a remote folder.
CANDIDATE_SUFFIXES = (".keras", ".h5", ".hdf5", ".weights.json", ".index")


@dataclass(frozen=True)
class Candidate:
    """A path found by :func:`discover`: to scan, or skipped with a reason."""

    path: str
    skip_reason: str | None = None
    explicit: bool = False
    """Named on the command line (an unreadable one is an error, not a skip)."""


def is_glob(s: str) -> bool:
    """True when ``s`` holds glob characters."""
    return any(ch in s for ch in "*?[")


def is_keras_dir(path: str) -> bool:
    """True for a folder that is one checkpoint: an unzipped ``.keras`` folder
    (``config.json`` plus the weights), or a TensorFlow checkpoint folder (a state file,
    a ``dir/.index``, a SavedModel; an Orbax folder too, listed and skipped)."""
    return _is_keras_source(LocalSource(path)) or is_tf_dir(path)


def shards_of(index: str) -> list[str]:
    """The shard files a local sharded index lists (empty when it is not a readable index)."""
    src = LocalSource(index)
    try:
        names = shard_names(src, index_doc(src))
    except CkptscanError:
        return []
    return [os.path.join(os.path.dirname(index), n) for n in names if safe_shard_name(n)]


def walk(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``(folder, keras_dirs, files)`` for every folder under ``root``, in natural order, hidden
    entries skipped; a checkpoint folder (an unzipped ``.keras``, a TensorFlow checkpoint
    or SavedModel folder) is listed, never entered."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=natural_key)
        keep, found = [], []
        for d in dirnames:
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            (found if is_keras_dir(full) else keep).append(full)
        dirnames[:] = [os.path.basename(k) for k in keep]
        yield dirpath, found, [f for f in sorted(filenames, key=natural_key) if not f.startswith(".")]


def natural_key(path: str) -> list:
    """Sort key putting ``epoch_2`` before ``epoch_10`` (digit runs compared as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t != ""]


# --- scan: by content ------------------------------------------------------------------


def discover(paths: Iterable[str | os.PathLike], strict: bool = False, named_verdicts: bool = False,
             all_checkpoints: bool = False) -> list[Candidate]:
    """Expand files, directories (recursive, by content) and globs into candidates.

    Each file found in a folder or matched by a glob gets its
    :func:`ckptscan.formats.verdict.classify` verdict: ``keras`` and ``unreadable`` files
    are scanned (the reader reports why an unreadable one cannot be read: exit 2),
    ``not_keras`` ones are skipped with the reason (``strict``: a well-formed non-Keras
    HDF5/zip is unreadable instead). A file named explicitly is always scanned, unless
    ``named_verdicts`` (``scan --skip-non-keras``, the pre-commit hook, which names every
    staged file): then it gets the folder verdict too. A TensorFlow checkpoint folder
    with a ``checkpoint`` state file is one candidate (its latest checkpoint), or with
    ``all_checkpoints`` one per checkpoint it lists (:func:`checkpoints_in`).
    """
    from .formats.verdict import classify

    out: list[Candidate] = []
    seen: set[str] = set()

    def add(c: Candidate) -> None:
        for one in checkpoints_in(c) if all_checkpoints else (c,):
            key = os.path.normpath(one.path)
            if key not in seen:
                seen.add(key)
                out.append(one)

    for raw in paths:
        p = str(raw)
        if not os.path.exists(p) and is_glob(p) and "://" not in p:  # URIs (signed ?query=) are not globs
            for m in sorted(globmod.glob(p, recursive=True), key=natural_key):
                if os.path.isdir(m) and not is_keras_dir(m):
                    for c in _by_content(m, strict):
                        add(c)
                elif os.path.isfile(m) and (v := classify(m, strict=strict)).outcome == "not_keras":  # as in a folder
                    add(Candidate(m, v.reason))
                else:
                    add(Candidate(m, explicit=True))
            continue
        if os.path.isdir(p) and not is_keras_dir(p):
            for c in _by_content(p, strict):
                add(c)
        elif named_verdicts and os.path.isfile(p) and (v := classify(p, strict=strict)).outcome == "not_keras":
            add(Candidate(p, v.reason))
        else:
            add(Candidate(p, explicit=True))
    return out


def checkpoints_in(c: Candidate) -> list[Candidate]:
    """A TensorFlow state-file folder's checkpoints, oldest first, each named by its
    ``.index`` (:func:`ckptscan.formats.tfstate.listed_checkpoints`: stale or foreign
    paths fall back to the index files present; a listed checkpoint that is gone is a
    skipped candidate saying so); any other candidate unchanged."""
    from .formats.tf import locate
    from .formats.tfstate import listed_checkpoints

    if c.skip_reason is not None or not os.path.isdir(c.path):
        return [c]
    try:
        if locate(c.path)[2] != "tf-checkpoint-folder":
            return [c]
    except CkptscanError:
        return [c]  # scanned as named: the reader says why it cannot be read
    return [Candidate(x.prefix + ".index", x.missing, c.explicit and x.missing is None)
            for x in listed_checkpoints(c.path)] or [c]


def _by_content(root: str, strict: bool = False) -> Iterator[Candidate]:
    from .formats.verdict import classify

    found: list[tuple[str, str | None]] = []
    shards: dict[str, str] = {}
    for dirpath, keras_dirs, filenames in walk(root):
        found += [(d, dir_skip_reason(d)) for d in keras_dirs]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not os.path.exists(full):
                continue
            try:
                verdict = classify(full, strict=strict)
            except Exception:  # pragma: no cover - defensive: scanned, so the reader says why
                found.append((full, None))
                continue
            if verdict.outcome == "not_keras":
                found.append((full, verdict.reason))
                continue
            if verdict.format == DATA_SHARD:
                found.append((full, "data shard of a TensorFlow checkpoint (scanned through its .index)"))
                continue
            found.append((full, None))  # keras, or unreadable: the reader reports it (exit 2)
            if verdict.format == "keras3-sharded" or name.lower().endswith(".weights.json"):
                for shard in shards_of(full):
                    shards[os.path.normpath(shard)] = full
    for path, reason in found:
        owner = shards.get(os.path.normpath(path))
        if owner and reason is None:
            reason = f"shard of {owner} (scanned through its index)"
        yield Candidate(path, reason)


# --- fix: by name ------------------------------------------------------------------------


def expand(paths) -> list[str]:
    """Files and folders → checkpoints (folders searched by name; shards of an index skipped).

    URIs pass through unchanged (a remote object is repaired into a copy, never walked).
    """
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isdir(p) or is_keras_dir(p):
            out.append(p)
            continue
        for dirpath, keras_dirs, files in walk(p):
            out += keras_dirs
            shards = {os.path.basename(s) for f in files if f.endswith(".json")
                      for s in shards_of(os.path.join(dirpath, f))}
            out += [os.path.join(dirpath, f) for f in files if f not in shards and f.endswith(CANDIDATE_SUFFIXES)]
    return out


# --- URIs ----------------------------------------------------------------------------------


def expand_uris(paths) -> list[str]:
    """Expand URI globs (``s3://b/run/epoch_*.keras``) and URI folders into checkpoint URIs.

    Local paths, ``file://`` and ``http(s)://`` URIs (no listing) pass through
    unchanged, as does a URI that cannot be listed (opening it reports the error).
    A folder holding ``config.json`` is an unzipped ``.keras`` and stays one entry;
    in other folders, files named ``*.keras``, ``*.h5``, ``*.hdf5``, ``*.weights.json`` and
    ``*.index`` are kept, except the shards an index in the same folder lists; a SavedModel
    folder and a folder with a TensorFlow ``checkpoint`` state file are one entry each.
    """
    from .formats.remote import FetchStats, RemoteSource, filesystem, is_uri
    from .formats.tfremote import checkpoint_units

    out: list[str] = []
    for raw in paths:
        p = os.fspath(raw)
        if not is_uri(p) or p.startswith(("file://", "http://", "https://")):
            out.append(p)
            continue
        try:
            fs, path = filesystem(p)
            if is_glob(path):
                found = sorted(fs.glob(path))
                out += [_unstrip(p, f) for f in found if fs.isfile(f)] or [p]
                continue
            info = fs.info(path)
            if info.get("type") != "directory" or fs.isfile(posixpath.join(path, "config.json")):
                out.append(p)
                continue
            listed = [str(f) for f in fs.find(path)]
            files = checkpoint_units(sorted(f for f in listed if f.endswith(CANDIDATE_SUFFIXES)), listed)
            shards: set[str] = set()
            for idx in (f for f in files if f.endswith(".weights.json")):
                src = RemoteSource(fs, idx, _unstrip(p, idx), FetchStats())
                try:
                    names = shard_names(src, index_doc(src))
                except CkptscanError:
                    continue
                shards.update(posixpath.join(posixpath.dirname(idx), n) for n in names)
            out += [_unstrip(p, f) for f in files if f not in shards] or [p]
        except Exception:  # noqa: BLE001 - leave it to the open to report
            out.append(p)
    return out


def _unstrip(original: str, path: str) -> str:
    proto = original.split("://", 1)[0]
    return f"{proto}://{path}" if "://" not in path else path


def with_uris(paths: list[str]) -> list[str]:
    """``paths`` with URI globs and folders expanded (:func:`expand_uris`), else unchanged."""
    return expand_uris(paths) if any("://" in p for p in paths) else paths


def resolve_mlflow(uri: str, workdir: str | None = None):
    """The checkpoints behind one MLflow URI and the download folder to remove after
    (:func:`ckptscan.mlflow_store.resolve`, with remote folders listed by :func:`expand_uris`)."""
    from .mlflow_store import resolve

    return resolve(uri, workdir, expand_uris=expand_uris)


@contextlib.contextmanager
def mlflow_paths(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[list[str], dict[str, str]]]:
    """``(paths, labels)``: ``paths`` with each MLflow URI (``models:/``, ``runs:/``, through
    ``MLFLOW_TRACKING_URI``) replaced by the checkpoints it resolves to, and ``{path: label}``
    for those (:func:`ckptscan.mlflow_store.relabel` puts the labels in a report).

    Checkpoints downloaded from an ``mlflow-artifacts:`` proxy are removed on exit. A URI
    that cannot be resolved raises :class:`ckptscan.mlflow_store.MlflowError` on entry.
    """
    from .mlflow_store import cleanup, expand, is_mlflow_uri

    paths = [os.fspath(p) for p in paths]
    if not any(is_mlflow_uri(p) for p in paths):
        yield paths, {}
        return
    paths, labels, folders = expand(paths, expand_uris=expand_uris)
    try:
        yield paths, labels
    finally:
        for f in folders:
            cleanup(f)
