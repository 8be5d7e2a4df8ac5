"""Reading Keras weight archives: the single entry point :func:`open_checkpoint`.

One opener per layout (:mod:`.layouts`) reads through a small source interface
(:mod:`.source`): a local file or folder, or an object behind a URI read by ranged
requests (:mod:`.remote`, optional extra ``ckptscan[remote]``). Readers never write:
a journal left by an interrupted ``ckptscan fix`` is rolled back only by a writer
(``ckptscan fix``, ``ckptscan recover``). Errors are translated at this boundary
(:mod:`._errors`).

The format ids are listed in :mod:`.layouts`.
"""

from __future__ import annotations

import os

from .base import Checkpoint, LayerInfo, Variable
from .source import LocalSource, Source

__all__ = [
    "Checkpoint", "LayerInfo", "Variable", "detect", "journal_unit", "load_config", "open_checkpoint", "open_remote",
]

WEIGHTS_MEMBER = "model.weights.h5"


def source_of(path: str | os.PathLike, storage_options: dict | None = None, block_size: int | None = None) -> Source:
    """The :class:`~.source.Source` of a local path, a ``file://`` URI or a remote URI."""
    from .remote import is_uri

    s = os.fspath(path)
    if not is_uri(s):
        return LocalSource(path)
    if s.startswith("file://"):
        return LocalSource(s[len("file://"):])
    from .remote import remote_source

    return remote_source(s, storage_options, block_size)


def detect(path: str | os.PathLike) -> str:
    """The format id of a local ``path``, from its content. Raises a CkptscanError if none."""
    from .layouts import detect as detect_source

    return detect_source(LocalSource(path))


def journal_unit(path: str | os.PathLike) -> str:
    """The name a fix of ``path`` locks, journals and recovers under (and JRN001 looks at):
    ``path`` itself, except a local TensorFlow checkpoint, which is one unit under its
    ``.index`` whatever name it is given (the index, its prefix, its folder, a SavedModel)."""
    from .remote import is_uri

    s = os.fspath(path)
    if is_uri(s):
        return s
    from .tf import journal_unit as tf_unit

    return tf_unit(s) or s


def load_config(path: str | os.PathLike) -> dict:
    """Read a model ``config.json`` (for ``--config``)."""
    from .layouts import load_config as load

    return load(LocalSource(path))


def open_checkpoint(path: str | os.PathLike, config: str | os.PathLike | dict | None = None, *,
                    storage_options: dict | None = None, block_size: int | None = None,
                    screen_ahead: bool = False) -> Checkpoint:
    """Open any supported Keras weight archive for reading: a local path, a ``file://``
    URI or a remote URI (``s3://``, ``https://``…, through fsspec).

    ``config`` (a ``config.json`` path or dict) names the variables of a bare
    ``.weights.h5`` or sharded set; archives that carry their own config ignore it.
    ``storage_options`` and ``block_size`` go to the remote backend. ``screen_ahead``:
    the caller will screen every float tensor (``Checkpoint.screen``); a local TensorFlow
    checkpoint then starts that pass while it names its variables (:class:`~.tf.TFCheckpoint`).
    Raises :class:`~ckptscan.errors.CkptscanError` subclasses for unreadable input.
    """
    from ..runtime.memory import memory_recover
    from .layouts import open_source

    memory_recover()  # the previous file hit --max-memory: re-arm the cap now that it is closed
    src = source_of(path, storage_options, block_size)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    try:
        return src.finish(open_source(src, cfg, screen_ahead))
    except BaseException:
        src.release()
        raise


def open_remote(uri: str, config: str | os.PathLike | dict | None = None,
                storage_options: dict | None = None, block_size: int | None = None) -> Checkpoint:
    """:func:`open_checkpoint` for a URI; the checkpoint's ``remote_stats``
    (:class:`~.remote.FetchStats`) counts what was fetched."""
    return open_checkpoint(uri, config, storage_options=storage_options, block_size=block_size)
